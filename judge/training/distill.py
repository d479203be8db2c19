"""Distillation end to end: labelled records in, a self-contained judge artifact and its report out.

``distill`` is what ``judge distill`` calls; a notebook calls it the same way:

    from judge.records import read_records
    from judge.training.distill import distill
    report = distill(read_records("labels.jsonl"), "runs/demo")
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from judge.errors import InputError
from judge.estimate import row_key
from judge.evaluate import evaluate
from judge.model import Judge, write_meta
from judge.records import Dataset, file_sha256
from judge.splits import split_by_group
from judge.training.config import TrainConfig
from judge.training.portfolio import run_portfolio

MIN_LABELLED = 20
CANDIDATES_DIR = "candidates"
# What a student writes into its folder; cleared before the winner is copied in.
ARTIFACT_PARTS = ("adapter", "model", "tokenizer", "members", "model.skops", "combiner.skops", "checkpoints")


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
        # rows whose labels shaped the student (fit, early stopping, choice): never an estimation sample
        "trained_row_keys": sorted(row_key(r) for r in [*split.train, *split.val]),
    }


def distill(dataset: Dataset, out_dir: str | Path, config: TrainConfig | None = None, *,
            resume: bool = False, progress: bool = True, candidates: list | None = None,
            keep_candidates: bool = False) -> dict:
    """Split by prompt group, train the student(s), score the held-out test split, write the artifact.

    ``config.student`` picks the student (auto: a portfolio within ``config.budget``, the best
    validation kappa wins; see judge/training/portfolio.py). The test split is scored only for the winner.
    Returns the agreement report on the test split plus the leaderboard (also ``report.json``).
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    labelled = dataset.labelled
    if len(labelled) < MIN_LABELLED:
        raise InputError(f"only {len(labelled)} labelled records: distillation needs at least {MIN_LABELLED}")
    if len({r.label for r in labelled}) < 2:
        raise InputError("every record has the same teacher label: nothing to learn")
    split = split_by_group(labelled, test_size=config.test_size, val_size=config.val_size, seed=config.seed)

    portfolio = run_portfolio(split, dataset.scheme, config, out / CANDIDATES_DIR, candidates=candidates,
                              resume=resume, progress=progress)
    winner = portfolio.winner
    for part in ARTIFACT_PARTS:  # the folder holds one judge: drop what an earlier run's student left
        if (out / part).is_dir():
            shutil.rmtree(out / part)
        else:
            (out / part).unlink(missing_ok=True)
    shutil.copytree(winner.path, out, dirs_exist_ok=True)
    meta = {**winner.meta, "data": data_summary(dataset, split), "teacher": teacher_summary(labelled),
            "leaderboard": portfolio.leaderboard()}
    write_meta(out, meta)

    judge = Judge.load(out)
    report = {"split": "test", **evaluate(split.test, [p.label for p in judge.predict(split.test, progress=progress)],
                                          dataset.scheme, seed=config.seed)} if split.test else {}
    report.update(student=winner.candidate, leaderboard=portfolio.leaderboard())
    meta["metrics"] = {"test": report.get("overall"), "val": {"kappa": winner.val_kappa, "kappa_ci": winner.val_kappa_ci}}
    write_meta(out, meta)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    if not keep_candidates:
        shutil.rmtree(out / CANDIDATES_DIR, ignore_errors=True)
    return report


def teacher_summary(records) -> dict:
    """Which teacher produced the labels, as far as the rows say (collect stores model and rubric hash)."""
    def values(key):
        return sorted({str(r.raw[key]) for r in records if r.raw.get(key) is not None})
    return {"models": values("teacher_model"), "rubric_sha256": values("rubric_sha256"), "labelers": values("labeler")}
