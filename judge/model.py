"""The Judge: a distilled student loaded from its artifact folder, and what it predicts.

One loader (`Judge.load`) returns a backend subclass; the base class batches, applies the
calibrated temperature and turns logits into labels. Backends implement only `_logits_batch`.
The CLI, the server and a notebook all go through this class.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from judge.errors import InputError
from judge.records import Record, record_from_row
from judge.schemes import Scheme
from judge.textio import JsonProblem, loads, read_bytes

ARTIFACT_FILE = "judge.json"
FORMAT_VERSION = 1
BACKENDS = {
    "transformer": "judge.backends.transformer:TransformerJudge",
    "lexical": "judge.backends.lexical:LexicalJudge",
    "probe": "judge.backends.probe:ProbeJudge",
    "ensemble": "judge.backends.ensemble:EnsembleJudge",
}


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]

    @property
    def confidence(self) -> float:
        return self.probs[self.label]


def probs_array(predictions: Sequence[Prediction], classes: Sequence[str]) -> np.ndarray:
    """The predictions' probabilities as an (n, classes) array, columns in `classes` order."""
    return np.array([[p.probs[c] for c in classes] for p in predictions], dtype=float).reshape(len(predictions), len(classes))


# Probability floor: the log of a probability of zero (a class an estimator never saw) stands for -inf.
FLOOR = 1e-9


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def floored_log(probs: np.ndarray) -> np.ndarray:
    """Probabilities back to logits (softmax's inverse up to a constant), a zero floored to FLOOR."""
    return np.log(np.clip(np.asarray(probs, dtype=float), FLOOR, 1.0))


