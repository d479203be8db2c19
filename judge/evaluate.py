"""Reports as plain dicts: the benchmark's rates for a set of labels, and student-vs-teacher agreement.

Both return JSON-ready dicts so the CLI, the model card and a notebook render the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from judge.errors import InputError
from judge.metrics import agreement, bootstrap_rate_errors, group_by, rates
from judge.records import Record
from judge.schemes import Scheme

BREAKDOWNS = ("category", "sub_category", "scenario", "model")


def rate_summary(records: Sequence[Record], labels: Sequence[str], scheme: Scheme,
                 by: Sequence[str] = ("model", "category", "scenario"), *, probs: np.ndarray | None = None) -> dict:
    """The benchmark's own numbers (shares per label and the headline rate), overall and per field;
    given the student's probabilities, the shares are their means (see `judge.metrics.rates`)."""
    def shares(rows):
        return rates([labels[i] for i in rows], scheme.classes, scheme.rate_labels,
                     None if probs is None else probs[rows])

    everything = list(range(len(records)))
    summary = {"scheme": scheme.name, "rate_name": scheme.rate, "estimated_by": _estimated_by(probs),
               "overall": shares(everything), "by": {}}
    for field in by:
        groups = group_by([getattr(r, field) for r in records], everything)
        if groups:
            summary["by"][field] = {key: shares(rows) for key, (rows,) in groups.items()}
    return summary


def _estimated_by(probs: np.ndarray | None) -> str:
    return "share of top labels" if probs is None else "mean student probability"


def benchmark_view(records: Sequence[Record], predicted: Sequence[str], scheme: Scheme, field: str = "model", *,
                   probs: np.ndarray | None = None, seed: int = 0, ranking: bool = True) -> dict:
    """Per response model: teacher and student rates side by side, the student's error (student - teacher)
    with a paired 95% bootstrap interval over prompt groups, and Kendall's tau between the two rankings of
    models with its interval. This is the table a user pastes into a paper, and how far to trust it.

    Given the student's probabilities (columns in scheme order), its rate is their mean, not the share of
    its top labels: far less biased on models whose answers it is unsure of (`judge.metrics.rates`).
    `ranking=False` leaves Kendall's tau out (None), and with it nearly all of the bootstrap's cost."""
    keyed = [i for i, r in enumerate(records) if getattr(r, field) is not None]
    empty = {"field": field, "rate_name": scheme.rate, "rows": {}, "kendall_tau": None, "max_abs_error": None}
    if not keyed:
        return empty
    probs = None if probs is None else np.asarray(probs)
    student_in = (np.array([p in scheme.rate_labels for p in predicted], dtype=float) if probs is None
                  else scheme.rate_probability(probs))
    keys = [str(getattr(records[i], field)) for i in keyed]
    boot = bootstrap_rate_errors(keys, [records[i].label in scheme.rate_labels for i in keyed], student_in[keyed],
                                 [records[i].prompt_group for i in keyed], seed=seed, ranking=ranking)
    rows = {}
    for key, (members,) in group_by(keys, keyed).items():
        t = rates([records[i].label for i in members], scheme.classes, scheme.rate_labels)
        s = rates([predicted[i] for i in members], scheme.classes, scheme.rate_labels,
                  None if probs is None else probs[members])
        error, error_ci = boot["errors"][key]
        rows[key] = {"n": t["n"], "groups": len({records[i].prompt_group for i in members}), "teacher": t,
                     "student": s, "error": error, "error_ci": error_ci, "abs_error": abs(error)}
    tau = boot["kendall_tau"]
    return {**empty, "rows": rows, "student_rate": _estimated_by(probs),
            "kendall_tau": None if tau is None else tau[0], "kendall_tau_ci": None if tau is None else tau[1],
            "interval": "paired 95% percentile bootstrap over prompt groups",
            "max_abs_error": max(r["abs_error"] for r in rows.values())}


