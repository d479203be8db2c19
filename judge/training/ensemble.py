"""Stacking: a combiner over member students, fitted only on predictions for rows the member never saw.

Each member is retrained on K-1 grouped folds of the training split and predicts the held-out
fold; the combiner (logistic regression on log-probabilities) learns from those out-of-fold rows
only. The members shipped in the artifact are the ones already trained on the whole training
split. `OutOfFold` keeps the fold of every row and the ids each fold model trained on, so the
no-leak rule can be checked, not just claimed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from judge.backends.ensemble import COMBINER_FILE, stack_features
from judge.backends.lexical import save_estimator
from judge.errors import InputError
from judge.records import Record
from judge.splits import Split


@dataclass
class OutOfFold:
    """Member probabilities for every training row, each from a model that did not train on that row."""

    probs: list[np.ndarray]  # one (n_train, n_classes) array per member
    fold_of: np.ndarray  # fold index of each training row
    trained_on: list[set[str]] = field(default_factory=list)  # record ids each fold's models were fitted on


def grouped_folds(records: list[Record], k: int, seed: int = 0) -> np.ndarray:
    """Fold index per record: whole prompt groups per fold, label-stratified."""
    groups = [r.prompt_group for r in records]
    if len(set(groups)) < k:
        raise InputError(f"only {len(set(groups))} prompt groups in train: too few for {k} folds")
    fold_of = np.zeros(len(records), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(records)), [r.label for r in records], groups)):
        fold_of[held] = fold
    return fold_of


def out_of_fold(members, split: Split, scheme, *, k: int, seed: int, work_dir: Path,
                progress: bool = False) -> OutOfFold:
    """Train every member on each K-1 folds of split.train (with split.val for its own early stopping)
    and predict the held-out fold. `members` are (candidate, config) pairs with fixed hyperparameters."""
    from judge.model import Judge
    from judge.training.portfolio import write_candidate

    fold_of = grouped_folds(split.train, k, seed)
    n = len(split.train)
    probs = [np.zeros((n, len(scheme.classes))) for _ in members]
    trained_on = []
    for fold in range(k):
        fit_rows = [r for r, f in zip(split.train, fold_of) if f != fold]
        held = np.flatnonzero(fold_of == fold)
        trained_on.append({r.id for r in fit_rows})
        for m, (candidate, config) in enumerate(members):
            fold_dir = work_dir / f"{candidate.name}-fold{fold}"
            write_candidate(candidate, Split(fit_rows, split.val, []), scheme, config, fold_dir, progress=progress)
            probs[m][held] = Judge.load(fold_dir).predict_proba([split.train[i] for i in held])
            shutil.rmtree(fold_dir, ignore_errors=True)
    return OutOfFold(probs, fold_of, trained_on)


def fit_combiner(oof: OutOfFold, labels: list[str], out_dir: Path, seed: int = 0) -> LogisticRegression:
    """Logistic regression on the stacked out-of-fold log-probabilities, saved with skops."""
    combiner = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(stack_features(oof.probs), labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_estimator(combiner, out_dir / COMBINER_FILE)
    return combiner
