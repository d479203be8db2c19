"""How far off is the student's rate per response model: counting its top labels, or averaging its probabilities?

XSTest v2's unsafe prompts (GPT-4's labels, five response models, the safety rate). For each seed the
lexical student's settings are searched and its out-of-fold probabilities computed on grouped 5 folds
(`cross_validate_lexical`, what `judge distill` runs), so every row is scored by a student that never saw
its prompt. Per model, the student's rate minus the teacher's, three ways:

- top labels: the share of rows whose most probable label is in the rate (classify and count);
- mean probability: the mean of P(rate's labels), what `judge score` and the benchmark view report;
- + temperature: the same after the temperature `judge distill` fits on the out-of-fold rows
  (`calibrate_out_of_fold`: each prompt group rescaled by a temperature fitted on the other groups).

Reads ../shared/data; run with nice:

    nice -n 10 .venv/bin/python bench/rate_estimators.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shared_data import dataset_of, xstest_gpt4_rows  # noqa: E402
from judge.calibrate import calibrate_out_of_fold  # noqa: E402
from judge.metrics import group_by  # noqa: E402
from judge.splits import grouped_folds  # noqa: E402
from judge.training.lexical import cross_validate_lexical  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="fold assignments (and searches) to repeat")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = dataset_of(xstest_gpt4_rows())
    records, scheme = dataset.labelled, dataset.scheme
    in_rate = [scheme.classes.index(c) for c in scheme.rate_labels]
    y = np.array([scheme.classes.index(r.label) for r in records])
    teacher = np.isin(y, in_rate).astype(float)
    models = group_by([r.model for r in records], list(range(len(records))))
    print(f"XSTest v2, {len(records)} GPT-4 labels, {len(models)} response models; {scheme.rate}, "
          "student - teacher in points (out of fold, grouped 5-fold)")
    ways = ("top labels", "mean probability", "+ temperature")
    worst: dict[str, list[float]] = {w: [] for w in ways}
    mean: dict[str, list[float]] = {w: [] for w in ways}
    for seed in range(args.seeds):
        folds = grouped_folds(records, 5, seed=seed)
        cv = cross_validate_lexical(records, folds, scheme, seed=seed)
        calibrated, _ = calibrate_out_of_fold(cv.probs, records, scheme.classes, seed=seed)
        student = {"top labels": np.isin(cv.probs.argmax(axis=1), in_rate).astype(float),
                   "mean probability": scheme.rate_probability(cv.probs),
                   "+ temperature": scheme.rate_probability(calibrated)}
        cells = []
        for way, rate in student.items():
            errors = [100 * (rate[rows].mean() - teacher[rows].mean()) for rows, in models.values()]
            worst[way].append(max(map(abs, errors)))
            mean[way].append(float(np.mean(np.abs(errors))))
            cells.append(f"{way}: " + " ".join(f"{e:+5.1f}" for e in errors))
        print(f"seed {seed} (view {cv.view}, C={cv.C:g}, class_weight={cv.class_weight}, kappa {cv.kappa:.3f})\n  "
              + "\n  ".join(cells), flush=True)
    print(f"\n{'rate from':<18} {'worst model |error|, mean over seeds':>36} {'mean |error| over models':>25}")
    for way in ways:
        print(f"{way:<18} {np.mean(worst[way]):>36.2f} {np.mean(mean[way]):>25.2f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
