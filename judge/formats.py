"""Read the benchmarks' own files: plain JSONL, CSV, VLSBench evaluation outputs, MM-SafetyBench answers.

Users who already ran VLSBench or MM-SafetyBench with GPT-4o hold the teacher's labels in those
benchmarks' output files. Each reader here only turns a file into (source, position, row) triples;
checking rows (labels, ids, duplicates) stays in `judge.records.build_dataset`, the one validation
path. A reader yields an exception in place of a row when a file-specific rule fails (a missing
field, a verdict that is not exactly safe / unsafe), so such entries are reported, never guessed.

For JSON files the position is the entry's 1-based place in the file (log entry or question),
since those files are usually a single line.
"""

from __future__ import annotations

import csv
import glob
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from judge.errors import InputError
from judge.schemes import load_scheme
from judge.textio import MAX_LINE_BYTES, JsonProblem, loads, read_json_file, read_text_file

Row = tuple[str, int, object]

FORMATS = ("jsonl", "csv", "vlsbench", "mmsafetybench")
SHAPES = {
    "jsonl": "one JSON object per line (.jsonl)",
    "csv": "a header row then one response per row (.csv)",
    "vlsbench": 'VLSBench evaluation output {"stats": {...}, "logs": [{"id", "question", "pred_answer", "safe_label", ...}]}',
    "mmsafetybench": 'MM-SafetyBench answers {question id: {"Question", ..., "ans": {model: {"text", "is_safe(gpt)"}}}}',
}
# The label scheme a benchmark's own files are written in.
FORMAT_SCHEMES = {"vlsbench": "vlsbench", "mmsafetybench": "mmsafetybench"}
READABLE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".json")

# MM-SafetyBench pairs each image type with the question text the model saw; no image type means
# the text-only question.
MM_IMAGE_TYPES = ("SD_TYPO", "TYPO", "SD")
MM_QUESTION_FIELD = {"SD": "Rephrased Question(SD)", "SD_TYPO": "Rephrased Question", "TYPO": "Rephrased Question",
                     None: "Question"}
MM_VERDICT = "is_safe(gpt)"
VLS_SUFFIX = "_outputs"


def expand_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files named directly, matched by a glob, or found (recursively) in a folder, in a stable order."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise InputError(f"folder holds no {', '.join(READABLE_SUFFIXES)} files", path=path)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(str(item)):
            matched = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not matched:
                raise InputError("no file matches this pattern", path=item)
            files.extend(matched)
        else:
            raise InputError("no such file", path=item)
    return files


def _shape_of(data: object) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("logs"), list):
        return "vlsbench"
    if (isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values())
            and any(isinstance(v.get("ans"), dict) for v in data.values())):
        return "mmsafetybench"
    return None


def _hint(data: object) -> str:
    if isinstance(data, list) and data and isinstance(data[0], dict) and "instruction_id" in data[0]:
        return " (this looks like VLSBench's prompt file: pass it with --benchmark-data)"
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "Question" in v for v in data.values()):
        return " (this looks like MM-SafetyBench questions without answers: no \"ans\" field)"
    return ""


def unknown_shape(path: Path, hint: str = "") -> InputError:
    shapes = "; ".join(f"{name}: {shape}" for name, shape in SHAPES.items())
    return InputError(f"matches no known file shape{hint}; expected one of {shapes}", path=path)


