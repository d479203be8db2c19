"""Transformer students: a backbone with a sequence-classification head and a LoRA adapter.

Training (judge/training/transformer.py) and scoring share `load_classifier` and `encode`, so the model
sees exactly the same input in both. An artifact holds either the adapter (``adapter/``, applied to
the backbone at load time) or a merged model (``model/``, no backbone needed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

from judge.backbones import BackboneRef, local_backbone, resolve_backbone
from judge.errors import InputError
from judge.model import Judge, reading_artifact
from judge.records import Record
from judge.views import render

# Heads stay in full precision when the body is quantized (BERT's classifier and pooler, LMs' score).
HEAD_MODULES = ["classifier", "score", "bert.pooler.dense", "pooler.dense"]
# What loading a damaged artifact folder raises: a JSON file cut short or gone (OSError, ValueError), a weights
# file cut short (SafetensorError)
PART_DAMAGE = (OSError, ValueError, SafetensorError)


def quantization_config(quant: str) -> BitsAndBytesConfig | None:
    """qlora's recipe: NF4, double quantization, bf16 compute on CUDA (fp32 on a CPU, where bitsandbytes
    computes in fp32)."""
    if quant == "none":
        return None
    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=HEAD_MODULES)
    if quant != "4bit":
        raise InputError(f"quant must be 4bit, 8bit or none, got {quant!r}")
    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=HEAD_MODULES)


def offline_hint(ref: BackboneRef, exc: Exception) -> InputError:
    return InputError(f"cannot load backbone {ref.name!r} from {ref.path}: {exc}\n(hub backbones need a network "
                      "the first time; offline, pass a model folder or a .gguf file)")


def parameter_count(ref: BackboneRef) -> int:
    """The backbone's parameters, from its config alone: the model is built on the meta device, no weights."""
    try:
        config = AutoConfig.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    except OSError as exc:
        raise offline_hint(ref, exc) from None
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return sum(p.numel() for p in model.parameters())


def load_tokenizer(ref: BackboneRef):
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    except OSError as exc:
        raise offline_hint(ref, exc) from None
    if tokenizer.pad_token is None:  # decoder LMs: pad with EOS, the classifier reads the last real token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(ref: BackboneRef, num_labels: int, *, quantization_config=None, dtype=torch.float32,
                    pad_token_id: int | None = None):
    """The backbone with a fresh `num_labels`-way head (random init: the adapter carries the trained one).

    Decoder LMs pool the last non-pad token, so the model must know the pad id the tokenizer uses.
    """
    # bitsandbytes places weights at load time: one GPU per process (LOCAL_RANK under `accelerate launch`)
    cuda_quant = quantization_config is not None and torch.cuda.is_available()
    device_map = {"": int(os.environ.get("LOCAL_RANK", 0))} if cuda_quant else None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            ref.path, gguf_file=ref.gguf_file, num_labels=num_labels, dtype=dtype,
            quantization_config=quantization_config, device_map=device_map)
    except OSError as exc:
        raise offline_hint(ref, exc) from None
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    elif model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(ref).pad_token_id
    return model


def encode(tokenizer, records: Sequence[Record], view: str, max_length: int, *, padding: bool | str = True,
           return_tensors: str | None = "pt"):
    """Tokenize (context, response) pairs, truncating both from the end so the response's start survives.

    A record with no context (no question, no scenario in its view) is the response alone, whatever
    its batch-mates: a record's tokens, and so its label, never depend on the batch it lands in.
    """
    pairs = [render(r, view) for r in records]
    filler = empty_text_filler(tokenizer)
    if filler:
        pairs = [(context, response if context or response else filler) for context, response in pairs]
    alone = [i for i, (context, _) in enumerate(pairs) if not context]
    if len(alone) == len(pairs):
        return tokenizer([resp for _, resp in pairs], truncation=True, max_length=max_length, padding=padding,
                         return_tensors=return_tensors)
    if not alone:
        return tokenizer([c for c, _ in pairs], [resp for _, resp in pairs], truncation="longest_first",
                         max_length=max_length, padding=padding, return_tensors=return_tensors)
    paired = [i for i, (context, _) in enumerate(pairs) if context]
    singles = tokenizer([pairs[i][1] for i in alone], truncation=True, max_length=max_length)
    doubles = tokenizer([pairs[i][0] for i in paired], [pairs[i][1] for i in paired], truncation="longest_first",
                        max_length=max_length)
    features: list[dict] = [{}] * len(pairs)
    for encoded, rows in ((singles, alone), (doubles, paired)):
        for j, i in enumerate(rows):
            features[i] = {key: encoded[key][j] for key in encoded}
    if padding is False and return_tensors is None:
        return {key: [f[key] for f in features] for key in features[0]}
    return tokenizer.pad(features, padding=padding, return_tensors=return_tensors)


