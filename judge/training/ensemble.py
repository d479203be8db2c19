"""Combining students on the out-of-fold predictions selection already made: no member is retrained.

Every member predicted each row it covers from a model that never saw that row's prompt group, so
a combiner fitted on those predictions learns how far to trust each member on unseen prompts. Two
combiners compete like any other candidate:

- **stack**: logistic regression on the members' log-probabilities (a per-member temperature and
  weighting per class);
- **blend**: a weighted average of the members' probabilities, the weights from a 0.1 grid on the
  simplex (one number for two members: it cannot overfit the way a stacker can on a few hundred rows).

Their own agreement is estimated honestly by a second, inner grouped cross-validation over the
rows every member covers: each inner fold's combiner is fitted on the other inner folds only.
"""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.linear_model import LogisticRegression

from judge.backends.ensemble import stack_features
from judge.backends.lexical import aligned_log_proba
from judge.metrics import top_labels
from judge.records import Record
from judge.splits import grouped_folds
from judge.training.lexical import kappa

INNER_FOLDS = 5
BLEND_STEP = 0.1


def weight_grid(members: int, step: float = BLEND_STEP) -> list[tuple[float, ...]]:
    """Every weight vector on the simplex with entries in multiples of `step`."""
    n = round(1 / step)
    return [tuple(c / n for c in combo) for combo in itertools.product(range(n + 1), repeat=members) if sum(combo) == n]


class Stack:
    name = "stack"

    def fit(self, member_probs: list[np.ndarray], labels: list[str], classes, seed: int = 0) -> LogisticRegression:
        return LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(stack_features(member_probs), labels)

    def predict_proba(self, fitted: LogisticRegression, member_probs: list[np.ndarray], classes) -> np.ndarray:
        # what the shipped EnsembleJudge computes from the same combiner
        return np.exp(aligned_log_proba(fitted, stack_features(member_probs), classes))


class Blend:
    name = "blend"

    def fit(self, member_probs: list[np.ndarray], labels: list[str], classes, seed: int = 0) -> tuple[float, ...]:
        """The weights with the best kappa on these rows (ties: the most even weights, then grid order)."""
        def score(w):
            return kappa(labels, top_labels(self.predict_proba(w, member_probs, classes), classes), classes)
        return max(weight_grid(len(member_probs)), key=lambda w: (score(w), -max(w)))

    def predict_proba(self, weights, member_probs: list[np.ndarray], classes) -> np.ndarray:
        return sum(w * p for w, p in zip(weights, member_probs))


def cross_fitted(combiner, member_probs: list[np.ndarray], records: list[Record], classes, seed: int = 0):
    """(out-of-fold probabilities of the combiner over `records`, the combiner fitted on all of them, the
    number of inner folds: INNER_FOLDS, or fewer where the rows' prompt groups or classes allow fewer).

    `member_probs` are the members' out-of-fold probabilities on these records.
    """
    labels = [r.label for r in records]
    folds = grouped_folds(records, INNER_FOLDS, seed + 7)
    probs = np.zeros((len(records), len(classes)))
    for fold in range(folds.k):
        fit, held = folds.fit_rows(fold), folds.held(fold)
        fitted = combiner.fit([p[fit] for p in member_probs], [labels[i] for i in fit], classes, seed)
        probs[held] = combiner.predict_proba(fitted, [p[held] for p in member_probs], classes)
    return probs, combiner.fit(member_probs, labels, classes, seed), folds.k
