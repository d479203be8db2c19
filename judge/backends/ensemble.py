"""Stacked students: member judges (each a full artifact in members/) and a combiner over their probabilities.

The combiner is a logistic regression on the members' log-probabilities, fitted on out-of-fold
predictions (judge/training/ensemble.py), so it learns how far to trust each member: a per-member
temperature and weighting, i.e. it combines calibrated probabilities. A blend (meta `weights`)
averages the members' probabilities with fixed weights instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from judge.backends.lexical import aligned_log_proba, load_estimator
from judge.model import Judge, floored_log
from judge.records import Record

COMBINER_FILE = "combiner.skops"


def stack_features(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """The combiner's input: every member's log-probabilities side by side, shape (n, members * classes)."""
    return np.hstack([floored_log(p) for p in member_probs])


class EnsembleJudge(Judge):
    batch_size = 256
    meta_keys = ("members",)

    def __init__(self, path, meta):
        super().__init__(path, meta)
        self.members = [Judge.load(Path(path) / m["path"]) for m in meta["members"]]
        self.weights = meta.get("weights")
        self.combiner = None if self.weights else load_estimator(Path(path) / meta.get("combiner_file", COMBINER_FILE))

    def _logits_batch(self, records: Sequence[Record]) -> np.ndarray:
        if self.weights:
            mixed = sum(w * m.predict_proba(records) for w, m in zip(self.weights, self.members))
            return floored_log(mixed)
        features = stack_features([m.predict_proba(records) for m in self.members])
        return aligned_log_proba(self.combiner, features, self.classes_)