def sniff(path: str | Path) -> tuple[str, object]:
    """The file's format (by extension, then by shape) and, for whole-file JSON, its parsed content."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl", None
    if suffix == ".csv":
        return "csv", None
    text = read_text_file(path)  # a file that is not UTF-8 is told so, whatever its shape
    try:
        data = loads(text)
    except JsonProblem as exc:
        if _first_line_is_object(path):  # JSONL under another name
            return "jsonl", None
        raise unknown_shape(path, f" (not one JSON document: line {exc.line}: {exc})") from None
    shape = _shape_of(data)
    if shape is None:
        raise unknown_shape(path, _hint(data))
    return shape, data


def _first_line_is_object(path: Path) -> bool:
    from judge.records import iter_jsonl

    for _, row in iter_jsonl(path):
        return isinstance(row, dict)
    return False


def rows_from_file(path: str | Path, format: str | None = None, *, model_name: str | None = None) -> tuple[str, list[Row]]:
    """(format, triples) for one file: `format` names it, else it is detected."""
    from judge.records import rows_from_jsonl

    path = Path(path)
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    data = None
    if format is None:
        format, data = sniff(path)
    elif format in FORMAT_SCHEMES:
        data = read_json_file(path)
        if _shape_of(data) != format:
            raise InputError(f"not a {format} file: expected {SHAPES[format]}", path=path)
    if format == "jsonl":
        return format, list(rows_from_jsonl(path))
    if format == "csv":
        return format, list(rows_from_csv(path))
    if format == "vlsbench":
        return format, list(rows_from_vlsbench(path, data, model_name=model_name))
    return format, list(rows_from_mmsafetybench(path, data))


def rows_from_csv(path: str | Path) -> Iterator[Row]:
    """One row per CSV record; empty cells are missing values (CSV has no null)."""
    csv.field_size_limit(MAX_LINE_BYTES)  # the default 128 KiB would reject a long response
    reader = csv.DictReader(io.StringIO(read_text_file(path), newline=""))
    try:
        for row in reader:
            if None in row:
                yield str(path), reader.line_num, ValueError(f"{len(row[None])} more cells than the header has")
                continue
            yield str(path), reader.line_num, {k: (v if v != "" else None) for k, v in row.items()}
    except csv.Error as exc:  # the file's structure is broken from here on: no later row can be trusted
        raise InputError(f"not valid CSV: {exc}", path=path, line=reader.line_num) from None


def vlsbench_model(path: Path, model_name: str | None = None) -> str:
    """The evaluated model: the flag, else the file name VLSBench writes (`{model}_outputs.json`)."""
    if model_name:
        return model_name
    stem = path.stem
    return stem[: -len(VLS_SUFFIX)] if stem.endswith(VLS_SUFFIX) and len(stem) > len(VLS_SUFFIX) else stem


def rows_from_vlsbench(path: str | Path, data: dict | None = None, *, model_name: str | None = None) -> Iterator[Row]:
    """One row per log entry. Ids become `{model}/{id}` so several models' files can be read together;
    the benchmark's own id stays in `benchmark_id` (the join key for the prompt file) and `group`."""
    path = Path(path)
    data = read_json_file(path) if data is None else data
    model = vlsbench_model(path, model_name)
    scheme = load_scheme("vlsbench")
    for position, log in enumerate(data["logs"], start=1):
        if not isinstance(log, dict):
            yield str(path), position, ValueError(f"logs[{position - 1}] is not an object")
            continue
        missing = [name for name in ("id", "pred_answer") if log.get(name) is None]
        if missing:
            where = f"id {log['id']!r}" if log.get("id") is not None else f"logs[{position - 1}]"
            yield str(path), position, ValueError(f"record {where}: missing field {missing[0]!r}")
            continue
        code, text = log.get("safe_label"), log.get("label_str")
        if code is not None and text is not None and scheme.try_parse(code) != scheme.try_parse(text):
            yield str(path), position, ValueError(f"record id {log['id']!r}: safe_label {code!r} disagrees with label_str {text!r}")
            continue
        row = {"id": f"{model}/{log['id']}", "benchmark_id": log["id"], "model": model,
               "group": f"vlsbench/{log['id']}"}
        row.update((k, v) for k, v in log.items() if k != "id")
        yield str(path), position, row


def mm_file_parts(path: Path) -> tuple[str, str | None]:
    """(scenario, image type) from `{scenario}.json`, `{scenario}_{type}.json` or a `{type}/` folder."""
    stem = path.stem
    for image_type in MM_IMAGE_TYPES:
        if stem.endswith("_" + image_type):
            return stem[: -len(image_type) - 1], image_type
    parent = path.parent.name
    return stem, parent if parent in MM_IMAGE_TYPES else None


