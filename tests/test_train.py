"""Training stage: LoRA and real 4-bit QLoRA on tiny models, the soft-label loss, resume, config, export."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainerControl, TrainerState

from judge import Judge
from judge.backbones import local_backbone, resolve_backbone
from judge.backends.transformer import load_classifier, load_tokenizer, native_bf16, parameter_count
from judge.errors import InputError
from judge.model import write_meta
from judge.records import file_sha256, read_records
from judge.splits import split_by_group
from tests.tiny import make_tiny_llama, synthetic_rows, write_jsonl
from judge.training.config import TrainConfig
from judge.training import transformer as transformer_training
from judge.training.transformer import KappaOrLossStopping, distillation_loss, resolve_quant, train_transformer


def _dataset(tmp_path, n=40, seed=0):
    return read_records(write_jsonl(tmp_path / f"labels-{n}-{seed}.jsonl", synthetic_rows(n, seed=seed)))


def _split(dataset):
    return split_by_group(dataset.labelled, test_size=0.2, val_size=0.2, seed=0)


def _tiny_config(backbone, **overrides) -> TrainConfig:
    values = {"backbone": backbone, "student": "transformer", "epochs": 2, "lr": 1e-3, "max_length": 48,
              "batch_size": 8, "early_stopping_patience": 10, **overrides}
    return TrainConfig.resolve(overrides=values)


def _train_artifact(dataset, config, out, **kwargs) -> dict:
    """train_transformer plus the judge.json `Judge.load` needs (what distill writes for a transformer)."""
    training = train_transformer(_split(dataset), dataset.scheme, config, out, progress=False, **kwargs)
    write_meta(out, {"kind": "transformer", "scheme": dataset.scheme.to_dict(), "view": config.view,
                     "max_length": config.max_length, "backbone": training["backbone"], "training": training})
    return training


class _Logits:
    def __init__(self, logits):
        self.logits = torch.tensor(logits)


def test_soft_label_loss_is_kl_to_teacher_probabilities():
    loss = distillation_loss()
    teacher = torch.tensor([[0.7, 0.2, 0.1]])
    # by hand: log-softmax([1, 0, -1]) = [1, 0, -1] - log(e + 1 + 1/e); KL = sum p (log p - log q)
    log_z = math.log(math.e + 1 + 1 / math.e)
    expected = sum(p * (math.log(p) - (z - log_z)) for p, z in zip([0.7, 0.2, 0.1], [1, 0, -1]))
    assert expected == pytest.approx(0.0057874, abs=1e-6)
    assert loss(_Logits([[1.0, 0.0, -1.0]]), teacher).item() == pytest.approx(expected, abs=1e-6)
    # the Trainer counts soft label entries (n * k) across accumulated micro-batches
    two = loss(_Logits([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]),
               num_items_in_batch=torch.tensor(12))
    assert two.item() == pytest.approx(expected / 4, abs=1e-6)  # second row matches exactly: KL 0; 2 of 4 rows


def test_hard_label_loss_is_weighted_cross_entropy():
    weighted = distillation_loss(torch.tensor([1.0, 2.0, 3.0]))
    value = weighted(_Logits([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 2]), num_items_in_batch=2)
    # -log q0 for row 1 (weight 1) and -log(1/3) for row 2 (weight 3), over 2 items
    by_hand = (1 * (math.log(math.e + 1 + 1 / math.e) - 1) + 3 * math.log(3)) / 2
    assert value.item() == pytest.approx(by_hand, abs=1e-6)


def test_config_file_then_overrides_and_unknown_keys(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('backbone = "smollm2-135m"\nlr = 2e-4\nquant = "4bit"\nlora_r = 8\n')
    config = TrainConfig.resolve(toml, {"lr": "1e-4", "epochs": "2", "merge": "false", "seed": None})
    assert (config.backbone, config.lr, config.epochs, config.quant, config.lora_r) == ("smollm2-135m", 1e-4, 2.0, "4bit", 8)
    yaml = tmp_path / "train.yaml"
    yaml.write_text("lora_alpha: 64\ngroup_by_length: false\n")
    assert (TrainConfig.resolve(yaml).lora_alpha, TrainConfig.resolve(yaml).group_by_length) == (64, False)
    with pytest.raises(InputError, match="unknown config keys \\['lora_rank'\\]"):
        TrainConfig.resolve(overrides={"lora_rank": "8"})
    with pytest.raises(InputError, match="lora_r='eight': expected int"):
        TrainConfig.resolve(overrides={"lora_r": "eight"})
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1\n")
    with pytest.raises(InputError, match="cannot read config") as caught:
        TrainConfig.resolve(bad)
    assert caught.value.path == bad


def test_example_config_lists_every_hyperparameter():
    from pathlib import Path
    import tomllib

    example = tomllib.loads((Path(__file__).parents[1] / "train" / "defaults.toml").read_text())
    assert set(example) == set(TrainConfig().to_dict())
    assert TrainConfig.resolve(Path(__file__).parents[1] / "train" / "defaults.toml").to_dict() == example


def test_bert_lora_adapter_and_merged_export_predict_the_same(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path)
    _train_artifact(dataset, _tiny_config(tiny_bert), tmp_path / "adapter")
    _train_artifact(dataset, _tiny_config(tiny_bert, merge=True), tmp_path / "merged")
    assert (tmp_path / "adapter" / "adapter").is_dir() and not (tmp_path / "adapter" / "model").exists()
    assert (tmp_path / "merged" / "model").is_dir() and not (tmp_path / "merged" / "adapter").exists()

    adapter_config = json.loads((tmp_path / "adapter" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_CLS"
    targets = adapter_config["target_modules"]  # all-linear, resolved to module names
    assert any(t.endswith("query") for t in targets) and not any("classifier" in t for t in targets)
    saved = load_file(tmp_path / "adapter" / "adapter" / "adapter_model.safetensors")
    assert any("classifier" in key for key in saved)  # the head is trained and saved (modules_to_save)
    pooler = [key for key in saved if "pooler" in key]
    assert pooler and not any("lora" in key for key in pooler)  # BERT's pooler too, whole (no adapter on it)

    records = _dataset(tmp_path, n=24, seed=5).records
    a = Judge.load(tmp_path / "adapter").predict_proba(records)
    b = Judge.load(tmp_path / "merged").predict_proba(records)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert Judge.load(tmp_path / "merged").meta["training"]["export"] == "merged"


def test_training_prints_one_bar_with_loss_and_kappa_or_nothing(tiny_bert, tmp_path, capfd):
    """The Trainer's stock reporters print each log as a dict (to stdout when the bar is off): replaced."""
    dataset, config = _dataset(tmp_path), _tiny_config(tiny_bert)
    train_transformer(_split(dataset), dataset.scheme, config, tmp_path / "quiet", progress=False)
    quiet = capfd.readouterr()
    assert "loss" not in quiet.out + quiet.err
    train_transformer(_split(dataset), dataset.scheme, config, tmp_path / "shown", progress=True)
    shown = capfd.readouterr()
    assert "val_kappa=" in shown.err and "{'" not in shown.out + shown.err


