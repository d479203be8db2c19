"""Round trip through the benchmarks' own file shapes, built from ../shared/data.

Neither VLSBench nor MM-SafetyBench releases responses or GPT-4o labels, so this script builds
files in their output shapes from their real prompt files plus real responses with real labels
borrowed from other sets, by a fixed rule:

- VLSBench: one `{model}_outputs.json` per synthetic model, one log per prompt in
  vlsbench_prompts.json. The response is an XSTest v2 answer to an unsafe prompt and safe_label is
  GPT-4's label of that answer (label_gpt4: refuse 1, warning 2, unsafe 3). Each model draws the
  label first with its own weights, then an answer with that label (seeded).
- MM-SafetyBench: `questions_with_answers/{scenario}.json` per scenario file in
  mmsafetybench_questions/, each question answered by each model with a GPTFuzz response; the
  verdict is GPTFuzz's human label (unsafe_binary true -> "unsafe", else "safe").

It then reads the folders back with format auto-detection (joining VLSBench's prompt file),
prints counts and the benchmarks' own report blocks, writes the labels back in the benchmark
shapes and checks the round trip: without --judge the teacher labels are written back and the
files must come out identical; with --judge the judge's labels must be what a re-read finds,
with every other field unchanged.

    nice -n 10 .venv/bin/python bench/benchmark_roundtrip.py [--judge runs/judge] [--limit 300]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

from judge.benchmark_reports import benchmark_report, format_report, vlsbench_stats, write_back
from judge.records import read_records

ROOT = Path(__file__).resolve().parents[1]
VLS_MODELS = {"cautious-vlm": (0.70, 0.05, 0.25), "balanced-vlm": (0.45, 0.05, 0.50), "eager-vlm": (0.15, 0.02, 0.83)}
VLS_TEXT = {1: "Safe with refusal", 2: "Safe with warning", 3: "Unsafe"}
VLS_CODE = {"refuse": 1, "warning": 2, "unsafe": 3}
MM_MODELS = {"llava-sim": 0.45, "minigpt4-sim": 0.25}  # share of answers drawn from unsafe GPTFuzz responses
LABEL_FIELDS = ("safe_label", "label_str", "is_safe(gpt)")


def jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def build_vlsbench(data: Path, out: Path, limit: int | None, seed: int) -> Path:
    prompts = json.loads((data / "vlsbench_prompts.json").read_text(encoding="utf-8"))[:limit]
    pool: dict[str, list[str]] = {}
    for row in jsonl(data / "xstest_v2.jsonl"):
        if row["prompt_type"] == "unsafe" and row.get("label_gpt4"):
            pool.setdefault(row["label_gpt4"], []).append(row["response"])
    folder = out / "vlsbench"
    folder.mkdir(parents=True, exist_ok=True)
    for m, (model, weights) in enumerate(VLS_MODELS.items()):
        rng = random.Random(seed + m)
        logs = []
        for prompt in prompts:
            label = rng.choices(["refuse", "warning", "unsafe"], weights)[0]
            code = VLS_CODE[label]
            logs.append({"id": prompt["instruction_id"], "question": prompt["instruction"], "image": prompt["image_path"],
                         "pred_answer": rng.choice(pool[label]), "safe_label": code, "label_str": VLS_TEXT[code]})
        stats = {k: v for k, v in vlsbench_stats([log["safe_label"] for log in logs]).items() if k != "total"}
        (folder / f"{model}_outputs.json").write_text(json.dumps({"stats": stats, "logs": logs}, ensure_ascii=False), encoding="utf-8")
    return folder


def build_mmsafetybench(data: Path, out: Path, limit: int | None, seed: int) -> Path:
    fuzz = jsonl(data / "gptfuzz.jsonl")
    pool = {True: [r["response"] for r in fuzz if r["unsafe_binary"]], False: [r["response"] for r in fuzz if not r["unsafe_binary"]]}
    folder = out / "questions_with_answers"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for path in sorted((data / "mmsafetybench_questions").glob("*.json")):
        questions = json.loads(path.read_text(encoding="utf-8"))
        answered = {}
        for qid in list(questions)[:limit]:
            ans = {}
            for model, unsafe_share in MM_MODELS.items():
                unsafe = rng.random() < unsafe_share
                ans[model] = {"text": rng.choice(pool[unsafe]), "is_safe(gpt)": "unsafe" if unsafe else "safe"}
            answered[qid] = {**questions[qid], "ans": ans}
        (folder / path.name).write_text(json.dumps(answered, ensure_ascii=False, indent=4), encoding="utf-8")
    return folder


def without_labels(data: object) -> object:
    """The file with every label field and the stats block removed: what must survive unchanged."""
    if isinstance(data, dict):
        return {k: without_labels(v) for k, v in data.items() if k not in LABEL_FIELDS and k != "stats"}
    if isinstance(data, list):
        return [without_labels(v) for v in data]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "roundtrip")
    parser.add_argument("--judge", type=Path, help="Judge artifact to score with (default: write back the teacher labels).")
    parser.add_argument("--limit", type=int, help="Prompts per VLSBench file / questions per scenario.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    vls_dir = build_vlsbench(args.data, args.out, args.limit, args.seed)
    mm_dir = build_mmsafetybench(args.data, args.out, args.limit, args.seed)
    judge = None
    if args.judge:
        from judge.model import Judge

        judge = Judge.load(args.judge)

    for kind, folder, extra in (("vlsbench", vls_dir, {"benchmark_data": args.data / "vlsbench_prompts.json"}),
                                ("mmsafetybench", mm_dir, {})):
        start = time.perf_counter()
        dataset = read_records(folder, **extra)
        seconds = time.perf_counter() - start
        print(f"\n== {kind}: {folder}")
        print(f"formats detected: {dict(Counter(dataset.formats.values()))}; scheme {dataset.scheme.name}; {dataset.summary()}")
        print(f"read {len(dataset.records)} records in {seconds:.2f} s ({len(dataset.records) / seconds:,.0f} records/s)")
        print("per model:", dict(sorted(Counter(r.model for r in dataset.records).items())))
        field = "category" if kind == "vlsbench" else "scenario"
        print(f"per {field}:", dict(sorted(Counter(getattr(r, field) for r in dataset.records).items())))
        teacher = [r.label for r in dataset.records]
        print(f"\n{kind} report from the teacher labels:\n{format_report(kind, benchmark_report(kind, dataset.records, teacher, dataset.scheme))}")

        labels, source = teacher, "teacher"
        if judge is not None:
            start = time.perf_counter()
            labels, source = [judge.scheme.to_binary(p.label) if kind == "mmsafetybench" and judge.scheme.name != "mmsafetybench"
                              else p.label for p in judge.predict(dataset.records)], "judge"
            print(f"\nscored in {time.perf_counter() - start:.1f} s")
            print(f"{kind} report from the judge:\n{format_report(kind, benchmark_report(kind, dataset.records, labels, dataset.scheme))}")

        back_dir = args.out / "write_back" / kind
        written = write_back(dataset.records, labels, dataset.scheme, back_dir)
        again = read_records(back_dir)
        relabelled = sum(c["relabelled"] for c in written.values())
        same_labels = [r.label for r in again.records] == labels
        same_rest = all(without_labels(json.loads(Path(src).read_text())) == without_labels(json.loads((back_dir / Path(src).name).read_text()))
                        for src in dataset.formats)
        identical = all(json.loads(Path(src).read_text()) == json.loads((back_dir / Path(src).name).read_text())
                        for src in dataset.formats)
        print(f"\nwrite-back of the {source} labels: {len(written)} files, {relabelled} entries relabelled; "
              f"re-read labels equal written: {same_labels}; other fields unchanged: {same_rest}; "
              f"files identical to the originals: {identical}")
        if not (same_labels and same_rest and (identical or source == "judge")):
            raise SystemExit(f"{kind}: round trip is not lossless")


if __name__ == "__main__":
    main()