class Judge:
    """A loaded judge. ``predict_proba`` columns follow ``classes_`` (the scheme's order)."""

    batch_size = 32
    meta_keys: tuple[str, ...] = ()  # what a backend reads from judge.json beyond kind, scheme and view

    def __init__(self, path: str | Path, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self.scheme = Scheme.from_dict(meta["scheme"])
        self.view: str = meta["view"]

    @property
    def classes_(self) -> tuple[str, ...]:
        return self.scheme.classes

    @property
    def temperature(self) -> float:
        return float(self.meta.get("calibration", {}).get("temperature", 1.0))

    @staticmethod
    def load(path: str | Path, **options) -> Judge:
        """Load any artifact folder written by `judge distill`. `options` go to the backend (a transformer
        judge takes ``device`` and ``dtype``)."""
        meta = read_meta(path)
        return backend_class(meta, path)(path, meta, **options)

    @staticmethod
    def without_model(path: str | Path) -> Judge:
        """The artifact's scheme, calibration and metadata with no weights loaded: what a driver that
        scores elsewhere (the Ray engine) needs for rates and escalation. It cannot predict, but its weight
        files are checked whole (`check_files`), so a damaged one is refused before any actor starts."""
        meta = read_meta(path)
        check_files(path)
        return Judge(path, meta)

    @classmethod
    def default_batch_size(cls, meta: dict, device_type: str) -> int:
        """Responses per batch on a device ("cpu" or "cuda"), known before loading (the Ray driver plans with it)."""
        return cls.batch_size

    def save_meta(self) -> None:
        """Rewrite judge.json (after calibration adds a temperature, say)."""
        write_meta(self.path, self.meta)

    def _logits_batch(self, records: Sequence[Record]) -> np.ndarray:
        raise NotImplementedError("this judge was opened without its model: use Judge.load to score")

    def logits(self, records: Sequence[Record | Mapping], *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """Uncalibrated scores, shape (n, n_classes); sorted by length inside so batches pad little."""
        records = as_records(records)
        out = np.zeros((len(records), len(self.classes_)))
        with tqdm(total=len(records), disable=not progress, unit="resp", desc="scoring") as bar:
            for chunk in length_sorted_batches(records, batch_size or self.batch_size):
                out[chunk] = self._logits_batch([records[i] for i in chunk])
                bar.update(len(chunk))
        return out

    def predict_proba(self, records: Sequence[Record], **kwargs) -> np.ndarray:
        return softmax(self.logits(records, **kwargs), self.temperature)

    def predict(self, records: Sequence[Record], **kwargs) -> list[Prediction]:
        probs = self.predict_proba(records, **kwargs)
        return [Prediction(self.classes_[int(row.argmax())], dict(zip(self.classes_, map(float, row)))) for row in probs]


def length_sorted_batches(records: Sequence[Record], size: int) -> list[list[int]]:
    """Indices of `records` in batches of similar length (little padding). Every engine batches with this,
    so a response is scored in the same batch, hence to the same bits, wherever it runs."""
    order = sorted(range(len(records)), key=lambda i: len(records[i].response) + len(records[i].question))
    return [order[start:start + size] for start in range(0, len(order), size)]


def row_key(record: Record) -> str:
    """A short hash of a row's id, question and response: `judge distill` records those of the rows it
    trained and validated on (``data.trained_row_keys``), so later steps recognise them."""
    text = "\x00".join([record.id, record.question, record.response])
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def seen_in_training(meta: dict, records: Sequence[Record]) -> list[Record]:
    """The `records` the artifact was trained or validated on (none found when it does not record them)."""
    keys = set((meta.get("data") or {}).get("trained_row_keys") or ())
    return [r for r in records if row_key(r) in keys]


def read_meta(path: str | Path) -> dict:
    """judge.json of an artifact folder, checked for its format version and for what loading it needs
    (a known kind, a scheme, a view): a damaged one is one InputError naming it, never a traceback."""
    meta_path = Path(path) / ARTIFACT_FILE
    if not meta_path.is_file():
        raise InputError(f"not a judge artifact (no {ARTIFACT_FILE})", path=path)

    def invalid(reason: str) -> InputError:
        return InputError(f"not a valid judge artifact ({reason})", path=meta_path)

    try:
        meta = loads(read_bytes(meta_path).decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid("not UTF-8 text") from None
    except JsonProblem as exc:
        raise invalid(str(exc)) from None
    if not isinstance(meta, dict):
        raise invalid(f"a JSON {type(meta).__name__}, not an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"artifact format {meta.get('format_version')} is not {FORMAT_VERSION}", path=meta_path)
    missing = [key for key in ("kind", "scheme", "view") if key not in meta]
    if missing:
        raise invalid(f"no {', '.join(missing)}")
    if meta["kind"] not in BACKENDS:
        raise invalid(f"unknown kind {meta['kind']!r}: one of {', '.join(BACKENDS)}")
    try:
        Scheme.from_dict(meta["scheme"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise invalid(f"unreadable scheme: {type(exc).__name__} {exc}") from None
    return meta


REPAIR = "copy the judge folder again, or re-run `judge distill`"


@contextmanager
def reading_artifact(path: str | Path, problem: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Load one file or folder of an artifact: ``errors`` (what a copy cut short or a file gone makes the loader
    raise) become one InputError naming it, saying what is wrong and how to get a whole one back."""
    try:
        yield
    except errors as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"{problem} ({type(exc).__name__}: {detail}): {REPAIR}", path=path) from None


def check_files(path: str | Path) -> None:
    """Refuse an artifact whose weight files are cut short or damaged, as loading them would, reading only what
    tells: each skops file's zip directory and checksums, each safetensors file's header."""
    for file in sorted(Path(path).rglob("*.skops")):
        with reading_artifact(file, "truncated or not a skops file", (zipfile.BadZipFile,)):
            with zipfile.ZipFile(file) as archive:
                damaged = archive.testzip()
            if damaged is not None:
                raise zipfile.BadZipFile(f"bad CRC-32 for {damaged}")
    for file in sorted(Path(path).rglob("*.safetensors")):
        with reading_artifact(file, "truncated or not a safetensors file", (SafetensorError,)):
            safe_open(file, framework="numpy")  # parses the header, which must cover the file


def backend_class(meta: dict, path: str | Path) -> type[Judge]:
    """The class that loads judge.json's kind, once the keys it reads are there: a hand-edited or half-written
    judge.json is one line, not a KeyError from deep in the backend (or in the Ray driver's batch sizing)."""
    module, _, cls = BACKENDS[meta["kind"]].partition(":")
    backend = getattr(importlib.import_module(module), cls)
    missing = [key for key in backend.meta_keys if key not in meta]
    if missing:
        raise InputError(f"not a valid judge artifact (no {', '.join(missing)} for a {meta['kind']} judge)",
                         path=Path(path) / ARTIFACT_FILE)
    return backend


def as_records(items: Sequence[Record | Mapping]) -> list[Record]:
    """Records as given; plain dicts (``{"question": ..., "response": ...}``) read like JSONL rows."""
    records = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, Record):
            records.append(item)
            continue
        try:
            records.append(record_from_row(item, source="<predict>", line=number))
        except ValueError as exc:
            raise InputError(str(exc), path="<predict>", line=number) from None
    return records


def write_meta(path: str | Path, meta: dict) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (ARTIFACT_FILE + ".tmp")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2, default=str), encoding="utf-8")
    tmp.replace(path / ARTIFACT_FILE)