def test_full_fine_tune_moves_every_weight_at_its_own_lr_and_exports_the_whole_model(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path)
    seen = _LearningRates()
    training = _train_artifact(dataset, _tiny_config(tiny_bert, finetune="full", full_lr=2e-3), tmp_path / "full",
                               callbacks=[seen])
    assert training["finetune"] == training["export"] == "full"
    assert (tmp_path / "full" / "model").is_dir() and not (tmp_path / "full" / "adapter").exists()
    assert seen.trainable == seen.total and seen.max_lr == pytest.approx(2e-3, rel=0.05)
    native = native_bf16(torch.device("cpu"))  # auto: bf16 mixed precision where the CPU runs it natively
    assert training["precision"] == ("bf16" if native else "fp32") and seen.bf16 == native

    before = load_file(local_backbone(resolve_backbone(tiny_bert)).path + "/model.safetensors")
    after = load_file(tmp_path / "full" / "model" / "model.safetensors")
    key = next(k for k in before if k.endswith("attention.self.query.weight"))
    moved = next(after[k] for k in after if k.endswith(key))
    assert moved.shape == before[key].shape and not torch.equal(before[key], moved)  # the body moved, not only the head
    judge = Judge.load(tmp_path / "full")
    assert judge.predict_proba(dataset.records[:4]).shape == (4, 3)


