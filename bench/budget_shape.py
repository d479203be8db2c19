"""Does the default `judge distill` keep its budget on a file shaped like issue 13's?

2,000 labelled rows with four distinct views (category, image description, question, response) and four
response models (bench/shared_data.py: `multimodal_shaped_rows`; GPTFuzz responses and human labels, the
context borrowed from VLSBench, so the agreement figures mean little and the wall time is the point). Runs
the CLI exactly as a user would, with its defaults (15-minute budget), streams its progress and leaderboard,
and prints the wall time. Reads ../shared/data:

    nice -n 5 .venv/bin/python bench/budget_shape.py            # --set budget=30m ... passes settings on
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shared_data import multimodal_shaped_rows, write_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=80, help="prompt groups, 25 responses each")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE for judge distill")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="budget-shape-") as work:
        rows = multimodal_shaped_rows(questions=args.questions)
        path = write_rows(Path(work) / "labels.jsonl", rows)
        command = [sys.executable, "-m", "judge", "distill", str(path), "--out", str(Path(work) / "judge")]
        command += [arg for kv in args.set for arg in ("--set", kv)]
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
        print(f"\njudge distill on {len(rows)} rows: {time.perf_counter() - started:.0f}s wall")


if __name__ == "__main__":
    main()
