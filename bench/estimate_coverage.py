"""Do `judge estimate`'s 95% intervals hold on real teacher labels? Coverage, width and error by simulation.

What a user does, repeated: train a TF-IDF judge on some prompt groups, score the rest, label a
random sample of n responses per model with the teacher, estimate each model's headline rate.
Here the teacher's labels of every scored row are known, so each interval can be checked against
the rate the teacher would have reported on all of them. Reads ../shared/data; run with nice:

    nice -n 10 .venv/bin/python bench/estimate_coverage.py [--splits 3] [--reps 40] [--n 50 100] [--only xstest|gptfuzz]

XSTest v2: unsafe-prompt rows, GPT-4's labels (refuse / warning / unsafe; safety rate), 5 response
models. GPTFuzz: human binary labels (attack success rate), one model, 15 responses per question. Each split trains on
``--train-share`` of the prompt groups (seeded), through the same `distill` call as
`judge distill --student lexical`, and scores the others with `Judge.predict`. Each draw is what
`judge collect --sample n --per model` records (uniform within model, inclusion probability n / N_model),
and goes through `judge.estimate.estimate`, the function `judge estimate` calls.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shared_data import dataset_of, gptfuzz_rows, write_rows, xstest_gpt4_rows  # noqa: E402
from judge.collect import draw_per_group  # noqa: E402
from judge.estimate import Inputs, estimate  # noqa: E402
from judge.model import Judge  # noqa: E402
from judge.score import score_records  # noqa: E402
from judge.training.config import TrainConfig  # noqa: E402
from judge.training.distill import distill  # noqa: E402


def split_groups(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    groups = sorted({r["group"] for r in rows})
    train = set(random.Random(seed).sample(groups, round(share * len(groups))))
    return [r for r in rows if r["group"] in train], [r for r in rows if r["group"] not in train]


def scored_inputs(train: list[dict], held: list[dict], seed: int, views: str, tmp: Path) -> tuple[Inputs, dict]:
    """Distil a lexical judge on `train`, score `held`; the teacher labels of `held` kept aside as the truth."""
    dataset = dataset_of(train, f"train{seed}.jsonl")
    distill(dataset, tmp / f"judge{seed}", TrainConfig.resolve(overrides={"student": "lexical", "views": views, "seed": seed}),
            progress=False)
    judge = Judge.load(tmp / f"judge{seed}")
    scheme = judge.scheme
    unlabelled = dataset_of([{k: v for k, v in r.items() if k != "label"} for r in held], "held", scheme=scheme)
    rows, predictions = score_records(judge, unlabelled.records)
    records = dataset_of(rows, "scored", scheme=scheme, label_field="judge_label").records
    probs = np.array([[p.probs[c] for c in scheme.classes] for p in predictions])
    truth = {r["id"]: scheme.parse(r["label"]) for r in held}
    return Inputs(records, probs, scheme, teacher={}), truth


def draw(inputs: Inputs, truth: dict, n: int, rng: random.Random, design: str = "uniform") -> None:
    """n rows per model, recorded as `judge collect --per model` records them; an active draw goes
    through the function `judge collect --draw active` calls (expected n per model)."""
    by_model = defaultdict(list)
    for r in inputs.records:
        by_model[r.model].append(r.id)
    inputs.teacher, inputs.inclusion, inputs.per = {}, {}, "model"
    if design == "active":
        rate = inputs.scheme.rate_probability(inputs.probs)
        _, drawn = draw_per_group(inputs.records, n, per="model", seed=rng.randrange(1 << 30), design="active",
                                  uncertainty=np.sqrt(rate * (1 - rate)))
        inputs.teacher = {i: truth[i] for i in drawn}
        inputs.inclusion = {i: meta["inclusion_prob"] for i, meta in drawn.items()}
    else:
        for ids in by_model.values():
            chosen = rng.sample(ids, min(n, len(ids)))
            inputs.teacher.update({i: truth[i] for i in chosen})
            inputs.inclusion.update({i: len(chosen) / len(ids) for i in chosen})
    inputs.design = f"recorded draw: {design} within each model, n={n}"


def run(name: str, rows: list[dict], args, tmp: Path) -> list[dict]:
    out = []
    for split in range(args.splits):
        train, held = split_groups(rows, args.train_share, seed=split)
        started = time.perf_counter()
        inputs, truth = scored_inputs(train, held, split, args.views, tmp)
        scheme = inputs.scheme
        true_rate = defaultdict(list)
        for r in inputs.records:
            true_rate[r.model].append(truth[r.id] in scheme.rate_labels)
        true_rate = {m: float(np.mean(v)) for m, v in true_rate.items()}
        overall = float(np.mean([truth[r.id] in scheme.rate_labels for r in inputs.records]))
        agree = np.mean([truth[r.id] == r.label for r in inputs.records])
        print(f"{name} split {split}: trained on {len(train)} rows, scored {len(held)} "
              f"(accuracy vs teacher {agree:.3f}) in {time.perf_counter() - started:.0f} s", flush=True)
        rng = random.Random(1000 + split)
        for n in args.n:
            for _ in range(args.reps):
                draw(inputs, truth, n, rng, args.draw)
                result = estimate(inputs, by=("model",))
                for group, g in [*result["groups"].items(), ("overall", result["overall"])]:
                    t = overall if group == "overall" else true_rate[group]
                    out.append({"dataset": name, "n": n, "group": group, "truth": t, "estimate": g["estimate"],
                                "ci": g["ci"], "teacher_only_ci": g["teacher_only_ci"], "student": g["student_rate"],
                                "student_labels": g["student_label_rate"],
                                "teacher_mean": g["teacher_rate"] if args.draw == "uniform" else None,
                                "interval": g["interval"], "n_teacher": g["n_teacher"]})
        if args.draw == "active":
            for n in args.n:
                drawn = [r["n_teacher"] for r in out if r["n"] == n and r["group"] != "overall" and r["dataset"] == name]
                print(f"  active draw, n={n}: {np.mean(drawn):.1f} labels per model on average", flush=True)
    return out


def summarise(results: list[dict], overall: bool) -> list[str]:
    cells = defaultdict(list)
    for r in results:
        if (r["group"] == "overall") == overall:
            cells[(r["dataset"], r["n"])].append(r)
    lines = [f"{'dataset':<8} {'n/model':>7} {'intervals':>9} {'coverage':>8} {'teacher-only':>12} {'width':>6} "
             f"{'t-only w':>8} {'MAE est':>7} {'MAE t-only':>10} {'MAE student':>11} {'MAE labels':>10} {'widened':>7}"]
    for (dataset, n), rs in sorted(cells.items()):
        cover = np.mean([r["ci"][0] <= r["truth"] <= r["ci"][1] for r in rs])
        cover_t = np.mean([r["teacher_only_ci"][0] <= r["truth"] <= r["teacher_only_ci"][1] for r in rs])
        width = np.mean([r["ci"][1] - r["ci"][0] for r in rs])
        width_t = np.mean([r["teacher_only_ci"][1] - r["teacher_only_ci"][0] for r in rs])
        mae = np.mean([abs(r["estimate"] - r["truth"]) for r in rs])
        mae_t = np.mean([abs(r["teacher_mean"] - r["truth"]) for r in rs]) if rs[0]["teacher_mean"] is not None else np.nan
        mae_s = np.mean([abs(r["student"] - r["truth"]) for r in rs])
        mae_l = np.mean([abs(r["student_labels"] - r["truth"]) for r in rs])
        widened = np.mean(["widened" in r["interval"] for r in rs])
        lines.append(f"{dataset:<8} {n:>7} {len(rs):>9} {100 * cover:>7.1f}% {100 * cover_t:>11.1f}% {100 * width:>6.1f} "
                     f"{100 * width_t:>8.1f} {100 * mae:>7.2f} {100 * mae_t:>10.2f} {100 * mae_s:>11.2f} {100 * mae_l:>10.2f} {100 * widened:>6.0f}%")
    return lines


def write_example(out: Path, n: int, seed: int = 0) -> None:
    """Files for the worked example in docs/estimate.md: XSTest prompts split by group, a judge's training
    rows, the other responses unlabelled, and n of them per model with GPT-4's label (the teacher sample),
    drawn and recorded exactly as `judge collect --sample n --per model --seed S` draws them."""
    rows = xstest_gpt4_rows()
    train, held = split_groups(rows, 0.3, seed)
    write_rows(out / "train.jsonl", train)
    write_rows(out / "responses.jsonl", [{k: v for k, v in r.items() if k not in ("label", "label_human")} for r in held])
    records = dataset_of(held, "responses.jsonl").records
    drawn, design = draw_per_group(records, n, per="model", seed=seed)
    write_rows(out / "teacher_sample.jsonl", [{**r.raw, "judge_sample": design[r.id]} for r in drawn])
    write_rows(out / "teacher_all.jsonl", held)  # every held-out label: only to check the example against
    print(f"wrote {out}/train.jsonl ({len(train)} rows), responses.jsonl ({len(held)}), teacher_sample.jsonl ({len(drawn)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=3, help="train/score splits by prompt group (one judge each)")
    parser.add_argument("--reps", type=int, default=40, help="teacher samples drawn per split and n")
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100], help="teacher labels per model")
    parser.add_argument("--train-share", type=float, default=0.3, help="share of prompt groups the judge trains on")
    parser.add_argument("--views", default="full", help="views the lexical search tries (auto = all: slower)")
    parser.add_argument("--per-question", type=int, default=15, help="GPTFuzz responses kept per question (as bench/students.py)")
    parser.add_argument("--only", choices=["xstest", "gptfuzz"])
    parser.add_argument("--draw", choices=["uniform", "active"], default="uniform",
                        help="active: labels by the student's uncertainty, weighted back (Zrnic & Candes 2024)")
    parser.add_argument("--example", type=Path, help="only write the worked example's files into this folder")
    args = parser.parse_args()
    if args.example:
        return write_example(args.example, args.n[0])
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "xstest"):
            results += run("xstest", xstest_gpt4_rows(), args, Path(tmp))
        if args.only in (None, "gptfuzz"):
            results += run("gptfuzz", gptfuzz_rows(per_group=args.per_question), args, Path(tmp))
    print("\nper-model intervals (95%; rates, widths and errors in points):")
    print("\n".join(summarise(results, overall=False)))
    print("\noverall (all models; each model's own estimate, combined by size: stratified):")
    print("\n".join(summarise(results, overall=True)))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
