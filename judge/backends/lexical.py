"""Lexical students: word and character n-gram TF-IDF with a linear model (scikit-learn).

The fitted pipeline is saved with skops, not pickle, and loaded back trusting only the types a
TF-IDF + logistic-regression pipeline is made of, so opening a shared artifact runs no code.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skops.io as sio

from judge.errors import InputError
from judge.model import FLOOR, REPAIR, Judge, reading_artifact
from judge.records import Record
from judge.views import render_text

MODEL_FILE = "model.skops"
# what skops raises for a file cut short (no zip directory), a damaged member (bad CRC) or another zip: not a skops file
SKOPS_DAMAGE = (zipfile.BadZipFile, KeyError, ValueError)


def save_estimator(estimator, path: str | Path) -> None:
    sio.dump(estimator, path)


def load_estimator(path: str | Path):
    """Load a skops file, refusing any type outside scikit-learn / numpy / scipy (no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing estimator file: {REPAIR}", path=path)
    with reading_artifact(path, "truncated or not a skops file", SKOPS_DAMAGE):
        untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if t.split(".")[0] not in ("sklearn", "numpy", "scipy", "builtins")]
    if foreign:
        raise InputError(f"estimator file holds types judge does not load: {foreign}", path=path)
    with reading_artifact(path, "truncated or not a skops file", SKOPS_DAMAGE):
        return sio.load(path, trusted=untrusted)


def aligned_log_proba(estimator, features, classes: Sequence[str]) -> np.ndarray:
    """log predict_proba with columns in `classes` order (a class unseen in training gets ~zero)."""
    proba = estimator.predict_proba(features)
    out = np.full((proba.shape[0], len(classes)), FLOOR)
    index = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(estimator.classes_):
        out[:, index[str(c)]] = np.maximum(proba[:, j], FLOOR)
    return np.log(out / out.sum(axis=1, keepdims=True))


class LexicalJudge(Judge):
    batch_size = 1024

    def __init__(self, path, meta):
        super().__init__(path, meta)
        self.pipeline = load_estimator(Path(path) / meta.get("model_file", MODEL_FILE))

    def _logits_batch(self, records: Sequence[Record]) -> np.ndarray:
        return aligned_log_proba(self.pipeline, [render_text(r, self.view) for r in records], self.classes_)
