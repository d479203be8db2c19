"""Records: one model response to judge, read from JSONL with the field names benchmarks use.

Reading is strict by default: a malformed line, a missing response, an unknown label or a
duplicate id stops with an error naming the file and line. ``skip_invalid=True`` instead skips
such lines and lists every one of them in ``Dataset.skipped``; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from judge.errors import InputError
from judge.schemes import Scheme, detect_scheme, load_scheme
from judge.textio import iter_lines, loads

# Accepted input names per field, first match wins. Output keeps the user's own names.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "instruction_id", "question_id", "uid"),
    "question": ("question", "instruction", "prompt", "query"),
    "response": ("response", "pred_answer", "answer", "output", "completion"),
    "image_path": ("image_path", "image"),
    "image_description": ("image_description",),
    "category": ("category",),
    "sub_category": ("sub_category", "subcategory"),
    "scenario": ("scenario",),
    "model": ("model", "response_model"),
    "group": ("group", "prompt_group"),
    "label": ("label", "teacher_label", "safe_label", "label_str", "is_safe(gpt)"),
    "label_probs": ("label_probs", "teacher_probs"),
}
# A boolean (or 0/1) `unsafe` field is a binary label: true -> unsafe, false -> safe.
UNSAFE_FLAG_FIELDS = ("unsafe", "is_unsafe")


@dataclass
class Record:
    """One response to judge. `label` is the teacher's label, canonical in the dataset's scheme."""

    id: str
    response: str
    question: str = ""
    image_path: str | None = None
    image_description: str | None = None
    category: str | None = None
    sub_category: str | None = None
    scenario: str | None = None
    model: str | None = None
    group: str | None = None
    label: str | None = None
    label_probs: dict[str, float] | None = None
    raw: dict = field(default_factory=dict, repr=False)
    source: str = ""

    @property
    def prompt_group(self) -> str:
        """Responses to one prompt stay on one side of a split: the group, or the question text."""
        if self.group:
            return self.group
        text = self.question or self.id
        if self.image_path:
            text += "\x00" + self.image_path
        return "q:" + hashlib.blake2b(_squash(text).encode(), digest_size=8).hexdigest()


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


@dataclass
class Skipped:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class Dataset:
    """Records plus the scheme their labels are in, and an account of every line read."""

    records: list[Record]
    scheme: Scheme
    lines_read: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> list[Record]:
        return [r for r in self.records if r.label is not None]

    def summary(self) -> str:
        text = f"{self.lines_read} lines read, {len(self.records)} used, {len(self.skipped)} skipped"
        return "; ".join([text, *self.notes])


def _first(row: Mapping, names: Sequence[str]) -> tuple[str | None, object]:
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    return None, None


TEXT_FIELDS = ("question", "image_path", "image_description")  # must be strings; the other fields may be numbers


def _field(row: Mapping, name: str) -> str | None:
    """A field as text: a string, or for ids, models, groups and categories also a number; anything else is refused."""
    key, value = _first(row, FIELD_ALIASES[name])
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if name not in TEXT_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{key} must be a string{'' if name in TEXT_FIELDS else ' or a number'}, got {type(value).__name__}")


def raw_label(row: Mapping) -> object:
    """The teacher label as written in the row, before any scheme is applied."""
    _, value = _first(row, FIELD_ALIASES["label"])
    if value is not None:
        return value
    _, flag = _first(row, UNSAFE_FLAG_FIELDS)
    if flag is None:
        return None
    if flag in (True, 1, "1", "true", "True"):
        return "unsafe"
    if flag in (False, 0, "0", "false", "False"):
        return "safe"
    raise ValueError(f"field 'unsafe' must be true/false or 1/0, got {flag!r}")


def sources_of(records: Iterable[Record]) -> str | None:
    """The files `records` were read from, for an error about them as a whole."""
    return ", ".join(sorted({str(r.source) for r in records})) or None


def record_from_row(row: Mapping, *, source: str, line: int, label: str | None = None) -> Record:
    """Build a record from one input object; `label` is the already-parsed teacher label."""
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    _, response = _first(row, FIELD_ALIASES["response"])
    if response is None:
        raise ValueError(f"no response field (one of {', '.join(FIELD_ALIASES['response'])})")
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    rid = _field(row, "id")
    values = {name: _field(row, name)
              for name in ("image_path", "image_description", "category", "sub_category", "scenario", "model", "group")}
    _, probs = _first(row, FIELD_ALIASES["label_probs"])
    if probs is not None and not isinstance(probs, Mapping):
        raise ValueError("label_probs must be an object {label: probability}")
    return Record(
        id=rid if rid is not None else f"{Path(source).name}:{line}",
        response=response,
        question=_field(row, "question") or "",
        label=label,
        label_probs={str(k): float(v) for k, v in probs.items()} if probs else None,
        raw=dict(row),
        source=source,
        **values,
    )


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, object | Exception]]:
    """(line number, parsed object or the reason it is not one) for every non-blank line."""
    for number, text in iter_lines(path):
        if isinstance(text, Exception):
            yield number, text
            continue
        try:
            yield number, loads(text)
        except ValueError as exc:
            yield number, exc


def rows_from_jsonl(path: str | Path) -> Iterator[tuple[str, int, object | Exception]]:
    for number, row in iter_jsonl(path):
        yield str(path), number, row


def build_dataset(rows: Iterable[tuple[str, int, object | Exception]], *, scheme: str | Scheme | None = None,
                  label_field: str | None = None, require_labels: bool = False,
                  skip_invalid: bool = False, prefer_scheme: Scheme | None = None) -> Dataset:
    """Turn (source, line, row) triples into a checked Dataset.

    The scheme is named, or is `prefer_scheme` when every label fits it, or is detected from the
    labels. Errors name source and line; with ``skip_invalid`` they are collected in ``Dataset.skipped`` instead of raised.
    """
    rows = list(rows)
    skipped: list[Skipped] = []
    good: list[tuple[str, int, Mapping, object]] = []

    def reject(src: str, line: int, reason: str) -> None:
        if not skip_invalid:
            raise InputError(reason, path=src, line=line)
        skipped.append(Skipped(src, line, reason))

    for src, line, row in rows:
        if isinstance(row, Exception):
            reject(src, line, str(row))
            continue
        try:
            if not isinstance(row, Mapping):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            value = row.get(label_field) if label_field else raw_label(row)
        except ValueError as exc:
            reject(src, line, str(exc))
            continue
        if value is None and require_labels:
            reject(src, line, "no teacher label (field label, safe_label, label_str or unsafe)")
            continue
        good.append((src, line, row, value))

    labelled = [(src, line, value) for src, line, _, value in good if value is not None]
    if scheme is not None:
        resolved = load_scheme(scheme)
    elif prefer_scheme is not None and all(prefer_scheme.try_parse(v) is not None for _, _, v in labelled):
        resolved = prefer_scheme  # e.g. a judge's own (custom) scheme, when the file's labels fit it
    elif labelled:
        resolved = detect_scheme(labelled)
    else:
        resolved = load_scheme("vlsbench")

    records: list[Record] = []
    seen: dict[str, tuple[str, int]] = {}
    for src, line, row, value in good:
        try:
            label = resolved.parse(value) if value is not None else None
            record = record_from_row(row, source=src, line=line, label=label)
            if record.label_probs and set(record.label_probs) - set(resolved.classes):
                raise ValueError(f"label_probs has labels outside {resolved.name}: {sorted(record.label_probs)}")
        except ValueError as exc:
            reject(src, line, str(exc))
            continue
        if record.id in seen:
            first_src, first_line = seen[record.id]
            reject(src, line, f"duplicate id {record.id!r} (first at {first_src}:{first_line})")
            continue
        seen[record.id] = (src, line)
        records.append(record)
    order = {src: i for i, src in enumerate(dict.fromkeys(src for src, _, _ in rows))}
    skipped.sort(key=lambda s: (order.get(s.path, len(order)), s.line))  # file order, whichever check caught it
    return Dataset(records=records, scheme=resolved, lines_read=len(rows), skipped=skipped,
                   sources=sorted({src for src, _, _ in rows}))


def read_records(paths: str | Path | Sequence[str | Path], format: str | None = None,
                 benchmark_data: str | Path | None = None, model_name: str | None = None, **options) -> Dataset:
    """Read files, globs or folders of JSONL, CSV, VLSBench outputs or MM-SafetyBench answers into a
    Dataset (formats in `judge.formats`; see `build_dataset` for the options). A benchmark's own files
    fix the scheme to that benchmark's unless one is named."""
    from judge.formats import implied_scheme, read_rows

    rows, formats, unmatched = read_rows(paths, format, benchmark_data=benchmark_data, model_name=model_name)
    if options.get("scheme") is None:
        options["scheme"] = implied_scheme(list(formats.values()))
    dataset = build_dataset(rows, **options)
    if not dataset.records:  # an empty file, or every line skipped: nothing any command can do
        skipped = f" ({len(dataset.skipped)} lines skipped, the first: {dataset.skipped[0]})" if dataset.skipped else ""
        raise InputError(f"0 responses read{skipped}", path=", ".join(formats) or None)
    dataset.formats = formats
    if unmatched is not None:
        dataset.notes.append(f"{unmatched} found no match in {Path(benchmark_data).name}")
    return dataset


def write_jsonl(path: str | Path, rows: Iterable[Mapping]) -> int:
    """Write rows as JSONL atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
