"""Train / validation / test splits by prompt group, stratified by label, seeded.

The same question answered by several models must not straddle train and test: otherwise the
student is graded on prompts it has already seen and the agreement it reports is inflated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from judge.errors import InputError
from judge.records import Record


@dataclass
class Split:
    train: list[Record]
    val: list[Record]
    test: list[Record]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _carve(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out about `fraction` of the records, whole groups at a time, label-stratified."""
    if fraction <= 0 or not records:
        return records, []
    n_splits = max(2, round(1 / fraction))
    groups = [r.prompt_group for r in records]
    if len(set(groups)) < n_splits:
        raise InputError(f"only {len(set(groups))} prompt groups: too few to hold out {fraction:.0%} by group")
    labels = [r.label for r in records]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(records)), labels, groups))
    return [records[i] for i in keep], [records[i] for i in held]


def split_by_group(records: list[Record], *, test_size: float = 0.2, val_size: float = 0.1,
                   seed: int = 0) -> Split:
    """Split labelled records into train / val / test with no prompt group in two parts.

    `val_size` is a fraction of all records, taken from what is left after the test split.
    """
    rest, test = _carve(list(records), test_size, seed)
    val_fraction = val_size / (1 - test_size) if test else val_size
    train, val = _carve(rest, val_fraction, seed + 1)
    return Split(train=train, val=val, test=test)
