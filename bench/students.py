"""Leaderboard of candidate students on real teacher labels, with each candidate's held-out test kappa.

XSTest v2 unsafe-prompt rows with GPT-4's labels (refuse / warning / unsafe), and GPTFuzz human
binary labels (subsampled to ~1,500 rows, every question kept), both split by prompt group.
`judge distill --student auto` picks on validation kappa; the test split is scored here for every
candidate only to show how the choice held up. Reads ../shared/data; run with nice:

    nice -n 10 .venv/bin/python bench/students.py [--budget 40m] [--only xstest|gptfuzz] [--set epochs=2]
    nice -n 10 .venv/bin/python bench/students.py --noise 5    # how much a 0.05 kappa gap is worth here
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shared_data import xstest_gpt4_rows  # noqa: E402
from judge.metrics import agreement, kappa_from_confusion  # noqa: E402
from judge.model import Judge  # noqa: E402
from judge.records import build_dataset  # noqa: E402
from judge.splits import split_by_group  # noqa: E402
from judge.views import render_text  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.distill import CANDIDATES_DIR, distill  # noqa: E402
from train.lexical import fit_lexical  # noqa: E402
from train.portfolio import format_leaderboard  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def xstest():
    rows = xstest_gpt4_rows()
    return build_dataset([("xstest_v2.jsonl", i, r) for i, r in enumerate(rows, 1)], scheme="vlsbench")


def gptfuzz(path: Path = DATA / "gptfuzz.jsonl", rows_wanted: int = 1500, seed: int = 0):
    by_group = defaultdict(list)
    for r in read_jsonl(path):
        by_group[r["group"]].append({**r, "question": r["prompt"], "label": "unsafe" if r["unsafe_binary"] else "safe"})
    per_group = max(1, rows_wanted // len(by_group))
    rng = random.Random(seed)
    rows = [r for g in sorted(by_group) for r in rng.sample(by_group[g], min(per_group, len(by_group[g])))]
    return build_dataset([(str(path), i, r) for i, r in enumerate(rows, 1)], scheme="mmsafetybench")


def run(name: str, dataset, config: TrainConfig, work: Path) -> None:
    split = split_by_group(dataset.labelled, test_size=config.test_size, val_size=config.val_size, seed=config.seed)
    print(f"\n== {name}: {len(dataset.labelled)} rows, split {split.sizes()}, budget {config.budget}", flush=True)
    started = time.perf_counter()
    report = distill(dataset, work / name, config, progress=False, keep_candidates=True)
    print(f"portfolio ran in {time.perf_counter() - started:.0f}s; chosen: {report['student']}")
    print(format_leaderboard(report["leaderboard"]))
    print(f"\n{'candidate':<18} {'test kappa':>10} {'95% CI':>15} {'macro-F1':>8}")
    test_kappa, predictions = {}, {}
    for row in report["leaderboard"]:
        if row["status"] != "trained":
            continue
        judge = Judge.load(work / name / CANDIDATES_DIR / row["candidate"])
        predictions[row["candidate"]] = [p.label for p in judge.predict(split.test)]
        result = agreement([r.label for r in split.test], predictions[row["candidate"]],
                           dataset.scheme.classes, groups=[r.prompt_group for r in split.test])
        test_kappa[row["candidate"]] = result["kappa"]
        lo, hi = result["kappa_ci"]
        print(f"{row['candidate']:<18} {result['kappa']:>10.3f} {f'[{lo:.2f}, {hi:.2f}]':>15} {result['macro_f1']:>8.3f}")
    chosen, lexical = test_kappa[report["student"]], test_kappa.get("lexical")
    if lexical is not None:
        print(f"chosen {report['student']} vs TF-IDF alone on test: {chosen:.3f} vs {lexical:.3f} "
              f"(delta {chosen - lexical:+.3f}; the bar is +0.05)")
        for name in test_kappa:
            if name != "lexical":
                lo, hi = paired_delta_ci(split.test, predictions[name], predictions["lexical"], dataset.scheme.classes)
                print(f"  {name} - lexical on test: 95% group-bootstrap interval of the kappa difference [{lo:+.3f}, {hi:+.3f}]")
    print(flush=True)


def paired_delta_ci(records, pred_a, pred_b, classes, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Interval for kappa(a) - kappa(b) on the same rows, resampling prompt groups (paired bootstrap)."""
    index = {c: i for i, c in enumerate(classes)}
    _, gid = np.unique([r.prompt_group for r in records], return_inverse=True)
    k = len(classes)
    cms = []
    for pred in (pred_a, pred_b):
        per_group = np.zeros((gid.max() + 1, k, k))
        np.add.at(per_group, (gid, [index[r.label] for r in records], [index[p] for p in pred]), 1)
        cms.append(per_group)
    counts = np.random.default_rng(seed).multinomial(gid.max() + 1, np.full(gid.max() + 1, 1 / (gid.max() + 1)), size=n_boot)
    deltas = [kappa_from_confusion(np.einsum("g,gij->ij", c, cms[0])) - kappa_from_confusion(np.einsum("g,gij->ij", c, cms[1]))
              for c in counts]
    deltas = np.asarray(deltas)[~np.isnan(deltas)]
    return float(np.quantile(deltas, 0.025)), float(np.quantile(deltas, 0.975))


def noise_floor(dataset, seeds: int) -> None:
    """How much test kappa moves with the split alone (TF-IDF with the settings the XSTest search picked:
    question view, C=30), and how far the teacher itself is from human annotators."""
    kappas = []
    for seed in range(seeds):
        split = split_by_group(dataset.labelled, seed=seed)
        fit = fit_lexical(split, dataset.scheme, views=("question",), Cs=(30.0,), class_weights=(None,))
        kappas.append(agreement([r.label for r in split.test], list(fit.pipeline.predict([render_text(r, "question") for r in split.test])),
                                dataset.scheme.classes, n_boot=0)["kappa"])
    print(f"TF-IDF test kappa over {seeds} group splits: mean {np.mean(kappas):.3f}, sd {np.std(kappas, ddof=1):.3f}, "
          f"range {min(kappas):.3f}-{max(kappas):.3f}")
    pairs = [(r.label, r.raw.get("label_human")) for r in dataset.labelled if r.raw.get("label_human")]
    if pairs:
        human = agreement([h for _, h in pairs], [t for t, _ in pairs], dataset.scheme.classes, n_boot=0)
        print(f"teacher (GPT-4) vs human annotators on {len(pairs)} of these rows: kappa {human['kappa']:.3f}, "
              f"accuracy {human['accuracy']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="40m")
    parser.add_argument("--only", choices=["xstest", "gptfuzz"])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    parser.add_argument("--noise", type=int, default=0, metavar="SEEDS",
                        help="only measure the XSTest noise floor: TF-IDF over SEEDS group splits, GPT-4 vs humans")
    args = parser.parse_args()
    overrides = dict(pair.split("=", 1) for pair in args.set)
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
