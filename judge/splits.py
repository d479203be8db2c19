"""Splits by prompt group, stratified by label, seeded: an optional held-out test split, and the
grouped K folds that selection and agreement estimation run on.

The same question answered by several models must not straddle a fit and its evaluation:
otherwise the student is graded on prompts it has already seen and the agreement it reports is
inflated.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from judge.errors import InputError
from judge.records import Record, sources_of


@dataclass
class Split:
    train: list[Record]
    val: list[Record]
    test: list[Record]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _carve(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out whole prompt groups, `fraction` of the rows as closely as the groups allow, label-stratified.

    Greedy: the group that brings the held-out rows, per class and in all, closest to `fraction` of them
    per row it adds is taken next (ties in a seeded random order), while one still brings them closer and
    leaves every class rows to fit on. (StratifiedGroupKFold's first of round(1 / fraction) folds held out
    1/K instead: on 196 rows 0.15 gave 12%, and 0.4 to 0.9 all gave half.)
    """
    if fraction <= 0 or not records:
        return records, []
    classes = {label: c for c, label in enumerate(dict.fromkeys(r.label for r in records))}
    members: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        members.setdefault(r.prompt_group, []).append(i)
    keys = list(members)
    groups = [members[keys[g]] for g in np.random.default_rng(seed).permutation(len(keys))]
    counts = np.zeros((len(groups), len(classes)))
    for g, rows in enumerate(groups):
        for i in rows:
            counts[g, classes[records[i].label]] += 1
    total = counts.sum(axis=0)
    target = fraction * total

    def distance(held: np.ndarray) -> np.ndarray:
        return np.abs(held - target).sum(axis=-1) + np.abs(held.sum(axis=-1) - target.sum())

    held, left = np.zeros(len(classes)), np.ones(len(groups), dtype=bool)
    while True:
        after = held + counts
        gain = (distance(held) - distance(after)) / counts.sum(axis=1)
        open_ = left & (after < total).all(axis=1) & (gain > 1e-9)
        if not open_.any():
            break
        best = np.flatnonzero(open_)[np.argmax(gain[open_])]
        held, left[best] = after[best], False
    out = {i for g in np.flatnonzero(~left) for i in groups[g]}
    return [r for i, r in enumerate(records) if i not in out], [r for i, r in enumerate(records) if i in out]


def split_by_group(records: list[Record], *, test_size: float = 0.2, val_size: float = 0.1,
                   seed: int = 0) -> Split:
    """Split labelled records into train / val / test with no prompt group in two parts.

    `val_size` is a fraction of all records, taken from what is left after the test split.
    """
    rest, test = _carve(list(records), test_size, seed)
    val_fraction = val_size * len(records) / len(rest) if rest else 0.0
    train, val = _carve(rest, val_fraction, seed + 1)
    return Split(train=train, val=val, test=test)


def early_stopping_split(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(fit, val) for a transformer's early stopping inside one fold; no val where no whole group fits."""
    return _carve(list(records), fraction, seed)


@dataclass
class Folds:
    """Grouped K folds over the rows a design fits on: `fold_of[i]` is the fold row i is held out in."""

    fold_of: np.ndarray
    k: int
    note: str = ""  # what the rare-class handling changed, for the leaderboard

    def held(self, fold: int) -> np.ndarray:
        return np.flatnonzero(self.fold_of == fold)

    def fit_rows(self, fold: int) -> np.ndarray:
        return np.flatnonzero(self.fold_of != fold)


def grouped_folds(records: list[Record], k: int, seed: int = 0, *, within: str = "") -> Folds:
    """K label-stratified folds of whole prompt groups (scikit-learn's StratifiedGroupKFold).

    K is capped at the prompt groups and at the largest class's rows (StratifiedGroupKFold refuses
    more folds than that), and the note says so. Every fold's fitting rows must hold at least two
    classes. A rare class (a few rows, or all in one or two prompt groups) can leave one without; then
    fewer folds are tried, down to 2, and past that a one-line error names the class and its count.
    A class missing from some fold's fitting rows (but not all) only makes those held-out rows
    unpredictable as that class: the note says so. Errors name the records' files; `within` follows
    the counts they give (" in the training split ...": not the file's counts).
    """
    labels = [r.label for r in records]
    groups = [r.prompt_group for r in records]
    counts, path = Counter(labels), sources_of(records)
    if len(counts) < 2:
        raise InputError(f"every record has the same teacher label{within}: nothing to learn", path=path)
    asked, n_groups, largest = k, len(set(groups)), max(counts.values())
    k = min(asked, n_groups, largest)
    if n_groups < 2:
        raise InputError(f"only {n_groups} prompt group{within}: cross-validation needs at least 2", path=path)
    if k < 2:
        raise InputError(f"every class has a single labelled row{within}: cross-validation needs at least 2 rows "
                         "of one", path=path)
    capped = f"only {n_groups} prompt groups" if k == n_groups else f"the largest class has {largest} rows"
    for tried in range(k, 1, -1):
        splitter = StratifiedGroupKFold(n_splits=tried, shuffle=True, random_state=seed)
        fold_of = np.zeros(len(records), dtype=int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for fold, (_, held) in enumerate(splitter.split(np.zeros(len(records)), labels, groups)):
                fold_of[held] = fold
        fit_classes = [Counter(l for l, f in zip(labels, fold_of) if f != fold) for fold in range(tried)]
        if all(len(c) >= 2 for c in fit_classes):
            missing = sorted({c for fc in fit_classes for c in counts if c not in fc})
            why = "with more, a fold would fit on one class" if tried < k else capped
            notes = [f"{tried} folds, not {asked}: {why}"] if tried < asked else []
            notes += [f"class {c!r} ({counts[c]} rows) is missing from some folds' fitting rows" for c in missing]
            return Folds(fold_of, tried, "; ".join(notes))
    rarest, n = min(counts.items(), key=lambda kv: kv[1])
    spread = len({g for g, l in zip(groups, labels) if l == rarest})
    raise InputError(f"class {rarest!r} has {n} labelled row(s) in {spread} prompt group(s){within}: too rare to "
                     "cross-validate (it needs at least 2 prompt groups); label more responses of that class", path=path)
