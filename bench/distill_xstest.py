"""Distil a judge from GPT-4's XSTest labels and print agreement and speed on held-out prompt groups.

    .venv/bin/python bench/distill_xstest.py [--epochs 3] [--student minilm-lora] [--set lr=2e-3] [--out runs/bench-xstest]

Trains through the same library call as `judge distill` (MiniLM LoRA on the CPU by default), then
prints kappa against GPT-4 on the test groups, training examples/s and scoring responses/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shared_data import dataset_of, xstest_gpt4_rows  # noqa: E402
from judge.metrics import agreement  # noqa: E402
from judge.model import Judge  # noqa: E402
from judge.splits import split_by_group  # noqa: E402
from judge.training.config import TrainConfig, parse_overrides  # noqa: E402
from judge.training.distill import distill  # noqa: E402


def run(rows: list[dict], out: Path, overrides: dict) -> dict:
    """Distil, then time scoring on the test split; returns the figures it prints."""
    dataset = dataset_of(rows)
    config = TrainConfig.resolve(overrides={"holdout": 0.2, **overrides})  # an untouched test split to time scoring on
    report = distill(dataset, out, config, progress=False)
    judge = Judge.load(out)
    test = split_by_group(dataset.labelled, test_size=config.holdout, val_size=0.0, seed=config.seed).test
    started = time.perf_counter()
    predicted = [p.label for p in judge.predict(test)]
    score_rate = len(test) / (time.perf_counter() - started)
    overall = report["overall"]
    figures = {
        "scheme": dataset.scheme.name, "rows": len(dataset.records), "test_rows": overall["n"],
        "kappa": overall["kappa"], "kappa_ci": overall["kappa_ci"], "accuracy": overall["accuracy"],
        "macro_f1": overall["macro_f1"], "rate_error": abs(report["rates"]["teacher"]["rate"] - report["rates"]["student"]["rate"]),
        "train_examples_per_s": judge.meta.get("training", {}).get("train_examples_per_second", float("nan")),
        "score_responses_per_s": score_rate, "predicted": predicted, "test": test,
    }
    lo, hi = overall["kappa_ci"]
    print(f"{dataset.scheme.name}: {figures['rows']} rows, test {figures['test_rows']} rows on held-out prompt groups")
    print(f"kappa vs teacher {overall['kappa']:.3f} [95% CI {lo:.3f}, {hi:.3f}]  accuracy {overall['accuracy']:.3f}  "
          f"macro-F1 {overall['macro_f1']:.3f}")
    print(f"{report['rates']['rate_name']}: teacher {100 * report['rates']['teacher']['rate']:.2f}%  "
          f"student {100 * report['rates']['student']['rate']:.2f}%  abs error {100 * figures['rate_error']:.2f} points")
    print(f"training {figures['train_examples_per_s']:.1f} examples/s; scoring {score_rate:.1f} responses/s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--student", default="minilm-lora", help="minilm-lora, lexical, ensemble or auto")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-xstest"))
    args = parser.parse_args()
    rows = xstest_gpt4_rows()
    figures = run(rows, args.out, {"epochs": args.epochs, "max_length": args.max_length, "backbone": args.backbone,
                                     "student": args.student, **parse_overrides(args.set)})
    human = {r["id"]: r["label_human"] for r in rows}
    pairs = [(human[r.id], p) for r, p in zip(figures["test"], figures["predicted"]) if human[r.id]]
    if pairs:
        kappa = agreement([h for h, _ in pairs], [p for _, p in pairs], ("refuse", "warning", "unsafe"), n_boot=0)["kappa"]
        print(f"for reference, kappa vs the human annotators on the same test rows: {kappa:.3f} (n={len(pairs)})")


if __name__ == "__main__":
    main()
