"""Leaderboard of candidate students on real teacher labels, and the shipped student's held-out test kappa.

XSTest v2 unsafe-prompt rows with GPT-4's labels (refuse / warning / unsafe), and GPTFuzz human
binary labels (subsampled to ~1,500 rows, every question kept), both grouped by prompt.
`judge distill --student auto` compares candidates on grouped out-of-fold predictions; here 20% of
the prompt groups are also held out, to show how the choice held up. Reads ../shared/data; run with nice:

    nice -n 10 .venv/bin/python bench/students.py [--budget 40m] [--only xstest|gptfuzz] [--set epochs=2]
    nice -n 10 .venv/bin/python bench/students.py --noise 5    # how much a 0.05 kappa gap is worth here
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shared_data import dataset_of, gptfuzz_rows, xstest_gpt4_rows  # noqa: E402
from judge.metrics import agreement  # noqa: E402
from judge.splits import split_by_group  # noqa: E402
from judge.views import render_text  # noqa: E402
from judge.training.config import TrainConfig, parse_overrides  # noqa: E402
from judge.training.distill import distill  # noqa: E402
from judge.training.lexical import lexical_pipeline  # noqa: E402
from judge.training.portfolio import format_leaderboard, selection_title  # noqa: E402


def xstest():
    return dataset_of(xstest_gpt4_rows(), "xstest_v2.jsonl", scheme="vlsbench")


def gptfuzz(rows_wanted: int = 1500):
    """All 100 questions, rows_wanted // 100 responses each (seeded)."""
    rows = gptfuzz_rows(per_group=rows_wanted // 100)
    return dataset_of(rows, "gptfuzz.jsonl", scheme="mmsafetybench")


def run(name: str, dataset, config: TrainConfig, work: Path) -> None:
    """The portfolio's leaderboard on grouped out-of-fold predictions over 80% of the prompt groups, then the
    shipped student (refitted on those) scored on the other 20% (`--holdout 0.2`), to show how the choice held up."""
    config = replace(config, holdout=0.2)
    print(f"\n== {name}: {len(dataset.labelled)} rows, 20% of the prompt groups held out, budget {config.budget}", flush=True)
    started = time.perf_counter()
    report = distill(dataset, work / name, config, progress=True)
    print(f"portfolio ran in {time.perf_counter() - started:.0f}s; chosen: {report['student']}")
    print(f"candidates ({selection_title(report)}):\n{format_leaderboard(report['leaderboard'])}")
    o = report["overall"]
    print(f"shipped {report['student']} on the {o['n']} test rows: kappa {o['kappa']:.3f} [{o['kappa_ci'][0]:.2f}, "
          f"{o['kappa_ci'][1]:.2f}]", flush=True)


def noise_floor(dataset, seeds: int) -> None:
    """How much test kappa moves with the split alone, with the amount of training data and with the
    words read (TF-IDF with the settings the XSTest search picked: question view, C=30), and how far
    the teacher is from human annotators."""
    kappas = defaultdict(list)
    for seed in range(seeds):
        split = split_by_group(dataset.labelled, seed=seed)
        groups = sorted({r.prompt_group for r in split.train})
        random.Random(seed).shuffle(groups)
        for share, words in ((0.25, None), (0.5, None), (0.75, None), (1.0, None), (1.0, 100)):
            keep = set(groups[:round(share * len(groups))])
            train = [r for r in split.train if r.prompt_group in keep]

            def text(record, words=words):
                return " ".join(render_text(record, "question").split()[:words])

            pipeline = lexical_pipeline(30.0, None).fit([text(r) for r in train], [r.label for r in train])
            kappas[share, words].append(agreement([r.label for r in split.test], list(pipeline.predict([text(r) for r in split.test])),
                                                  dataset.scheme.classes, n_boot=0)["kappa"])
    for (share, words), values in kappas.items():
        print(f"TF-IDF on {share:.0%} of the training prompts, {f'first {words} words' if words else 'all words'}: "
              f"test kappa over {seeds} group splits mean {np.mean(values):.3f}, sd {np.std(values, ddof=1):.3f}, "
              f"range {min(values):.3f}-{max(values):.3f}")
    pairs = [(r.label, r.raw.get("label_human")) for r in dataset.labelled if r.raw.get("label_human")]
    if pairs:
        human = agreement([h for _, h in pairs], [t for t, _ in pairs], dataset.scheme.classes, n_boot=0)
        print(f"teacher (GPT-4) vs human annotators on {len(pairs)} of these rows: kappa {human['kappa']:.3f}, "
              f"accuracy {human['accuracy']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--only", choices=["xstest", "gptfuzz"])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    parser.add_argument("--noise", type=int, default=0, metavar="SEEDS",
                        help="only measure the XSTest noise floor: TF-IDF over SEEDS group splits, GPT-4 vs humans")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    config = TrainConfig.resolve(overrides={"budget": args.budget, **overrides})
    if args.noise:
        noise_floor(xstest(), args.noise)
        return
    with tempfile.TemporaryDirectory(prefix="bench-students-") as tmp:
        if args.only in (None, "xstest"):
            run("xstest-gpt4", xstest(), config, Path(tmp))
        if args.only in (None, "gptfuzz"):
            run("gptfuzz-human", gptfuzz(), config, Path(tmp))


if __name__ == "__main__":
    main()
