"""Transformer students: a backbone with a sequence-classification head and a LoRA adapter.

Training (train/transformer.py) and scoring share `load_classifier` and `encode`, so the model
sees exactly the same input in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from judge.backbones import BackboneRef, resolve_backbone
from judge.model import Judge
from judge.records import Record
from judge.views import render


def load_tokenizer(ref: BackboneRef):
    tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    if tokenizer.pad_token is None:  # decoder LMs: pad with EOS, the classifier reads the last real token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(ref: BackboneRef, num_labels: int, *, quantization_config=None, dtype=torch.float32):
    """The backbone with a fresh `num_labels`-way head (random init: the adapter carries the trained one)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        ref.path, gguf_file=ref.gguf_file, num_labels=num_labels, dtype=dtype,
        quantization_config=quantization_config)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(ref).pad_token_id
    return model


def encode(tokenizer, records: Sequence[Record], view: str, max_length: int, *, padding: bool | str = True,
           return_tensors: str | None = "pt"):
    """Tokenize (context, response) pairs, truncating both from the end so the response's start survives."""
    pairs = [render(r, view) for r in records]
    contexts = [c for c, _ in pairs]
    responses = [resp for _, resp in pairs]
    if not any(contexts):
        return tokenizer(responses, truncation=True, max_length=max_length, padding=padding, return_tensors=return_tensors)
    return tokenizer(contexts, responses, truncation="longest_first", max_length=max_length, padding=padding,
                     return_tensors=return_tensors)


def count_truncated(tokenizer, records: Sequence[Record], view: str, max_length: int) -> int:
    """How many records do not fit in `max_length` tokens (the report says so)."""
    full = encode(tokenizer, records, view, max_length=10**6, padding=False, return_tensors=None)
    return sum(len(ids) > max_length for ids in full["input_ids"])


class TransformerJudge(Judge):
    def __init__(self, path, meta):
        from peft import PeftModel

        super().__init__(path, meta)
        self.batch_size = 16
        ref = resolve_backbone(meta["backbone"]["name"])
        self.max_length = int(meta["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(Path(path) / "tokenizer")
        base = load_classifier(ref, len(self.classes_))
        self.model = PeftModel.from_pretrained(base, Path(path) / "adapter").eval()

    @torch.inference_mode()
    def _logits_batch(self, records: Sequence[Record]) -> np.ndarray:
        batch = encode(self.tokenizer, records, self.view, self.max_length)
        return self.model(**batch).logits.float().numpy()
