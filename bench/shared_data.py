"""Real public data from ../shared/data as judge JSONL rows (for benchmarks only; tests never read it).

XSTest v2: GPT-4's labels (2023, temperature 0) on the unsafe-prompt rows are a real teacher's
labels in the Refuse / Warning / Unsafe scheme. GPTFuzz: human binary labels (safe / unsafe).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from judge.records import Dataset, build_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _read(name: str) -> list[dict]:
    path = SHARED / name
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmarks need ../shared/data beside the project")
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def xstest_gpt4_rows() -> list[dict]:
    """The 989 unsafe-prompt XSTest responses GPT-4 graded (label = GPT-4's label)."""
    return [{"id": r["id"], "question": r["prompt"], "response": r["response"], "category": r["category"],
             "model": r["response_model"], "group": r["group"], "label": r["label_gpt4"], "label_human": r["label_human"]}
            for r in _read("xstest_v2.jsonl") if r["prompt_type"] == "unsafe" and r["label_gpt4"]]


def gptfuzz_rows(max_groups: int | None = None, per_group: int | None = None, seed: int = 0) -> list[dict]:
    """GPTFuzz jailbreak responses with the human binary label; optionally a seeded sample of questions
    (prompt groups) and of responses per question, so every question weighs about the same."""
    rows = [{"id": r["id"], "question": r["prompt"], "response": r["response"], "model": r["response_model"],
             "group": r["group"], "label": "unsafe" if r["unsafe_binary"] else "safe"} for r in _read("gptfuzz.jsonl")]
    if max_groups is not None:
        groups = sorted({r["group"] for r in rows})
        keep = set(random.Random(seed).sample(groups, min(max_groups, len(groups))))
        rows = [r for r in rows if r["group"] in keep]
    if per_group is not None:
        by_group = defaultdict(list)
        for row in rows:
            by_group[row["group"]].append(row)
        rng = random.Random(seed)
        rows = [r for g in sorted(by_group) for r in rng.sample(by_group[g], min(per_group, len(by_group[g])))]
    return rows


def multimodal_shaped_rows(questions: int = 80, per_question: int = 25, models: int = 4) -> list[dict]:
    """Rows shaped like a multimodal benchmark's labelled sample, for timing only: GPTFuzz responses with their
    human labels, each question given one VLSBench item's category, sub-category and image description (unrelated
    to it), and the responses dealt round-robin to `models` names. Four views render differently, as on VLSBench
    or MM-SafetyBench; what the student learns from the borrowed context is noise, so only the time means anything."""
    rows = gptfuzz_rows(max_groups=questions, per_group=per_question)
    items = json.loads((SHARED / "vlsbench_prompts.json").read_text(encoding="utf-8"))
    groups = sorted({r["group"] for r in rows})
    context = {group: {key: items[i * (len(items) // len(groups))][key]
                       for key in ("category", "sub_category", "image_description")} for i, group in enumerate(groups)}
    return [{**row, "model": f"model-{i % models}", **context[row["group"]]} for i, row in enumerate(rows)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def dataset_of(rows: list[dict], source: str = "labels.jsonl", **options) -> Dataset:
    """The rows checked as the lines of a user's file `source` are (`build_dataset` and its options)."""
    return build_dataset([(source, line, row) for line, row in enumerate(rows, 1)], **options)
