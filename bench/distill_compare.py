"""Old vs new `judge distill` on real teacher labels, judged on the same untouched prompt groups.

The data sets: XSTest (989 GPT-4 labels), GPTFuzz at 15 responses per question (1,500 human labels)
and `gptfuzz-2000` at 25 (2,500: each design distils from 2,000, the issue's setting). For each,
20% of the prompt groups (seeded, label-stratified) are set aside as the test split; every design
gets the other 80% as its labelled file, exactly as a user would pass it:

- **new**: this tree's `distill` with its defaults (grouped 5-fold CV, refit on every row, 15m budget);
- **old**: the design at commit a9b8fd0 (70/10/20 split of what it is given, best validation kappa,
  winner fitted on the 70%), run from a git worktree in a subprocess (`--old /tmp/old`);
- **TF-IDF**: a plain TF-IDF + logistic regression on the response alone, fitted on the same 80%.

Printed per design: shipped student, test kappa with its group-bootstrap interval, the paired
difference to TF-IDF on the same test rows, the worst response model's rate error (student - teacher,
in points, with its paired group-bootstrap interval) and the mean absolute error over models, with the
student's rates counted from its top labels and then as its mean probability (what `judge score`
and the benchmark view report; the old design's run keeps labels only), and wall time.

    git worktree add /tmp/old a9b8fd0
    nice -n 10 .venv/bin/python bench/distill_compare.py --only xstest --old /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shared_data import gptfuzz_rows, write_rows, xstest_gpt4_rows  # noqa: E402
from judge.backends.lexical import aligned_log_proba  # noqa: E402
from judge.evaluate import benchmark_view  # noqa: E402
from judge.metrics import agreement, paired_kappa_difference  # noqa: E402
from judge.model import Judge, probs_array  # noqa: E402
from judge.records import read_records  # noqa: E402
from judge.splits import split_by_group  # noqa: E402
from judge.training.config import TrainConfig, parse_overrides  # noqa: E402
from judge.training.distill import distill  # noqa: E402
from judge.training.lexical import fit_pipeline  # noqa: E402
from judge.views import render_text  # noqa: E402

OLD_RUN = """
import json, sys
from judge.records import read_records
from judge.training.config import TrainConfig
from judge.training.distill import distill
from judge.model import Judge
report = distill(read_records(sys.argv[1]), sys.argv[3], TrainConfig(), progress=False)
test = read_records(sys.argv[2]).records
json.dump({"student": report["student"], "labels": [p.label for p in Judge.load(sys.argv[3]).predict(test)]},
          open(sys.argv[4], "w"))
"""

DATA = {"xstest": (xstest_gpt4_rows, "XSTest v2 unsafe prompts, GPT-4 labels"),
        "gptfuzz": (lambda: gptfuzz_rows(per_group=15), "GPTFuzz, human binary labels, 15 responses per question"),
        # the setting: 2,000 labels to distil from (and 500 to test on)
        "gptfuzz-2000": (lambda: gptfuzz_rows(per_group=25), "GPTFuzz, human binary labels, 25 responses per question")}


def model_errors(test, predicted, scheme, probs=None) -> tuple[dict, float]:
    """The benchmark view's row of the response model with the largest rate error (student - teacher, as
    fractions, with its interval) and the mean |error| over models in points; rates from the top labels,
    or from the mean probability given `probs`."""
    rows = benchmark_view(test, predicted, scheme, probs=probs, ranking=False)["rows"].values()
    return max(rows, key=lambda r: r["abs_error"]), 100 * sum(r["abs_error"] for r in rows) / len(rows)


def worst_model(test, predicted, scheme, probs=None) -> str:
    """`model_errors` as printed: the worst model's error [95% CI] and the mean |error|, in points."""
    worst, mean = model_errors(test, predicted, scheme, probs)
    low, high = (100 * x for x in worst["error_ci"])
    return f"{100 * worst['error']:+5.1f} [{low:+5.1f}, {high:+5.1f}] mean {mean:4.1f}"


