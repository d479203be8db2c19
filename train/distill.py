"""Distillation end to end: labelled records in, a self-contained judge artifact and its report out.

``distill`` is what ``judge distill`` calls; a notebook calls it the same way:

    from judge.records import read_records
    from train.distill import distill
    report = distill(read_records("labels.jsonl"), "runs/demo")
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from judge import __version__
from judge.errors import InputError
from judge.evaluate import evaluate
from judge.model import Judge, write_meta
from judge.records import Dataset, file_sha256
from judge.splits import split_by_group
from train.config import TrainConfig
from train.transformer import train_transformer

MIN_LABELLED = 20


def data_summary(dataset: Dataset, split) -> dict:
    """What the judge was trained on: source hashes, sizes, label counts (for the artifact and card)."""
    labelled = dataset.labelled
    return {
        "sources": [{"path": str(p), "sha256": file_sha256(p)} for p in dataset.sources if Path(p).is_file()],
        "lines_read": dataset.lines_read,
        "skipped": len(dataset.skipped),
        "labelled": len(labelled),
        "split": split.sizes(),
        "groups": len({r.prompt_group for r in labelled}),
        "label_counts": dict(Counter(r.label for r in labelled)),
        "category_counts": dict(Counter(r.category for r in labelled if r.category)),
        "model_counts": dict(Counter(r.model for r in labelled if r.model)),
    }


def distill(dataset: Dataset, out_dir: str | Path, config: TrainConfig | None = None, *,
            resume: bool = False, progress: bool = True) -> dict:
    """Split by prompt group, train the student, score the held-out test split, write the artifact.

    Returns the agreement report on the test split (also saved as ``report.json`` in the artifact).
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    labelled = dataset.labelled
    if len(labelled) < MIN_LABELLED:
        raise InputError(f"only {len(labelled)} labelled records: distillation needs at least {MIN_LABELLED}")
    if len({r.label for r in labelled}) < 2:
        raise InputError("every record has the same teacher label: nothing to learn")
    if not resume:  # stale checkpoints from another run must not be resumed by accident
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    split = split_by_group(labelled, test_size=config.test_size, val_size=config.val_size, seed=config.seed)

    training = train_transformer(split, dataset.scheme, config, out, resume=resume, progress=progress)
    meta = {
        "kind": "transformer",
        "judge_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scheme": dataset.scheme.to_dict(),
        "view": config.view,
        "max_length": config.max_length,
        "backbone": training.pop("backbone"),
        "config": config.to_dict(),
        "training": training,
        "data": data_summary(dataset, split),
        "teacher": teacher_summary(labelled),
    }
    write_meta(out, meta)

    judge = Judge.load(out)
    report = {"split": "test", **evaluate(split.test, [p.label for p in judge.predict(split.test, progress=progress)],
                                          dataset.scheme, seed=config.seed)} if split.test else {}
    meta["metrics"] = {"test": report.get("overall")}
    write_meta(out, meta)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return report


def teacher_summary(records) -> dict:
    """Which teacher produced the labels, as far as the rows say (collect stores model and rubric hash)."""
    def values(key):
        return sorted({str(r.raw[key]) for r in records if r.raw.get(key) is not None})
    return {"models": values("teacher_model"), "rubric_sha256": values("rubric_sha256"), "labelers": values("labeler")}
