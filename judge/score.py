"""Scoring: a judge's labels for a dataset, written back onto the user's own rows.

Each output row is the input row unchanged plus ``judge_label``, ``judge_label_code``,
``judge_probs`` and ``judge_source`` (``student``, or ``teacher`` for escalated items; rows due for
the teacher also get ``judge_teacher_status``), so a scored file can be read again by `judge eval`
or any downstream tool.
"""

from __future__ import annotations

from collections.abc import Sequence

from judge.errors import InputError
from judge.model import Judge, Prediction
from judge.records import Record

OUTPUT_FIELDS = ("judge_label", "judge_label_code", "judge_probs", "judge_source", "judge_teacher_status")
ENGINES = ("local", "ray")


def scored_row(record: Record, prediction: Prediction, judge: Judge, source: str = "student") -> dict:
    row = {k: v for k, v in record.raw.items() if k not in OUTPUT_FIELDS}
    row.update(judge_label=prediction.label, judge_label_code=judge.scheme.label(prediction.label).code,
               judge_probs={k: round(v, 6) for k, v in prediction.probs.items()}, judge_source=source)
    return row


def score_records(judge: Judge, records: Sequence[Record], *, batch_size: int | None = None,
                  progress: bool = False) -> tuple[list[dict], list[Prediction]]:
    predictions = judge.predict(records, batch_size=batch_size, progress=progress)
    return [scored_row(r, p, judge) for r, p in zip(records, predictions)], predictions


def open_judge(path, engine: str = "local") -> Judge:
    """The judge an engine's driver needs: loaded to score here, or only described when actors score elsewhere."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    return Judge.load(path) if engine == "local" else Judge.without_model(path)


def score_with_engine(judge: Judge, records: Sequence[Record], engine: str = "local", *, batch_size: int | None = None,
                      address: str | None = None, workers: int | None = None,
                      progress: bool = False) -> tuple[list[dict], list[Prediction]]:
    """`score_records` run in this process (local) or by a Ray cluster's actors (ray): the same rows either way."""
    if engine == "ray":
        from judge.ray_engine import score_records_ray

        return score_records_ray(judge.path, records, batch_size=batch_size, address=address, workers=workers)
    if address is not None or workers is not None:
        raise InputError("--address and --workers need --engine ray")
    return score_records(judge, records, batch_size=batch_size, progress=progress)