def line(name: str, test, predicted, baseline, scheme, seconds: float | None, student: str, probs=None) -> str:
    truth, groups = [r.label for r in test], [r.prompt_group for r in test]
    a = agreement(truth, predicted, scheme.classes, groups=groups)
    delta, (lo, hi) = paired_kappa_difference(truth, predicted, baseline, scheme.classes, groups)
    wall = "-" if seconds is None else f"{seconds:.0f}"
    by_probs = "-" if probs is None else worst_model(test, predicted, scheme, probs)
    return (f"{name:<8} {student:<16} {a['kappa']:.3f} [{a['kappa_ci'][0]:.3f}, {a['kappa_ci'][1]:.3f}]  "
            f"{delta:+.3f} [{lo:+.3f}, {hi:+.3f}]  {worst_model(test, predicted, scheme):<30} {by_probs:<30} {wall:>6}")


def compare(key: str, overrides: dict, old: Path | None, work: Path) -> None:
    rows_of, title = DATA[key]
    rows = rows_of()
    write_rows(work / "all.jsonl", rows)
    records = read_records(work / "all.jsonl").labelled
    scheme = read_records(work / "all.jsonl").scheme
    split = split_by_group(records, test_size=0.2, val_size=0.0, seed=0)
    dev_ids = {r.id for r in split.train}
    write_rows(work / "dev.jsonl", [r for r in rows if r["id"] in dev_ids])
    write_rows(work / "test.jsonl", [r for r in rows if r["id"] not in dev_ids])
    test = read_records(work / "test.jsonl", scheme=scheme).labelled
    print(f"\n== {title}: {len(records)} rows; each design gets {len(split.train)} rows "
          f"({len({r.prompt_group for r in split.train})} prompts), tested on {len(test)} rows of "
          f"{len({r.prompt_group for r in test})} other prompts", flush=True)

    tfidf = fit_pipeline(split.train, "response", 10.0, None)
    texts = [render_text(r, "response") for r in test]
    baseline = list(tfidf.predict(texts))
    tfidf_probs = np.exp(aligned_log_proba(tfidf, texts, scheme.classes))
    out = [f"{'design':<8} {'shipped':<16} {'test kappa [95% CI]':<22}  {'- TF-IDF [paired 95% CI]':<25} "
           f"{'worst model, top labels: error [95% CI]':<30} {'same, mean probability':<30} {'wall s':>6}",
           line("tf-idf", test, baseline, baseline, scheme, None, "lexical/response", tfidf_probs)]

    started = time.perf_counter()
    config = TrainConfig.resolve(overrides=overrides)
    report = distill(read_records(work / "dev.jsonl"), work / "new", config, progress=True)
    new_seconds = time.perf_counter() - started
    predictions = Judge.load(work / "new").predict(test)
    out.append(line("new", test, [p.label for p in predictions], baseline, scheme, new_seconds, report["student"],
                    probs_array(predictions, scheme.classes)))
    from judge.training.portfolio import format_leaderboard, selection_title

    print(f"new design, candidates ({selection_title(report)}):\n{format_leaderboard(report['leaderboard'])}")
    o = report["overall"]
    print(f"new design's own estimate: kappa {o['kappa']:.3f} [{o['kappa_ci'][0]:.3f}, {o['kappa_ci'][1]:.3f}] "
          f"({report['method']}); judge.json trained_on {report['trained_on']}", flush=True)
    if report.get("calibration"):
        from judge.calibrate import format_calibration

        print(format_calibration(report["calibration"]), flush=True)

    if old is not None:
        started = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(old)}
        subprocess.run([sys.executable, "-c", OLD_RUN, str(work / "dev.jsonl"), str(work / "test.jsonl"),
                        str(work / "old"), str(work / "old.json")], env=env, cwd=old, check=True)
        result = json.loads((work / "old.json").read_text())
        out.append(line("old", test, result["labels"], baseline, scheme, time.perf_counter() - started, result["student"]))
    print("\n".join(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATA))
    parser.add_argument("--old", type=Path, help="a worktree of the old design (git worktree add /tmp/old a9b8fd0)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE for the new design")
    args = parser.parse_args()
    for key in [args.only] if args.only else sorted(DATA, reverse=True):
        with tempfile.TemporaryDirectory(prefix=f"compare-{key}-") as tmp:
            compare(key, parse_overrides(args.set), args.old, Path(tmp))


if __name__ == "__main__":
    main()