def evaluate(records: Sequence[Record], predicted: Sequence[str], scheme: Scheme, *, probs: np.ndarray | None = None,
             by: Sequence[str] = BREAKDOWNS, n_boot: int = 1000, seed: int = 0) -> dict:
    """Agreement of `predicted` (student) with each record's `label` (teacher), overall and per field;
    with the student's `probs`, its rates are their means (see `benchmark_view`)."""
    teacher = [r.label for r in records]
    groups = [r.prompt_group for r in records]
    report = {
        "scheme": scheme.name,
        "overall": agreement(teacher, predicted, scheme.classes, groups=groups, safe_labels=scheme.safe_labels,
                             n_boot=n_boot, seed=seed),
        "by": {},
        "rates": {"teacher": rates(teacher, scheme.classes, scheme.rate_labels),
                  "student": rates(predicted, scheme.classes, scheme.rate_labels, probs), "rate_name": scheme.rate,
                  "student_rate": _estimated_by(probs)},
    }
    by_boot = min(n_boot, 200)  # a breakdown has many cells: fewer resamples each
    for field in by:
        split = group_by([getattr(r, field) for r in records], teacher, list(predicted), groups)
        if split:
            report["by"][field] = {key: agreement(t, p, scheme.classes, groups=g, safe_labels=scheme.safe_labels,
                                                  n_boot=by_boot, seed=seed)
                                   for key, (t, p, g) in split.items()}
    if report["by"]:
        report["by_interval"] = f"percentile bootstrap over the prompt groups within each, {by_boot} resamples"
    if any(r.model for r in records):
        report["benchmark_view"] = benchmark_view(records, predicted, scheme, probs=probs, seed=seed)
    return report


def load_pairs(scored: str, reference: str | None = None, *, scheme: str | Scheme | None = None, as_binary: bool = False,
               **read_options) -> tuple[list[Record], list[str], Scheme, dict, np.ndarray | None]:
    """Teacher-labelled records, the student's labels for them (joined on id) and, where the scored file
    has them, the student's probabilities in the scheme's class order (else None).

    The student's labels are ``judge_label`` in the scored file and its probabilities ``judge_probs``;
    the teacher's are the labels of the reference file, or, without one, the teacher labels the scored
    rows still carry. ``read_options`` (format, benchmark_data, model_name) apply to the teacher's side.

    ``as_binary`` evaluates a judge of any scheme against safe / unsafe references: a reference file
    is read in the binary scheme (unless `scheme` names another), and both sides are collapsed
    through their own scheme's safe mapping (`Scheme.to_binary`), so the pairs are in `BINARY`.
    """
    from dataclasses import replace

    from judge.records import read_records
    from judge.schemes import BINARY

    students = _student_side(scored, None if as_binary else scheme)
    ref = read_records(reference or scored, scheme=scheme or (BINARY if as_binary and reference else None),
                       prefer_scheme=None if as_binary else students.scheme, **read_options)
    if not as_binary and ref.scheme.name != students.scheme.name:  # the same scheme on both sides, or a clear error
        students = read_records(scored, scheme=ref.scheme, label_field="judge_label")
    predicted = {r.id: students.scheme.to_binary(r.label) if as_binary else r.label
                 for r in students.records if r.label is not None}
    records = [replace(r, label=ref.scheme.to_binary(r.label)) if as_binary else r
               for r in ref.labelled if r.id in predicted]
    resolved = BINARY if as_binary else ref.scheme
    probs = _paired_probs([r.id for r in records], students, resolved.classes,
                         students.scheme.to_binary if as_binary else str)
    info = {"scored": len(students.records), "reference_labelled": len(ref.labelled), "paired": len(records),
            "unpaired_reference": len(ref.labelled) - len(records)}
    return records, [predicted[r.id] for r in records], resolved, info, probs


def _student_side(scored: str, scheme: str | Scheme | None):
    """The scored file read with the student's own scheme: the one its ``judge_probs`` name, where labels alone
    are ambiguous (a binary judge that called everything unsafe reads as VLSBench by its labels)."""
    from judge.records import read_records
    from judge.schemes import builtin_with_classes

    students = read_records(scored, scheme=scheme, label_field="judge_label")
    probs = next((r.raw.get("judge_probs") for r in students.records if isinstance(r.raw.get("judge_probs"), dict)), None)
    if scheme is None and probs and set(probs) != set(students.scheme.classes):
        named = builtin_with_classes(probs)
        if named is not None:
            students = read_records(scored, scheme=named, label_field="judge_label")
    return students


def _paired_probs(ids: Sequence[str], students, classes: Sequence[str], collapse) -> np.ndarray | None:
    """The ``judge_probs`` `judge score` wrote for `ids`, one column per class (each the sum of the student's
    classes that `collapse` maps to it); None where a row has none (a file another tool wrote)."""
    by_id = {r.id: r for r in students.records}
    found = [by_id[i].raw.get("judge_probs") for i in ids]
    if not found or not all(isinstance(p, dict) and p for p in found):
        return None
    expected = set(students.scheme.classes)
    for i, p in zip(ids, found):
        if set(p) != expected:
            raise InputError(f"id {i!r}: judge_probs has classes {sorted(p)}, the {students.scheme.name} scheme "
                             f"{sorted(expected)}", path=by_id[i].source or None)
    return np.array([[sum(float(v) for k, v in p.items() if collapse(k) == c) for c in classes] for p in found])
