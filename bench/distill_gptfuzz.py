"""Distil a binary (MM-SafetyBench-style safe / unsafe) judge from GPTFuzz's human labels.

    .venv/bin/python bench/distill_gptfuzz.py [--questions 100] [--per-question 12] [--epochs 2]

Split by question; prints kappa and the attack-success-rate error on held-out questions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.distill_xstest import run  # noqa: E402
from bench.shared_data import gptfuzz_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=100, help="harmful questions (prompt groups) to use")
    parser.add_argument("--per-question", type=int, default=12, help="responses kept per question (seeded sample)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--student", default="minilm-lora", help="minilm-lora, lexical, ensemble or auto")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gptfuzz"))
    args = parser.parse_args()
    rows = gptfuzz_rows(max_groups=args.questions, per_group=args.per_question)
    run(rows, args.out, {"epochs": args.epochs, "max_length": args.max_length, "student": args.student})


if __name__ == "__main__":
    main()
