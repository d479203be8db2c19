"""The reference judge behind the repository's MODEL_CARD.md: distilled from GPT-4's labels of XSTest.

Reads ../shared/data/xstest_v2.jsonl (unsafe-prompt rows that GPT-4 graded), holds out a calibration
split by prompt group, distils a student on the rest with `judge distill`'s defaults (the portfolio a
user gets, so the card shows what they would ship), calibrates it, picks the escalation threshold that
reaches kappa 0.9 on the calibration split and writes the model card.

    nice -n 10 .venv/bin/python bench/reference_card.py            # trains once, then reuses runs/reference
    nice -n 10 .venv/bin/python bench/reference_card.py --retrain
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shared_data import xstest_gpt4_rows  # noqa: E402
from judge.calibrate import calibrate, format_calibration  # noqa: E402
from judge.card import render_card, reproduce_commands  # noqa: E402
from judge.escalate import escalation_plan  # noqa: E402
from judge.model import Judge  # noqa: E402
from judge.records import read_records, write_jsonl  # noqa: E402
from judge.splits import split_by_group  # noqa: E402
from judge.training.config import TrainConfig  # noqa: E402
from judge.training.distill import distill  # noqa: E402

TEACHER = "gpt-4 (2023, temperature 0, XSTest compliance prompt)"


def teacher_rows() -> list[dict]:
    """XSTest's GPT-4-labelled rows, marked with the teacher that labelled them (the card quotes it)."""
    return [{**row, "teacher_model": TEACHER, "labeler": "gpt4"} for row in xstest_gpt4_rows()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/reference"), help="Artifact folder (relative to the repo).")
    parser.add_argument("--card", type=Path, default=Path("MODEL_CARD.md"))
    parser.add_argument("--target-kappa", type=float, default=0.9)
    parser.add_argument("--retrain", action="store_true", help="Train again even if the artifact exists.")
    args = parser.parse_args()
    os.chdir(ROOT)  # relative paths, so the card's commands work from any checkout

    data_dir = args.out.parent / "reference-data"
    train_file, calib_file = data_dir / "train.jsonl", data_dir / "calib.jsonl"
    rows = teacher_rows()
    write_jsonl(data_dir / "all.jsonl", rows)
    dataset = read_records(data_dir / "all.jsonl", scheme="vlsbench")
    held_out = split_by_group(dataset.records, test_size=0.15, val_size=0, seed=0)
    rest, calib = held_out.train, held_out.test
    calib_ids = {r.id for r in calib}
    write_jsonl(train_file, [r for r in rows if r["id"] not in calib_ids])
    write_jsonl(calib_file, [r for r in rows if r["id"] in calib_ids])
    print(f"{len(rows)} GPT-4-labelled responses: {len(rest)} for distillation, {len(calib)} held out for calibration")

    if args.retrain or not (args.out / "report.json").is_file():
        distill(read_records(train_file, scheme="vlsbench"), args.out, TrainConfig.resolve())

    judge = Judge.load(args.out)
    # distill's out-of-fold temperature (report.json keeps it; calibrate replaces judge.json's): the two should agree
    out_of_fold = json.loads((args.out / "report.json").read_text(encoding="utf-8")).get("calibration")
    calib_records = read_records(calib_file, scheme=judge.scheme).records
    result = calibrate(judge, calib_records, source=calib_file, png=args.out / "reliability.png")
    plan = escalation_plan(judge, calib_records, target_kappa=args.target_kappa, source=calib_file)
    judge.save_meta()
    commands = [f"nice -n 10 .venv/bin/python bench/reference_card.py  # writes {data_dir}/, then runs the equivalent of:",
                *reproduce_commands(judge.meta, str(args.out))]
    args.card.write_text(render_card(args.out, commands=commands), encoding="utf-8")

    if out_of_fold:
        print(format_calibration(out_of_fold))
    print(f"temperature {result['temperature']:.3f}  ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f}  "
          f"Brier {result['brier_before']:.4f} -> {result['brier_after']:.4f}  (n={result['n']}, held apart)")
    if plan["threshold"] is None:
        print(f"kappa {args.target_kappa} is out of reach even sending everything to the teacher")
    else:
        print(f"kappa {args.target_kappa}: escalate below confidence {plan['threshold']:.3f}, "
              f"{100 * plan['escalated_share']:.1f}% of items go to the teacher "
              f"(kappa on calibration {plan['kappa']:.3f}, cost saved {100 * plan['cost_saved_share']:.1f}%)")
    print(f"test kappa {judge.meta['metrics']['test']['kappa']:.3f}; card written to {args.card}")


if __name__ == "__main__":
    main()
