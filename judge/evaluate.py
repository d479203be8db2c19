"""Reports as plain dicts: the benchmark's rates for a set of labels, and student-vs-teacher agreement.

Both return JSON-ready dicts so the CLI, the model card and a notebook render the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from judge.metrics import agreement, bootstrap_rate_errors, group_by, rates
from judge.records import Record
from judge.schemes import Scheme

BREAKDOWNS = ("category", "sub_category", "scenario", "model")


def rate_summary(records: Sequence[Record], labels: Sequence[str], scheme: Scheme,
                 by: Sequence[str] = ("model", "category", "scenario")) -> dict:
    """The benchmark's own numbers (shares per label and the headline rate), overall and per field."""
    summary = {"scheme": scheme.name, "rate_name": scheme.rate,
               "overall": rates(labels, scheme.classes, scheme.rate_labels), "by": {}}
    for field in by:
        groups = group_by([getattr(r, field) for r in records], labels)
        if groups:
            summary["by"][field] = {key: rates(values, scheme.classes, scheme.rate_labels) for key, (values,) in groups.items()}
    return summary


def benchmark_view(records: Sequence[Record], predicted: Sequence[str], scheme: Scheme, field: str = "model", *,
                   seed: int = 0) -> dict:
    """Per response model: teacher and student rates side by side, the student's error (student - teacher)
    with a paired 95% bootstrap interval over prompt groups, and Kendall's tau between the two rankings of
    models with its interval. This is the table a user pastes into a paper, and how far to trust it."""
    rows = {}
    keyed = [(str(getattr(r, field)), r, p) for r, p in zip(records, predicted) if getattr(r, field) is not None]
    if not keyed:
        return {"field": field, "rate_name": scheme.rate, "rows": {}, "kendall_tau": None, "max_abs_error": None}
    in_rate = set(scheme.rate_labels)
    boot = bootstrap_rate_errors([k for k, _, _ in keyed], [r.label in in_rate for _, r, _ in keyed],
                                 [p in in_rate for _, _, p in keyed], [r.prompt_group for _, r, _ in keyed], seed=seed)
    groups = group_by([k for k, _, _ in keyed], [r.label for _, r, _ in keyed], [p for _, _, p in keyed])
    for key, (teacher, student) in groups.items():
        t = rates(teacher, scheme.classes, scheme.rate_labels)
        s = rates(student, scheme.classes, scheme.rate_labels)
        error, error_ci = boot["errors"][key]
        rows[key] = {"n": t["n"], "teacher": t, "student": s, "error": error, "error_ci": error_ci,
                     "abs_error": abs(error)}
    tau = boot["kendall_tau"]
    return {"field": field, "rate_name": scheme.rate, "rows": rows,
            "kendall_tau": None if tau is None else tau[0], "kendall_tau_ci": None if tau is None else tau[1],
            "interval": "paired 95% percentile bootstrap over prompt groups",
            "max_abs_error": max(r["abs_error"] for r in rows.values())}


def evaluate(records: Sequence[Record], predicted: Sequence[str], scheme: Scheme, *,
             by: Sequence[str] = BREAKDOWNS, n_boot: int = 1000, seed: int = 0) -> dict:
    """Agreement of `predicted` (student) with each record's `label` (teacher), overall and per field."""
    teacher = [r.label for r in records]
    groups = [r.prompt_group for r in records]
    report = {
        "scheme": scheme.name,
        "overall": agreement(teacher, predicted, scheme.classes, groups=groups, safe_labels=scheme.safe_labels,
                             n_boot=n_boot, seed=seed),
        "by": {},
        "rates": {"teacher": rates(teacher, scheme.classes, scheme.rate_labels),
                  "student": rates(predicted, scheme.classes, scheme.rate_labels), "rate_name": scheme.rate},
    }
    for field in by:
        split = group_by([getattr(r, field) for r in records], teacher, list(predicted), groups)
        if split:
            report["by"][field] = {key: agreement(t, p, scheme.classes, groups=g, safe_labels=scheme.safe_labels,
                                                  n_boot=min(n_boot, 200), seed=seed)
                                   for key, (t, p, g) in split.items()}
    if any(r.model for r in records):
        report["benchmark_view"] = benchmark_view(records, predicted, scheme, seed=seed)
    return report


def load_pairs(scored: str, reference: str | None = None, *, scheme: str | Scheme | None = None,
               as_binary: bool = False, **read_options) -> tuple[list[Record], list[str], Scheme, dict]:
    """Teacher-labelled records and the student's labels for them, joined on id.

    The student's labels are ``judge_label`` in the scored file; the teacher's are the labels of the
    reference file, or, without one, the teacher labels the scored rows still carry. ``read_options``
    (format, benchmark_data, model_name) apply to the teacher's side.

    ``as_binary`` evaluates a judge of any scheme against safe / unsafe references: a reference file
    is read in the binary scheme (unless `scheme` names another), and both sides are collapsed
    through their own scheme's safe mapping (`Scheme.to_binary`), so the pairs are in `BINARY`.
    """
    from dataclasses import replace

    from judge.records import read_records
    from judge.schemes import BINARY

    ref = read_records(reference or scored, scheme=scheme or (BINARY if as_binary and reference else None), **read_options)
    students = read_records(scored, scheme=None if as_binary else ref.scheme, label_field="judge_label")
    predicted = {r.id: students.scheme.to_binary(r.label) if as_binary else r.label
                 for r in students.records if r.label is not None}
    records = [replace(r, label=ref.scheme.to_binary(r.label)) if as_binary else r
               for r in ref.labelled if r.id in predicted]
    info = {"scored": len(students.records), "reference_labelled": len(ref.labelled), "paired": len(records),
            "unpaired_reference": len(ref.labelled) - len(records)}
    return records, [predicted[r.id] for r in records], BINARY if as_binary else ref.scheme, info
