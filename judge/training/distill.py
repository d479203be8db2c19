"""Distillation end to end: labelled records in, a self-contained judge artifact and its report out.

``distill`` is what ``judge distill`` calls; a notebook calls it the same way:

    from judge.records import read_records
    from judge.training.distill import distill
    report = distill(read_records("labels.jsonl"), "runs/demo")
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from judge.calibrate import calibrate_out_of_fold
from judge.errors import InputError
from judge.estimate import plan_labels
from judge.evaluate import evaluate
from judge.metrics import top_labels
from judge.model import Judge, probs_array, row_key, write_meta
from judge.records import Dataset, file_sha256, sources_of, write_jsonl
from judge.splits import split_by_group
from judge.textio import check_writable
from judge.training import ranks
from judge.training.config import RANGES, TrainConfig
from judge.training.portfolio import run_portfolio

MIN_LABELLED = 20
CANDIDATES_DIR = "candidates"
HOLDOUT_FILE = "holdout.jsonl"  # with --holdout, the untouched test rows as read: labels kept apart for calibrate
# What a student writes into its folder; cleared before the winner is copied in.
ARTIFACT_PARTS = ("adapter", "model", "tokenizer", "members", "model.skops", "combiner.skops", "checkpoints", "report.json",
                  HOLDOUT_FILE)


def data_summary(dataset: Dataset, trained: list, test: list, folds: int) -> dict:
    """What the judge was trained on: source hashes, sizes, and the groups and counts of the rows it was
    trained on, held-out rows apart (for the artifact and card)."""
    labelled = dataset.labelled
    held_groups = len({r.prompt_group for r in test})
    return {
        "sources": [{"path": str(p), "sha256": file_sha256(p)} for p in dataset.sources if Path(p).is_file()],
        "lines_read": dataset.lines_read,
        "skipped": len(dataset.skipped),
        "labelled": len(labelled),
        "trained_on": len(trained),  # every labelled row not held out: the shipped student was fitted on all of them
        "holdout": len(test),
        "holdout_groups": held_groups,
        # what the holdout took of the labelled rows and their prompt groups (config.holdout is what was asked)
        "holdout_share": {"rows": round(len(test) / len(labelled), 4),
                          "groups": round(held_groups / len({r.prompt_group for r in labelled}), 4)},
        "folds": folds,
        "groups": len({r.prompt_group for r in trained}),
        "label_counts": dict(Counter(r.label for r in trained)),
        "category_counts": dict(Counter(r.category for r in trained if r.category)),
        "model_counts": dict(Counter(r.model for r in trained if r.model)),
        # rows whose labels shaped the student (fit, early stopping, choice): never an estimation sample
        "trained_row_keys": sorted(row_key(r) for r in trained),
    }


def headline(report: dict) -> dict:
    """kappa, its interval, n and how it was estimated: what judge.json keeps of an agreement report."""
    o = report["overall"]
    return {"kappa": o["kappa"], "kappa_ci": o["kappa_ci"], "n": o["n"], "method": report["method"]}


def cv_method(winner, folds: int, candidates: int) -> str:
    """How the reported agreement was estimated, including the choice it is not corrected for: every
    candidate chose its settings, and the winner was chosen, on the very rows the figure is read from."""
    chosen = (f"the best of {candidates} candidates, each with its settings chosen on the same rows"
              if candidates > 1 else "settings chosen on the same rows")
    design = (f"grouped {folds}-fold cross-validation, out-of-fold predictions" if winner.design == f"{folds}-fold"
              else f"out-of-fold predictions on {winner.design.replace('folds', 'grouped folds')} (all the design afforded)")
    return f"{design} of {chosen} (not corrected for that choice; --holdout is), 95% group-bootstrap interval"


def distill(dataset: Dataset, out_dir: str | Path, config: TrainConfig | None = None, *,
            progress: bool = True, candidates: list | None = None, keep_candidates: bool = False) -> dict:
    """Choose a student by grouped cross-validation, refit it on every labelled row, write the artifact.

    ``config.student`` picks the student (auto: the portfolio within ``config.budget``; the rules are
    in judge/training/portfolio.py). Agreement is the winner's out-of-fold agreement, or, with
    ``config.holdout`` > 0, its agreement on that untouched test split (the rest trains the judge).
    The judge's temperature is fitted on the winner's out-of-fold predictions (judge/calibrate.py), so
    its probabilities, and the per-model rates taken from them, are calibrated from the start.
    Returns the agreement report plus the leaderboard (also ``report.json``). Under ``torchrun`` or
    ``accelerate launch`` every rank trains each transformer together and rank 0 alone writes the
    artifact (judge/training/ranks.py); the other ranks return an empty dict.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    labelled = dataset.labelled
    if len(labelled) < MIN_LABELLED:
        raise InputError(f"only {len(labelled)} labelled records: distillation needs at least {MIN_LABELLED}",
                         path=sources_of(labelled))
    if len({r.label for r in labelled}) < 2:
        raise InputError("every record has the same teacher label: nothing to learn", path=sources_of(labelled))
    allowed, expected = RANGES["holdout"]
    if not allowed(config.holdout):  # a TrainConfig built in code never went through resolve
        raise InputError(f"config holdout={config.holdout!r}: must be {expected}")
    check_writable(out, folder=True)  # before the training, never after it
    split = split_by_group(labelled, test_size=config.holdout, val_size=0.0, seed=config.seed)
    rows, test = split.train, split.test
    if config.holdout and not test:
        raise InputError(f"holdout {config.holdout}: no whole prompt group can be held out ({config.holdout:.0%} of "
                         f"{len(labelled)} labelled rows in {len({r.prompt_group for r in labelled})} prompt groups); "
                         "ask for a larger share or leave --holdout out", path=sources_of(labelled))
    if len(rows) < MIN_LABELLED:
        raise InputError(f"only {len(rows)} labelled records left to train on: distillation needs at least "
                         f"{MIN_LABELLED} (holdout {config.holdout} took the other {len(test)})", path=sources_of(labelled))
    ranks.start()

    within = f" in the training split (holdout {config.holdout} took {len(test)} rows)" if test else ""
    portfolio = run_portfolio(rows, dataset.scheme, config, out / CANDIDATES_DIR, candidates=candidates,
                              progress=progress, within=within)
    winner = portfolio.winner
    if progress and ranks.is_main():
        print(f"[distill] refitting {winner.candidate} on all {len(rows)} rows", file=sys.stderr, flush=True)
    shipped = out / CANDIDATES_DIR / winner.candidate
    if ranks.is_main():
        shutil.rmtree(shipped, ignore_errors=True)
    ranks.wait()
    refit_meta = winner.source.refit(rows, dataset.scheme, config, winner, shipped)
    if not ranks.is_main():
        return {}
    for part in ARTIFACT_PARTS:  # the folder holds one judge: drop what an earlier run's student left
        if (out / part).is_dir():
            shutil.rmtree(out / part)
        else:
            (out / part).unlink(missing_ok=True)
    shutil.copytree(shipped, out, dirs_exist_ok=True)

    covered = np.flatnonzero(winner.covered)
    oof_rows = [rows[i] for i in covered]
    oof_labels = top_labels(winner.probs[covered], dataset.scheme.classes)  # a temperature never moves the top label
    oof_probs, calibration = calibrate_out_of_fold(winner.probs[covered], oof_rows, dataset.scheme.classes,
                                                   seed=config.seed)
    cv = {"method": cv_method(winner, portfolio.folds.k, sum(r.status == "trained" for r in portfolio.results)),
          **evaluate(oof_rows, oof_labels, dataset.scheme, probs=oof_probs, seed=config.seed)}
    data = data_summary(dataset, rows, test, portfolio.folds.k)
    if test:
        shipped_judge = Judge.load(out)
        if calibration:
            shipped_judge.meta["calibration"] = calibration
        predictions = shipped_judge.predict(test, progress=progress)
        share = data["holdout_share"]
        report = {"split": "test", "method": f"held-out test split: {len(test)} rows from "
                  f"{data['holdout_groups']} prompt groups ({share['rows']:.1%} of the rows, "
                  f"{share['groups']:.1%} of the groups; --holdout {config.holdout}) used neither to train nor to "
                  "choose, 95% group-bootstrap interval",
                  **evaluate(test, [p.label for p in predictions], dataset.scheme,
                             probs=probs_array(predictions, dataset.scheme.classes), seed=config.seed)}
    else:
        report = {"split": "cv", **cv}
    selection = {"folds": portfolio.folds.k, "compared_rows": portfolio.compared_rows, "resolved": portfolio.resolved,
                 "tie_margin": config.tie_margin, "rate_guard": config.rate_guard,
                 "rate_guard_points": config.rate_guard_points,
                 "chosen_over": winner.chosen_over}
    leaderboard = portfolio.leaderboard()
    report.update(student=winner.candidate, leaderboard=leaderboard, selection=selection, trained_on=len(rows),
                  labels_plan=plan_labels(oof_rows, oof_probs, dataset.scheme), calibration=calibration)
    if test:
        report["cv"] = {"method": cv["method"], "overall": cv["overall"]}
    meta = {**refit_meta, "data": data, "teacher": teacher_summary(labelled),
            "leaderboard": leaderboard, "selection": selection, "agreement": headline(report),
            # `test` is the training-time agreement calibrate's drift check and the card compare with
            "metrics": {"test": report["overall"], "cv": headline(cv)},
            **({"calibration": calibration} if calibration else {})}
    write_meta(out, meta)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    if test:
        write_jsonl(out / HOLDOUT_FILE, [r.raw for r in test])
    if not keep_candidates:
        shutil.rmtree(out / CANDIDATES_DIR, ignore_errors=True)
    return report


def teacher_summary(records) -> dict:
    """Which teacher produced the labels, as far as the rows say (collect stores model and rubric hash)."""
    def values(key):
        return sorted({str(r.raw[key]) for r in records if r.raw.get(key) is not None})
    return {"models": values("teacher_model"), "rubric_sha256": values("rubric_sha256"), "labelers": values("labeler")}