def empty_text_filler(tokenizer) -> str | None:
    """What an empty row is read as, where the tokenizer makes no tokens of "" (a decoder's, unlike BERT's
    [CLS] [SEP]): its end-of-text token, so the row is the model ending at once, not a mean over no tokens."""
    if tokenizer("")["input_ids"]:
        return None
    return tokenizer.eos_token or tokenizer.unk_token


def token_lengths(tokenizer, records: Sequence[Record], view: str, max_length: int) -> list[int]:
    """Each record's token count, cut at `max_length` as `encode` cuts it."""
    return [len(ids) for ids in encode(tokenizer, records, view, max_length, padding=False,
                                       return_tensors=None)["input_ids"]]


def count_truncated(tokenizer, records: Sequence[Record], view: str, max_length: int) -> int:
    """How many records do not fit in `max_length` tokens (the report says so)."""
    return sum(n > max_length for n in token_lengths(tokenizer, records, view, max_length=10**6))


def artifact_backbone(backbone: dict) -> BackboneRef:
    """The backbone an artifact was trained on: its recorded folder if still there, else resolved again by name."""
    path = Path(backbone["path"])
    if path.is_dir() and (path / "config.json").is_file():
        return BackboneRef(backbone["name"], str(path))
    return local_backbone(resolve_backbone(backbone["name"]))


CPU_BATCH_SIZE = 32  # 16 to 128 could not be told apart on the shared 2-core machine (docs/speed.md)
CUDA_TOKENS_PER_BATCH = 32768  # ~1 GB of bf16 activations for a 1.5B model's widest layer: fits any 16 GB GPU


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively here: a CUDA GPU that has it, or a CPU with AVX512-BF16 or AMX. Elsewhere
    oneDNN emulates bf16, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with a fallback
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def inference_dtype(device: torch.device) -> torch.dtype:
    """bf16 where it runs natively; fp16 on older GPUs; fp32 on other CPUs. On this AMD EPYC (AVX512-BF16)
    bf16 scored trained MiniLM judges 2.6-2.9x faster with the same labels (bench/score_speed.py)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16 if native_bf16(device) else torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TransformerJudge(Judge):
    """Scores on CUDA when there is one (a QLoRA adapter on its 4-bit base), else on the CPU; in bf16 where it
    runs natively (`inference_dtype`).

    An unquantized adapter is merged into the backbone's weights at load (the adapter stays on disk):
    scoring then runs the plain model, without LoRA's extra matmuls on every layer.
    `device` and `dtype` (e.g. "cpu", "float32") override the defaults, as benchmarks comparing them do.
    """

    meta_keys = ("max_length", "backbone")

    def __init__(self, path, meta, *, device: str | None = None, dtype: str | torch.dtype | None = None):
        from peft import PeftModel

        super().__init__(path, meta)
        self.device = torch.device(device) if device else default_device()
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype or inference_dtype(self.device)
        self.max_length = int(meta["max_length"])
        self.batch_size = self.default_batch_size(meta, self.device.type)
        with reading_artifact(Path(path) / "tokenizer", "cannot load the tokenizer", PART_DAMAGE):
            self.tokenizer = AutoTokenizer.from_pretrained(Path(path) / "tokenizer")
        if (Path(path) / "model").is_dir():  # merged export or full fine-tune
            with reading_artifact(Path(path) / "model", "cannot load the model", PART_DAMAGE):
                model = AutoModelForSequenceClassification.from_pretrained(Path(path) / "model", dtype=self.dtype)
            self.model = model.to(self.device).eval()
            return
        quant = meta.get("training", {}).get("quant", "none") if self.device.type == "cuda" else "none"
        # merged in fp32 (then cast), so a bf16 judge rounds the merged weights once, not base and delta apart
        base = load_classifier(artifact_backbone(meta["backbone"]), len(self.classes_),
                               quantization_config=quantization_config(quant), pad_token_id=self.tokenizer.pad_token_id,
                               dtype=torch.float32 if quant == "none" else self.dtype)
        with reading_artifact(Path(path) / "adapter", "cannot load the LoRA adapter", PART_DAMAGE):
            model = PeftModel.from_pretrained(base, Path(path) / "adapter")
        if quant == "none":  # merging into 4-bit or 8-bit weights would round the adapter away
            model = model.merge_and_unload().to(self.device, self.dtype)
        self.model = model.eval()

    @classmethod
    def default_batch_size(cls, meta: dict, device_type: str) -> int:
        """A fixed token budget per batch on CUDA (so long inputs get smaller batches); a small batch on a CPU."""
        if device_type == "cuda":
            return max(8, min(512, CUDA_TOKENS_PER_BATCH // int(meta["max_length"])))
        return CPU_BATCH_SIZE

    @torch.inference_mode()
    def _logits_batch(self, records: Sequence[Record]) -> np.ndarray:
        batch = encode(self.tokenizer, records, self.view, self.max_length).to(self.device)
        return self.model(**batch).logits.float().cpu().numpy()