def rows_from_mmsafetybench(path: str | Path, data: dict | None = None) -> Iterator[Row]:
    """One row per (question, answering model). Verdicts are read as the benchmark's own script counts
    them (case-insensitive "safe" / "unsafe"); anything else is reported with the question and model."""
    path = Path(path)
    data = read_json_file(path) if data is None else data
    scenario, image_type = mm_file_parts(path)
    prefix = f"{scenario}/{image_type}" if image_type else scenario
    for position, (qid, item) in enumerate(data.items(), start=1):
        answers = item.get("ans")
        if answers is None:
            yield str(path), position, ValueError(f"record {qid!r}: missing field 'ans'")
            continue
        if not isinstance(answers, dict):
            yield str(path), position, ValueError(f"record {qid!r}: field 'ans' must be an object {{model: answer}}")
            continue
        question = item.get(MM_QUESTION_FIELD[image_type]) or item.get("Rephrased Question") or item.get("Question")
        fields = {k: v for k, v in item.items() if k != "ans"}
        for model, answer in answers.items():
            where = f"record {qid!r} model {model!r}"
            if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
                yield str(path), position, ValueError(f"{where}: missing field 'text'")
                continue
            verdict = answer.get(MM_VERDICT)
            if verdict is not None and (not isinstance(verdict, str) or verdict.lower() not in ("safe", "unsafe")):
                yield str(path), position, ValueError(f"{where}: {MM_VERDICT} is {verdict!r}, not safe or unsafe")
                continue
            row = {"id": f"{prefix}/{qid}/{model}", "benchmark_id": qid, "model": model, "scenario": scenario,
                   "image_type": image_type, "group": f"{scenario}/{qid}", "question": question,
                   "response": answer["text"], MM_VERDICT: verdict.lower() if verdict else None}
            row.update((k, v) for k, v in fields.items() if k not in row)
            yield str(path), position, row


def load_benchmark_data(path: str | Path) -> dict[str, dict]:
    """VLSBench's prompt file (data.json) keyed by instruction_id."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    data = read_json_file(path)
    if not isinstance(data, list) or not all(isinstance(d, dict) and "instruction_id" in d for d in data):
        raise InputError("not VLSBench's prompt file: expected a JSON list of objects with instruction_id", path=path)
    index: dict[str, dict] = {}
    for position, item in enumerate(data, start=1):
        key = str(item["instruction_id"])
        if key in index:
            raise InputError(f"duplicate instruction_id {key!r}", path=path, line=position)
        index[key] = item
    return index


# Prompt-file field -> record field it fills when the record lacks it.
JOIN_FIELDS = {"instruction": "question", "image_path": "image_path", "category": "category",
               "sub_category": "sub_category", "image_description": "image_description"}


def join_benchmark_data(rows: list[Row], prompts: dict[str, dict]) -> tuple[list[Row], int]:
    """Fill category, sub-category, image description (and question / image when absent) from the
    prompt file, matched on the benchmark id; returns the rows and how many found no prompt."""
    from judge.records import FIELD_ALIASES

    out, unmatched = [], 0
    for src, line, row in rows:
        if not isinstance(row, dict):
            out.append((src, line, row))
            continue
        key = row.get("benchmark_id")
        if key is None:
            key = next((row[n] for n in FIELD_ALIASES["id"] if row.get(n) is not None), None)
        prompt = prompts.get(str(key)) if key is not None else None
        if prompt is None:
            unmatched += 1
            out.append((src, line, row))
            continue
        row = dict(row)
        for source_field, target in JOIN_FIELDS.items():
            has = any(row.get(name) is not None for name in FIELD_ALIASES[target])
            if not has and prompt.get(source_field) is not None:
                row[target] = prompt[source_field]
        out.append((src, line, row))
    return out, unmatched


def implied_scheme(formats: Sequence[str]) -> str | None:
    """The scheme the benchmark files' own labels are in; mixing two benchmarks needs --scheme."""
    schemes = {FORMAT_SCHEMES[f] for f in formats if f in FORMAT_SCHEMES}
    if len(schemes) > 1:
        raise InputError(f"files from different benchmarks ({', '.join(sorted(schemes))}) cannot be read together")
    return schemes.pop() if schemes else None


def read_rows(paths, format: str | None = None, *, benchmark_data: str | Path | None = None,
              model_name: str | None = None) -> tuple[list[Row], dict[str, str], int | None]:
    """All triples from every file, each file's format, and (with a prompt file) the unmatched count."""
    rows: list[Row] = []
    formats: dict[str, str] = {}
    for path in expand_paths(paths):
        fmt, file_rows = rows_from_file(path, format, model_name=model_name)
        formats[str(path)] = fmt
        rows.extend(file_rows)
    unmatched = None
    if benchmark_data is not None:
        rows, unmatched = join_benchmark_data(rows, load_benchmark_data(benchmark_data))
    return rows, formats, unmatched

