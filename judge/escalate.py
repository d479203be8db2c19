"""Escalation: keep the student's label when it is confident, send the rest to the teacher.

The coverage / agreement curve says, for each confidence threshold, how well the mixed labels
(student above the threshold, teacher below) agree with the teacher and what share still costs a
teacher call. The threshold that reaches a target kappa on calibration data goes into judge.json
``meta["escalation"]``; `judge score --target-kappa` then escalates below it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from judge.calibrate import label_indices
from judge.errors import InputError
from judge.metrics import accuracy_from_confusion, bootstrap_kappa, bootstrap_share, kappa_from_confusion
from judge.model import Judge, Prediction, softmax
from judge.records import Record, file_sha256
from judge.score import scored_row
from judge.splits import grouped_folds

DEFAULT_COST_PER_CALL = 0.005  # USD, about one GPT-4o call with a rubric and a response


def escalation_curve(confidence: Sequence[float], student: Sequence[int], teacher: Sequence[int],
                     n_classes: int) -> list[dict]:
    """Every distinct threshold t: items with confidence >= t keep the student's label, the rest the
    teacher's; kappa of that mix against the teacher and the share escalated. Sorted by share escalated.

    `student` and `teacher` are class indices. One pass: each item moved from the teacher to the
    student changes one cell of the running confusion matrix.

    >>> [(p["threshold"], p["escalated"], round(p["kappa"], 3))
    ...  for p in escalation_curve([0.9, 0.8, 0.6, 0.6], [0, 1, 1, 0], [0, 1, 0, 1], 2)]
    [(0.6, 0, 0.0), (0.8, 2, 1.0), (0.9, 3, 1.0)]
    """
    confidence = np.asarray(confidence, dtype=float)
    student, teacher = np.asarray(student), np.asarray(teacher)
    n = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (teacher, teacher), 1)
    points = []
    for kept, i in enumerate(order, start=1):
        cm[teacher[i], teacher[i]] -= 1
        cm[teacher[i], student[i]] += 1
        if kept == n or confidence[order[kept]] < confidence[i]:
            points.append({"threshold": float(confidence[i]), "kept": kept, "escalated": n - kept,
                           "escalated_share": (n - kept) / n, "kappa": kappa_from_confusion(cm),
                           "accuracy": accuracy_from_confusion(cm)})
    return points[::-1]


def choose_threshold(curve: Sequence[dict], target_kappa: float) -> dict | None:
    """The point with the fewest escalations whose kappa reaches `target_kappa` (None: no threshold
    does, so every item must go to the teacher)."""
    reaching = [p for p in curve if p["kappa"] == p["kappa"] and p["kappa"] >= target_kappa]
    return min(reaching, key=lambda p: p["escalated"]) if reaching else None


def cost_summary(escalated_share: float, cost_per_call: float, per: int = 1000) -> dict:
    """Teacher cost per `per` items: all by the teacher, with escalation, and the saving."""
    return {"per_items": per, "cost_per_call": cost_per_call, "teacher_only": per * cost_per_call,
            "with_escalation": per * escalated_share * cost_per_call,
            "saved": per * (1 - escalated_share) * cost_per_call}


def escalation_plan(judge: Judge, records: Sequence[Record], target_kappa: float, *,
                    logits: np.ndarray | None = None, cost_per_call: float = DEFAULT_COST_PER_CALL,
                    source: str | Path | None = None) -> dict:
    """Curve and chosen threshold on teacher-labelled `records`, and the rule checked out of fold, stored in
    ``judge.meta["escalation"]``.

    Confidences use the judge's current temperature, so calibrate first. Call ``judge.save_meta()``
    to keep the threshold in the artifact.
    """
    y = label_indices(records, judge.classes_)
    logits = judge.logits(records) if logits is None else np.asarray(logits)
    probs = softmax(logits, judge.temperature)
    confidence, student = probs.max(axis=1), probs.argmax(axis=1)
    curve = escalation_curve(confidence, student, y, len(judge.classes_))
    chosen = choose_threshold(curve, target_kappa)
    share = chosen["escalated_share"] if chosen else 1.0
    plan = {
        "target_kappa": target_kappa,
        "threshold": chosen["threshold"] if chosen else None,
        "escalated_share": share,
        "kappa": chosen["kappa"] if chosen else 1.0,
        "student_kappa": curve[0]["kappa"],
        "cost_saved_share": 1 - share,
        "cost": cost_summary(share, cost_per_call),
        "temperature": judge.temperature,
        "n": int(len(y)),
        "out_of_fold": out_of_fold_escalation(records, confidence, student, y, len(judge.classes_), target_kappa),
        "source": str(source) if source else None,
        "source_sha256": file_sha256(source) if source and Path(source).is_file() else None,
    }
    # thresholds at full precision: a confident student's confidences differ from 1 (and from each other) by
    # less than 1e-6, so a rounded curve re-chose 1.0, every item, for any other target kappa
    judge.meta["escalation"] = {**plan, "exact_thresholds": True,
                                "curve": [[p["threshold"], round(p["escalated_share"], 6), round(p["kappa"], 6)]
                                          for p in curve]}
    return {**plan, "curve": curve}


def out_of_fold_escalation(records: Sequence[Record], confidence: np.ndarray, student: np.ndarray, teacher: np.ndarray,
                           n_classes: int, target_kappa: float, *, folds: int = 5, seed: int = 0) -> dict | None:
    """What the rule "escalate below the threshold that reaches the target" delivers on rows that did not choose
    it: each grouped fold's rows escalated at the threshold chosen on the other folds, pooled, with
    group-bootstrap intervals. On the rows that chose it, the threshold reaches the target by construction.
    None where the rows cannot be split into folds (one prompt group, one class)."""
    try:
        split = grouped_folds(list(records), folds, seed)
    except InputError:
        return None
    mixed, escalated = teacher.copy(), np.zeros(len(teacher), dtype=bool)
    for fold in range(split.k):
        fit, held = split.fit_rows(fold), split.held(fold)
        chosen = choose_threshold(escalation_curve(confidence[fit], student[fit], teacher[fit], n_classes), target_kappa)
        escalated[held] = confidence[held] < (chosen["threshold"] if chosen else np.inf)
        mixed[held] = np.where(escalated[held], teacher[held], student[held])
    groups, classes = [r.prompt_group for r in records], list(range(n_classes))
    return {"design": f"grouped {split.k}-fold: each fold's rows escalated at the threshold chosen on the other "
                      f"{split.k - 1} folds, pooled; 95% group-bootstrap intervals",
            "kappa": kappa_from_confusion(confusion_matrix(teacher, mixed, labels=classes)),
            "kappa_ci": bootstrap_kappa(teacher, mixed, classes, groups),
            "escalated_share": float(escalated.mean()), "escalated_share_ci": bootstrap_share(escalated, groups)}


ROUNDED_CURVE_LIMIT = 1e-5  # 1 - threshold under which a curve rounded to 6 decimals cannot place a threshold


def stored_threshold(meta: dict, target_kappa: float | None = None, *, path: object = None) -> float | None:
    """The escalation threshold from judge.json: the stored one, or re-chosen on the stored curve for
    another `target_kappa`. None when the artifact has no curve (run `judge calibrate`).

    Curves written before ``exact_thresholds`` hold thresholds rounded to 6 decimals: still read, but a
    threshold re-chosen within 1e-5 of 1 is refused, since the rounding could send every item to the teacher."""
    escalation = meta.get("escalation")
    if not escalation:
        return None
    if target_kappa is None or target_kappa == escalation["target_kappa"]:
        return escalation["threshold"] if escalation["threshold"] is not None else float("inf")
    curve = [{"threshold": t, "escalated_share": s, "escalated": s, "kappa": k} for t, s, k in escalation["curve"]]
    chosen = choose_threshold(curve, target_kappa)
    if chosen and not escalation.get("exact_thresholds") and 1 - chosen["threshold"] < ROUNDED_CURVE_LIMIT:
        raise InputError(f"judge.json keeps its escalation curve rounded to 6 decimals, too coarse for the threshold of "
                         f"kappa {target_kappa} (confidences that close to 1): rerun `judge calibrate` to store it exactly, "
                         f"or use --target-kappa {escalation['target_kappa']} or --escalate-below P", path=path)
    return chosen["threshold"] if chosen else float("inf")


def escalation_teacher(judge: Judge, *, model: str | None = None, prompt_file: str | Path | None = None,
                       base_url: str | None = None, api_key: str | None = None):
    """The `judge.collect.TeacherConfig` for escalated rows, and warnings: escalated rows should get the labels
    the student learned to reproduce. The model is `model`, else the one judge.json records for the labels
    (``teacher.models``), else the default. The prompt is `prompt_file`, else the built-in rubric the labels
    were collected with (``teacher.rubric_sha256``), else the built-in rubric of the judge's scheme; a custom
    scheme has none, so it needs `prompt_file`. A model or prompt other than the recorded one is warned about."""
    from judge.collect import TeacherConfig
    from judge.teacher import BUILTIN_RUBRICS, DEFAULT_MODEL, RUBRIC_DIR, load_rubric, same_model

    warnings = []
    models = judge.meta.get("teacher", {}).get("models") or []
    if model is None:
        if len(models) > 1:
            raise InputError(f"the judge's labels came from several teachers ({', '.join(models)}): name the one "
                             f"for escalated responses with --teacher", path=judge.path)
        model = models[0] if models else DEFAULT_MODEL
    elif models and not any(same_model(model, recorded) for recorded in models):
        warnings.append(f"the judge learned from labels by {', '.join(models)}, not {model}: escalated rows may be "
                        f"graded differently from the rest")
    recorded = set(judge.meta.get("teacher", {}).get("rubric_sha256") or [])
    if prompt_file is not None:
        prompt = {"prompt_file": str(prompt_file)}
    elif judge.scheme.name in BUILTIN_RUBRICS:
        prompt = {"rubric": judge.scheme.name}
    else:  # a built-in rubric's text may have been given to `judge collect` as a prompt file for this scheme
        used = [name for name in BUILTIN_RUBRICS if load_rubric(name).sha256 in recorded]
        if not used:
            raise InputError(f"the judge's scheme {judge.scheme.name!r} has no built-in teacher rubric and judge.json "
                             f"records none: give the prompt its labels were collected with, --prompt-file FILE",
                             path=judge.path)
        prompt = {"prompt_file": str(RUBRIC_DIR / f"{used[0]}.txt")}
    teacher = TeacherConfig(model=model, base_url=base_url, api_key=api_key, **prompt)
    rubric = load_rubric(teacher.rubric, teacher.prompt_file)
    if recorded and rubric.sha256 not in recorded:
        warnings.append(f"the teacher prompt {rubric.name} is not the one the judge's labels were collected with "
                        f"(rubric SHA-256 {', '.join(sorted(recorded))} in judge.json): the teacher may grade escalated "
                        f"rows by another rubric")
    return teacher, warnings


def prepare_escalation(judge: Judge, teacher, *, below: float | None = None,
                       target_kappa: float | None = None) -> float:
    """The threshold to escalate below: `below`, else the one `judge calibrate` stored (re-chosen for
    `target_kappa`). Called before scoring, so that what would stop escalation anyway (no stored curve,
    no API key, a rubric the judge's scheme cannot use) is refused before the scoring is paid for.
    `teacher` is a `judge.collect.TeacherConfig`."""
    from judge.collect import resolve_rubric
    from judge.teacher import endpoint, get_key

    threshold = below if below is not None else stored_threshold(judge.meta, target_kappa, path=judge.path)
    if threshold is None:
        raise InputError("the judge has no escalation curve: run `judge calibrate` on teacher labels first, "
                         "or give --escalate-below P", path=judge.path)
    get_key(teacher.api_key, base_url=endpoint(teacher.base_url))
    resolve_rubric(teacher, judge.scheme)
    return threshold


def due_for_teacher(predictions: Sequence[Prediction], threshold: float) -> list[int]:
    return [i for i, p in enumerate(predictions) if p.confidence < threshold]


def mark_not_escalated(rows: list[dict], predictions: Sequence[Prediction], threshold: float) -> int:
    """Escalation stopped before the teacher answered: the rows due for it keep the student's label, marked
    ``judge_teacher_status`` "not_sent" so they stay distinguishable from confident ones. Returns how many."""
    due = due_for_teacher(predictions, threshold)
    for i in due:
        rows[i]["judge_teacher_status"] = "not_sent"
    return len(due)


def escalate_predictions(judge: Judge, records: Sequence[Record], predictions: Sequence[Prediction], teacher,
                         threshold: float, *, cache_path: str | Path | None = None,
                         progress: bool = False) -> tuple[list[dict], list[Prediction], dict]:
    """Send the predictions less confident than `threshold` (see `prepare_escalation`) to the teacher (through
    `judge.collect` and its cache); return scored rows with ``judge_source`` "teacher" or "student", the final
    predictions and counts. Rows due for the teacher also carry ``judge_teacher_status`` (ok, or why the
    teacher gave no label: a failed call keeps the student's label and is counted as failed).
    `teacher` is a `judge.collect.TeacherConfig`.
    """
    from judge.cache import DEFAULT_CACHE
    from judge.collect import collect
    from judge.teacher import price_of

    low = due_for_teacher(predictions, threshold)
    result = collect([records[i] for i in low], teacher, scheme=judge.scheme, cache_path=cache_path or DEFAULT_CACHE,
                     progress=progress)
    answers = {label.record_id: label for label in result.labels}
    final, sources, statuses = list(predictions), ["student"] * len(records), {}
    for i in low:
        answer = answers.get(records[i].id)
        if answer is not None and answer.status == "ok":
            probs = answer.probs or {c: float(c == answer.label) for c in judge.classes_}
            final[i], sources[i] = Prediction(answer.label, probs), "teacher"
        statuses[i] = answer.status if answer is not None else "not_sent"
    outcome = Counter(statuses.values())
    stats = {"threshold": threshold, "n": len(records), "escalated": len(low), "teacher_labels": outcome.get("ok", 0),
             "teacher_failed": len(low) - outcome.get("ok", 0), "statuses": dict(outcome), "collect": result.stats,
             "model": teacher.model, "priced": price_of(teacher.model, teacher.prices) is not None or result.stats["spent"] > 0,
             "cost_per_call": judge.meta.get("escalation", {}).get("cost", {}).get("cost_per_call")}
    rows = [scored_row(r, p, judge, source) for r, p, source in zip(records, final, sources)]
    for i, status in statuses.items():
        rows[i]["judge_teacher_status"] = status
    return rows, final, stats


def escalation_outcome(stats: dict, cache_path: str | Path) -> tuple[str | None, int]:
    """(the error to print, the exit code) of an escalation that ran, as `judge collect` would give them
    (`judge.collect.stop_reason`), a refused endpoint's line saying which rows keep the student's label."""
    from judge.collect import stop_reason

    collected = stats["collect"]
    reason, code = stop_reason(collected, cache_path)
    if collected["teacher_error"] and not collected["cache_error"]:
        reason = (f"escalation stopped ({reason}): {stats['teacher_failed']} of the {stats['escalated']} responses below "
                  f"the threshold keep the student's label (judge_teacher_status error or not_sent); rerun after the fix "
                  f"to escalate them (answers already paid for are cached)")
    return reason, code


def format_escalation(stats: dict) -> str:
    """The summary: where the labels came from, what failed, and what the teacher calls cost."""
    failed = {k: v for k, v in stats["statuses"].items() if k != "ok"}
    interrupted = stats["collect"]["stopped"] == "interrupted"
    unsent = failed.pop("not_sent", 0) if stats["collect"]["stopped"] else 0  # said apart, by the stop's own line
    line = (f"escalated {stats['escalated']} of {stats['n']} responses (confidence below {format_confidence(stats['threshold'])}) "
            f"to the teacher: {stats['teacher_labels']} teacher labels")
    if failed:
        line += (f"; {sum(failed.values())} teacher calls failed and kept the student's label "
                 f"({', '.join(f'{k} {v}' for k, v in failed.items())})")
    calls, per_call = stats["collect"]["sent"], stats["cost_per_call"]
    spend = (f"{calls} teacher calls sent, ${stats['collect']['spent']:.4f} spent" if stats["priced"] else
             f"{calls} teacher calls sent, about ${calls * per_call:.2f} at ${per_call}/call (judge calibrate's "
             f"--cost-per-call)" if per_call is not None else f"{calls} teacher calls sent (no price known for {stats['model']})")
    lines = [line, spend]
    if interrupted:
        lines.append(f"interrupted: {unsent} responses due for the teacher were not sent and keep the student's label "
                     f"(judge_teacher_status not_sent); rerun to send them (nothing is paid twice)")
    return "\n".join(lines)


def curve_rows(curve: Sequence[dict], shares: Sequence[float] = (0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75)) -> list[dict]:
    """The curve thinned to the points nearest some round shares escalated (for tables)."""
    rows = []
    for share in shares:
        point = min(curve, key=lambda p: abs(p["escalated_share"] - share))
        if point not in rows:
            rows.append(point)
    return rows


def format_confidence(value: float) -> str:
    """Enough decimals to tell a threshold from 1 (confidences crowd just below it)."""
    digits = 3 if value < 0.999 else min(12, 2 - int(np.floor(np.log10(max(1 - value, 1e-12)))))
    return f"{value:.{digits}f}"


def out_of_fold_sentence(figures: dict) -> str:
    (k_low, k_high), (s_low, s_high) = figures["kappa_ci"], figures["escalated_share_ci"]
    return (f"kappa {figures['kappa']:.3f} [95% CI {k_low:.3f}, {k_high:.3f}] with {100 * figures['escalated_share']:.1f}% "
            f"[{100 * s_low:.1f}, {100 * s_high:.1f}] of items to the teacher ({figures['design']})")


def format_plan(plan: dict) -> str:
    from judge.report import table

    lines = [table(["escalate below", "% to teacher", "kappa", "accuracy"],
                   [[format_confidence(p["threshold"]), f"{100 * p['escalated_share']:.1f}", f"{p['kappa']:.3f}",
                     f"{p['accuracy']:.3f}"] for p in curve_rows(plan["curve"])]) if plan.get("curve") else ""]
    cost = plan["cost"]
    if plan["threshold"] is None:
        lines.append(f"kappa {plan['target_kappa']} is out of reach unless every item goes to the teacher")
    else:
        lines.append(f"target kappa {plan['target_kappa']}: escalate below confidence {format_confidence(plan['threshold'])}; "
                     f"{100 * plan['escalated_share']:.1f}% of items go to the teacher (kappa {plan['kappa']:.3f} "
                     f"on {plan['n']} calibration items, student alone {plan['student_kappa']:.3f})")
        if plan.get("out_of_fold"):
            lines.append(f"the same rule out of fold: {out_of_fold_sentence(plan['out_of_fold'])}")
    lines.append(f"teacher cost per {cost['per_items']} items at ${cost['cost_per_call']}/call: "
                 f"${cost['teacher_only']:.2f} all-teacher, ${cost['with_escalation']:.2f} with escalation "
                 f"(saves ${cost['saved']:.2f}, {100 * plan['cost_saved_share']:.1f}%)")
    return "\n".join(lines)
