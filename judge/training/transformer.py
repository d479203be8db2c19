"""Fine-tune a transformer student with LoRA (or QLoRA) on teacher labels, with the HF Trainer.

The Trainer brings what a serious run needs without hand-written loops: gradient accumulation,
length-grouped batches, a checkpoint each epoch (``resume=True`` continues from the last), early
stopping on validation kappa, DDP under ``accelerate launch``. This module adds the parts specific
to distillation: the soft-label loss, the kappa metric and the artifact layout.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset as HFDataset
from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import (DataCollatorWithPadding, EarlyStoppingCallback, PrinterCallback, ProgressCallback, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)
from transformers.trainer_utils import get_last_checkpoint

from judge.backbones import local_backbone, resolve_backbone
from judge.backends.transformer import (count_truncated, encode, load_classifier, load_tokenizer, native_bf16,
                                        parameter_count, quantization_config)
from judge.errors import InputError
from judge.metrics import accuracy_from_confusion, kappa_from_confusion
from judge.records import Record
from judge.schemes import Scheme
from judge.splits import Split
from judge.training.config import TrainConfig

# Trained in full next to the adapter: the new head, and BERT's pooler. Sentence-embedding checkpoints
# (all-MiniLM) mean-pool and never trained theirs: its small weights (std 0.009) shrink the features
# the head sees to std ~0.04, and MiniLM LoRA stayed at the majority class for 4 epochs on XSTest.
TRAINED_WHOLE = ["classifier", "score", "pooler"]


def lora_config(config: TrainConfig) -> LoraConfig:
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.target_modules, modules_to_save=TRAINED_WHOLE)


# QLoRA saves memory that matters from about here: below, the bf16 weights take under 2 GB of any GPU.
QLORA_MIN_PARAMETERS = 1_000_000_000


@functools.cache
def backbone_parameters(backbone: str) -> int:
    """Counted once a process: resolve_quant runs for the portfolio, the speed probe, every fold and the refit."""
    return parameter_count(local_backbone(resolve_backbone(backbone)))


def resolve_quant(config: TrainConfig) -> str:
    """`auto` is QLoRA (4-bit) on CUDA for a backbone of 1B parameters or more, and no quantization below
    that or on a CPU (where 4-bit works but runs slowly). NF4 costs small models agreement: on XSTest's
    989 GPT-4 labels (5 grouped folds, out of fold) it took MiniLM's LoRA from kappa 0.645 to 0.602
    (paired -0.043 [-0.081, -0.009]; docs/benchmarks.md)."""
    if config.quant == "auto":
        if not torch.cuda.is_available():
            return "none"
        return "4bit" if backbone_parameters(config.backbone) >= QLORA_MIN_PARAMETERS else "none"
    if config.quant not in ("4bit", "8bit", "none"):
        raise InputError(f"quant must be auto, 4bit, 8bit or none, got {config.quant!r}")
    return config.quant


def resolve_precision(config: TrainConfig, quant: str) -> str:
    """bf16 (mixed precision: fp32 master weights, bf16 matmuls) or fp32. `auto` takes bf16 where it runs
    natively; on a CPU only unquantized, since bitsandbytes computes in fp32 there. On this AMD EPYC
    (AVX512-BF16) a MiniLM training step ran 1.6-1.8x faster in bf16."""
    if config.precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"precision must be auto, bf16 or fp32, got {config.precision!r}")
    if config.precision != "auto":
        return config.precision
    cuda = torch.cuda.is_available()
    native = native_bf16(torch.device("cuda" if cuda else "cpu"))
    return "bf16" if native and (cuda or quant == "none") else "fp32"


def resolve_finetune(config: TrainConfig, quant: str) -> str:
    """lora or full, refusing what a quantized backbone cannot train (every weight) or export (a merge)."""
    if config.finetune not in ("lora", "full"):
        raise InputError(f"finetune must be lora or full, got {config.finetune!r}")
    if config.finetune == "full" and quant != "none":
        raise InputError(f"finetune=full trains every weight, which a quantized backbone cannot (quant={quant}): "
                         "use --quant none, or finetune=lora for QLoRA")
    if config.merge and quant != "none":
        raise InputError(f"merge=true needs an unquantized backbone (quant=none), not quant={quant}: "
                         "keep the adapter, or train with --quant none")
    return config.finetune


def distillation_loss(class_weights: torch.Tensor | None = None):
    """Cross-entropy on hard labels, or KL(teacher || student) when labels are probability rows.

    The Trainer leaves normalisation to us: it passes `num_items_in_batch`, the count of label
    entries across the accumulated micro-batches (n for hard labels, n * k for soft rows).
    """

    def loss_fn(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        if labels.dtype.is_floating_point:
            log_q = F.log_softmax(logits, dim=-1)
            per_item = (labels * (torch.log(labels.clamp_min(1e-12)) - log_q)).sum(dim=-1)
            items = num_items_in_batch / labels.shape[-1] if num_items_in_batch is not None else None
        else:
            per_item = F.cross_entropy(logits, labels, weight=class_weights, reduction="none")
            items = num_items_in_batch
        if items is None:
            return per_item.mean()
        return per_item.sum() / items

    return loss_fn


def _targets(records: list[Record], scheme: Scheme, soft: bool) -> list:
    index = {c: i for i, c in enumerate(scheme.classes)}
    if soft:
        return [[float(r.label_probs.get(c, 0.0)) for c in scheme.classes] for r in records]
    return [index[r.label] for r in records]


def _to_hf(tokenizer, records: list[Record], scheme: Scheme, config: TrainConfig, soft: bool) -> HFDataset:
    enc = encode(tokenizer, records, config.view, config.max_length, padding=False, return_tensors=None)
    columns = {k: enc[k] for k in enc.keys()}
    columns["labels"] = _targets(records, scheme, soft)
    columns["length"] = [len(ids) for ids in enc["input_ids"]]
    return HFDataset.from_dict(columns)


class LossKappaBar(ProgressCallback):
    """The Trainer's progress bar with the latest training loss and validation kappa on it, where the stock
    bar prints every log as a dict between its redraws."""

    def __init__(self):
        super().__init__()
        self.shown: dict[str, str] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, name in (("loss", "loss"), ("eval_kappa", "val_kappa")):
            if key in (logs or {}):
                self.shown[name] = f"{float(logs[key]):.3f}"
        if self.training_bar is not None:
            self.training_bar.set_postfix(self.shown, refresh=False)


class KappaOrLossStopping(EarlyStoppingCallback):
    """Stops after `patience` evaluations in which neither validation kappa nor validation loss improved.

    On kappa alone, a student that still predicts the majority class (kappa 0 for the first epochs,
    as MiniLM LoRA does on XSTest) is stopped before it starts to learn; its falling loss shows it is.
    """

    def __init__(self, patience: int):
        super().__init__(early_stopping_patience=patience)
        self.best_loss = self.latest_loss = float("inf")

    def check_metric_value(self, args, state, control, metric_value):
        super().check_metric_value(args, state, control, metric_value)
        if self.latest_loss < self.best_loss:
            self.best_loss = self.latest_loss
            self.early_stopping_patience_counter = 0

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        self.latest_loss = metrics.get("eval_loss", float("inf"))
        super().on_evaluate(args, state, control, metrics, **kwargs)


def _kappa_metric(eval_pred) -> dict:
    logits, labels = eval_pred
    labels = np.asarray(labels)
    y_true = labels.argmax(axis=1) if labels.ndim == 2 else labels
    y_pred = np.asarray(logits).argmax(axis=1)
    k = logits.shape[1]
    cm = np.zeros((k, k))
    np.add.at(cm, (y_true.astype(int), y_pred), 1)
    kappa = kappa_from_confusion(cm)
    return {"kappa": -1.0 if np.isnan(kappa) else kappa, "accuracy": accuracy_from_confusion(cm)}


def train_transformer(split: Split, scheme: Scheme, config: TrainConfig, out_dir: Path, *,
                      resume: bool = False, progress: bool = True, callbacks: Sequence[TrainerCallback] = ()) -> dict:
    """Train on split.train, select on split.val, write adapter/ (model/ for finetune=full or merge) and tokenizer/.

    Returns what the artifact records about training: backbone, quantization, loss, truncation,
    the validation history and throughput. Extra `callbacks` go to the HF Trainer.
    """
    out_dir = Path(out_dir)
    quant = resolve_quant(config)
    finetune = resolve_finetune(config, quant)
    precision = resolve_precision(config, quant)
    source = resolve_backbone(config.backbone)
    ref = local_backbone(source)
    soft = config.loss == "soft" or (config.loss == "auto" and all(r.label_probs for r in split.train))
    if config.loss == "soft" and not all(r.label_probs for r in split.train):
        raise InputError("loss=soft needs label_probs on every training row")

    set_seed(config.seed)  # before the head and LoRA are initialised, not only before training
    tokenizer = load_tokenizer(ref)
    model = load_classifier(ref, len(scheme.classes), quantization_config=quantization_config(quant),
                            pad_token_id=tokenizer.pad_token_id)
    model.config.id2label = dict(enumerate(scheme.classes))
    model.config.label2id = {c: i for i, c in enumerate(scheme.classes)}
    if quant != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if finetune == "lora":
        model = get_peft_model(model, lora_config(config))

    train_ds = _to_hf(tokenizer, split.train, scheme, config, soft)
    val_ds = _to_hf(tokenizer, split.val, scheme, config, soft) if split.val else None
    weights = None
    if config.class_weights and not soft:
        counts = np.bincount(train_ds["labels"], minlength=len(scheme.classes)).astype(float)
        weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)

    cuda = torch.cuda.is_available()
    optim = config.optim if config.optim != "auto" else ("paged_adamw_8bit" if quant != "none" and cuda else "adamw_torch")
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.full_lr if finetune == "full" else config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        optim=optim,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy="epoch" if val_ds is not None else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=val_ds is not None,
        metric_for_best_model="kappa",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=10,
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not cuda,
        bf16=precision == "bf16",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    stopping = [KappaOrLossStopping(config.early_stopping_patience)] if val_ds is not None else []
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=_kappa_metric,
                      compute_loss_func=distillation_loss(weights), callbacks=[*stopping, *callbacks])
    # the Trainer's own reporter prints every log as a dict, to stdout when its bar is off: ours, or none
    trainer.remove_callback(ProgressCallback if progress else PrinterCallback)
    if progress:
        trainer.add_callback(LossKappaBar())
    checkpoint = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    if resume and checkpoint is None:
        raise InputError(f"resume=True: no checkpoint under {args.output_dir} to continue from")
    if not resume:  # a stale run's checkpoints must not mix with this one's
        shutil.rmtree(args.output_dir, ignore_errors=True)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started

    if trainer.is_world_process_zero():
        export(trainer.model, tokenizer, out_dir, whole=finetune == "full" or config.merge)
    trainer.accelerator.wait_for_everyone()  # under DDP, no rank reads the artifact before rank 0 has written it
    history = [{"epoch": h["epoch"], "val_kappa": h["eval_kappa"]} for h in trainer.state.log_history if "eval_kappa" in h]
    return {
        "backbone": {"name": config.backbone, "path": _absolute(ref.path),
                     "gguf_file": _absolute(Path(source.path) / source.gguf_file) if source.gguf_file else None},
        "max_length": config.max_length,
        "quant": quant,
        "finetune": finetune,
        "precision": precision,
        "export": "full" if finetune == "full" else "merged" if config.merge else "adapter",
        "loss": "soft-kl" if soft else "cross-entropy",
        "truncated_train": count_truncated(tokenizer, split.train, config.view, config.max_length),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "val_history": history,
        "epochs_run": round(trainer.state.epoch or 0.0, 2),
        "train_seconds": round(seconds, 1),
        "train_examples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
    }


def _absolute(path) -> str:
    """Local paths recorded absolute (the artifact is loaded from anywhere); hub ids as they are."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def export(model, tokenizer, out_dir: Path, *, whole: bool) -> None:
    """The adapter (a few MB; scoring applies it to the backbone), or the whole model (merged adapter or a
    full fine-tune; no backbone needed)."""
    shutil.rmtree(out_dir / ("adapter" if whole else "model"), ignore_errors=True)  # a stale other export would win
    if whole:
        (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model).save_pretrained(out_dir / "model")
    else:
        model.save_pretrained(out_dir / "adapter")
    tokenizer.save_pretrained(out_dir / "tokenizer")
