"""Probe students: a frozen backbone's mean-pooled hidden states at one layer, read by a logistic regression.

No weight of the backbone moves, so its features are computed once per row: cross-validation,
refit and any number of settings then cost seconds (judge/training/probe.py). Middle layers of a
decoder LM carry more of what a safety label needs than its last (SmolLM2-135M, frozen: out-of-fold
kappa 0.852 on GPTFuzz at half depth, about TF-IDF's, where a fine-tuned MiniLM reached 0.765).
Training and scoring load the backbone to the same depth and pool the same way (`Encoder`), so a
row gets the same features in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel
from transformers.utils import logging as hf_logging

from judge.backbones import BackboneRef
from judge.backends.lexical import MODEL_FILE, aligned_log_proba, load_estimator
from judge.backends.transformer import (CPU_BATCH_SIZE, TransformerJudge, artifact_backbone, default_device, encode,
                                        inference_dtype, load_tokenizer, offline_hint)
from judge.errors import InputError
from judge.model import Judge, length_sorted_batches
from judge.records import Record

DEPTHS = (1 / 3, 1 / 2, 2 / 3)  # the layers searched, as fractions of the backbone's depth


def backbone_layers(ref: BackboneRef) -> int:
    try:
        return int(AutoConfig.from_pretrained(ref.path).num_hidden_layers)
    except OSError as exc:
        raise offline_hint(ref, exc) from None


def searched_layers(n_layers: int) -> list[int]:
    """Hidden-state indices at DEPTHS of an `n_layers` backbone (0 is the embeddings; at least layer 1).

    >>> searched_layers(30), searched_layers(6), searched_layers(2)
    ([10, 15, 20], [2, 3, 4], [1])
    """
    return sorted({max(1, round(d * n_layers)) for d in DEPTHS})


class Encoder:
    """The backbone cut after layer `depth` (the deeper layers never run), pooling hidden states `layers`."""

    def __init__(self, ref: BackboneRef, depth: int, layers: Sequence[int], max_length: int, *,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        self.device = device or default_device()
        self.dtype = dtype or inference_dtype(self.device)
        self.layers, self.max_length = list(layers), max_length
        if max(self.layers) > depth:
            raise InputError(f"probe layer {max(self.layers)} is deeper than the {depth} layers loaded")
        self.tokenizer = load_tokenizer(ref)
        # num_hidden_layers=depth: only the first `depth` layers are built and loaded. transformers reports the
        # deeper layers' weights as unexpected, in a table per load: quieted, and the one real problem (a weight
        # the cut model lacks, left at random init) checked here instead
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model, info = AutoModel.from_pretrained(ref.path, num_hidden_layers=depth, dtype=self.dtype,
                                                    output_loading_info=True)
        except OSError as exc:
            raise offline_hint(ref, exc) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        if info["missing_keys"]:
            raise InputError(f"backbone {ref.name!r} lacks weights its encoder needs: {sorted(info['missing_keys'])[:3]}")
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def features(self, records: Sequence[Record], view: str, *, batch_size: int = CPU_BATCH_SIZE) -> dict[int, np.ndarray]:
        """{layer: (n, hidden) float32}: the mean over each row's real tokens, batched by length."""
        out = {layer: np.zeros((len(records), self.model.config.hidden_size), np.float32) for layer in self.layers}
        for chunk in length_sorted_batches(records, batch_size):
            batch = encode(self.tokenizer, [records[i] for i in chunk], view, self.max_length).to(self.device)
            hidden = self.model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).float()
            for layer in self.layers:
                pooled = (hidden[layer].float() * mask).sum(1) / mask.sum(1)
                out[layer][chunk] = pooled.cpu().numpy()
        return out


class ProbeJudge(Judge):
    """Scores with the backbone it was trained on (the artifact records its folder and name), on CUDA when
    there is one, in bf16 where that runs natively; `device` and `dtype` override, as for a transformer judge."""

    meta_keys = ("probe", "backbone", "max_length")

    def __init__(self, path, meta, *, device: str | None = None, dtype: str | torch.dtype | None = None):
        super().__init__(path, meta)
        probe = meta["probe"]
        self.encoder = Encoder(artifact_backbone(meta["backbone"]), probe["depth"], [probe["layer"]], meta["max_length"],
                               device=torch.device(device) if device else None,
                               dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        self.batch_size = self.default_batch_size(meta, self.encoder.device.type)
        self.classifier = load_estimator(Path(path) / meta.get("model_file", MODEL_FILE))

    @classmethod
    def default_batch_size(cls, meta: dict, device_type: str) -> int:
        return TransformerJudge.default_batch_size(meta, device_type)

    def _logits_batch(self, records: Sequence[Record]) -> np.ndarray:
        layer = self.meta["probe"]["layer"]
        features = self.encoder.features(records, self.view, batch_size=len(records))[layer]
        return aligned_log_proba(self.classifier, features, self.classes_)