def test_early_stopping_waits_while_the_loss_falls_at_kappa_zero():
    """A student stuck on the majority class (kappa 0) but still learning must not be stopped."""
    stopping = KappaOrLossStopping(patience=2)
    args = SimpleNamespace(metric_for_best_model="kappa", greater_is_better=True)
    state, stopped_after = TrainerState(best_metric=0.0), None
    for epoch, (kappa, loss) in enumerate([(0.0, 0.9), (0.0, 0.8), (0.0, 0.7), (0.0, 0.75), (0.0, 0.76)], 1):
        control = TrainerControl()
        stopping.on_evaluate(args, state, control, {"eval_kappa": kappa, "eval_loss": loss})
        if control.should_training_stop:
            stopped_after = epoch
            break
    assert stopped_after == 5  # epochs 1-3 improved the loss; 4 and 5 improved nothing


class _LearningRates(TrainerCallback):
    """Records how many parameters train and the peak learning rate the scheduler was given."""

    def on_train_begin(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.total = sum(p.numel() for p in model.parameters())
        self.max_lr = max(lr_scheduler.base_lrs)
        self.bf16 = args.bf16


@pytest.mark.parametrize("overrides, message", [
    ({"merge": True, "quant": "4bit"}, "merge=true needs an unquantized backbone"),
    ({"finetune": "full", "quant": "4bit"}, "finetune=full trains every weight"),
    ({"finetune": "half"}, "finetune must be lora or full"),
    ({"precision": "fp16"}, "precision must be auto, bf16 or fp32"),
])
def test_training_modes_a_quantized_backbone_cannot_take_are_refused(tiny_bert, tmp_path, overrides, message):
    split = _split(_dataset(tmp_path))
    with pytest.raises(InputError, match=message):
        train_transformer(split, _dataset(tmp_path).scheme, _tiny_config(tiny_bert, **overrides),
                          tmp_path / "run", progress=False)


class _Quantized(TrainerCallback):
    """Records which bitsandbytes layers the model trains through."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import bitsandbytes as bnb

        self.linear4bit = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


@pytest.mark.parametrize("cuda, threshold, expected", [(False, 0, "none"), (True, 10**9, "none"), (True, 0, "4bit")])
def test_auto_quant_is_qlora_only_on_cuda_and_only_for_a_backbone_big_enough_to_need_it(
        tiny_bert, tiny_llama, monkeypatch, cuda, threshold, expected):
    # the CUDA branch is the one CI cannot reach: only the device query is replaced, the models are real
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(transformer_training, "QLORA_MIN_PARAMETERS", threshold)
    for backbone in (tiny_bert, tiny_llama):
        ref = local_backbone(resolve_backbone(backbone))
        loaded = load_classifier(ref, 2, pad_token_id=load_tokenizer(ref).pad_token_id)  # the config's 2-way head
        assert parameter_count(ref) == sum(p.numel() for p in loaded.parameters())
        assert resolve_quant(_tiny_config(backbone)) == expected
        assert resolve_quant(_tiny_config(backbone, quant="8bit")) == "8bit"  # asked for is kept


def test_tiny_llama_trains_with_real_4bit_qlora_on_cpu(tmp_path):
    llama = make_tiny_llama(tmp_path / "llama")
    dataset = _dataset(tmp_path)
    seen = _Quantized()
    config = _tiny_config(str(llama), quant="4bit", gradient_checkpointing=True)  # qlora's recipe
    training = _train_artifact(dataset, config, tmp_path / "run", callbacks=[seen])
    assert training["quant"] == "4bit" and seen.linear4bit == 14  # 7 projections x 2 layers, all nf4
    assert training["precision"] == "fp32"  # bitsandbytes computes in fp32 on a CPU
    saved = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    lora_b = [t for k, t in saved.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # zero-initialised, so gradients flowed through 4-bit
    assert any("score" in k for k in saved)
    judge = Judge.load(tmp_path / "run")  # on a CPU: fp32 base + adapter
    test = _split(dataset).test
    predictions = judge.predict(test)
    assert len(predictions) == len(test) and all(p.label in dataset.scheme.classes for p in predictions)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-6 for p in predictions)
    assert judge.model.config.pad_token_id == judge.tokenizer.pad_token_id  # the adapter merged into the base


class _StopAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def test_resume_after_an_interrupt_gives_the_same_weights(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path)
    split = _split(dataset)
    config = _tiny_config(tiny_bert)
    train_transformer(split, dataset.scheme, config, tmp_path / "straight", progress=False)
    first = train_transformer(split, dataset.scheme, config, tmp_path / "resumed", progress=False,
                              callbacks=[_StopAfterFirstEpoch()])
    assert [h["epoch"] for h in first["val_history"]] == [1.0]
    second = train_transformer(split, dataset.scheme, config, tmp_path / "resumed", resume=True, progress=False)
    assert [h["epoch"] for h in second["val_history"]] == [1.0, 2.0]

    straight = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.allclose(straight[k], resumed[k]) for k in straight)
    with pytest.raises(InputError, match="no checkpoint"):
        train_transformer(split, dataset.scheme, config, tmp_path / "fresh", resume=True, progress=False)


def test_hub_presets_need_a_network():
    ref = resolve_backbone("qwen2.5-0.5b")
    assert ref.path == "Qwen/Qwen2.5-0.5B-Instruct" and ref.gguf_file is None
    with pytest.raises(InputError, match="hub backbones need a network"):
        load_tokenizer(ref)  # tests run with HF_HUB_OFFLINE=1


def test_a_rewritten_gguf_file_never_reuses_the_old_conversion(tmp_path, monkeypatch):
    """The file's digest is cached per process; a new size or mtime must rehash it."""
    monkeypatch.setenv("JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"

    def converted_folder_for(content: bytes, mtime_ns: int) -> str:
        gguf.write_bytes(content)
        os.utime(gguf, ns=(mtime_ns, mtime_ns))
        folder = tmp_path / "cache" / "backbones" / f"tiny-{file_sha256(gguf)[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text("{}")  # a finished conversion: nothing to convert
        return local_backbone(resolve_backbone(str(gguf))).path

    first = converted_folder_for(b"first", 1_000_000_000)
    assert converted_folder_for(b"first", 1_000_000_000) == first
    assert converted_folder_for(b"other", 2_000_000_000) != first  # same size, rewritten later
    assert converted_folder_for(b"first, longer", 1_000_000_000) != first  # same mtime, another size


@pytest.mark.slow
def test_smollm2_gguf_converts_once_trains_and_predicts(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    dataset = _dataset(tmp_path, n=24)
    config = _tiny_config("smollm2-135m", epochs=1, max_length=32, view="response")
    training = _train_artifact(dataset, config, tmp_path / "run")

    converted = list((tmp_path / "cache" / "backbones").iterdir())
    assert len(converted) == 1 and converted[0].name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert (converted[0] / "model.safetensors").is_file()
    assert local_backbone(resolve_backbone("smollm2-135m")).path == str(converted[0])  # cached: no second conversion
    assert training["backbone"]["path"] == str(converted[0].resolve())
    assert training["backbone"]["gguf_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")

    judge = Judge.load(tmp_path / "run")
    assert judge.tokenizer.pad_token == "<|im_end|>"  # decoder LM: pads with EOS
    predictions = judge.predict(dataset.records[:6])
    assert all(p.label in dataset.scheme.classes for p in predictions)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-6 for p in predictions)
