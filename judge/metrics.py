"""Agreement between the student and its teacher, and the benchmark's own rates.

Everything is built on one confusion matrix with a fixed label order (the scheme's), as in
scikit-learn, so kappa, F1 and the bootstrap intervals all agree on which class is which.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def top_labels(probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Each row's most probable class, for probabilities whose columns are in `classes` order.

    >>> top_labels(np.array([[0.2, 0.8], [0.6, 0.4]]), ["safe", "unsafe"])
    ['unsafe', 'safe']
    """
    return [classes[j] for j in np.asarray(probs).argmax(axis=1)]


def kappa_from_confusion(cm: np.ndarray, weights: str | None = None) -> float:
    """Cohen's kappa from a confusion matrix (rows = rater A, columns = rater B).

    kappa = 1 - sum(w * O) / sum(w * E), with E the outer product of the marginals and w the
    disagreement weights: 0 on the diagonal and 1 elsewhere (unweighted), |i - j| (linear) or
    (i - j)^2 (quadratic) on ordered classes. Undefined (nan) when the expected disagreement is
    zero, i.e. both raters used a single and the same class.

    >>> kappa_from_confusion(np.array([[20, 5], [10, 15]]))
    0.4
    >>> kappa_from_confusion(np.array([[3, 0], [0, 0]]))
    nan
    """
    cm = np.asarray(cm, dtype=float)
    n = cm.sum()
    if n == 0:
        return float("nan")
    k = cm.shape[0]
    idx = np.arange(k)
    if weights is None:
        w = 1.0 - np.eye(k)
    elif weights == "linear":
        w = np.abs(idx[:, None] - idx[None, :]).astype(float)
    elif weights == "quadratic":
        w = (idx[:, None] - idx[None, :]).astype(float) ** 2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    denom = (w * expected).sum()
    if denom == 0:
        return float("nan")
    return round(float(1.0 - (w * cm).sum() / denom), 12)


MIN_GROUPS = 5  # fewer prompt groups, and a group bootstrap has a handful of distinct draws: no interval is given


def _group_ids(groups: Sequence | None, n: int) -> np.ndarray:
    """Each row's group as an integer 0..n_groups-1 (every row its own group without `groups`)."""
    _, ids = np.unique(np.asarray(groups if groups is not None else range(n), dtype=object).astype(str),
                       return_inverse=True)
    return ids


def _group_draws(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) counts: how often each group is drawn in each bootstrap resample."""
    return np.random.default_rng(seed).multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of the resampled values, nan ones (undefined draws) dropped."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _grouped_confusions(y_true, y_pred, groups, classes) -> np.ndarray:
    """One confusion matrix per group, shape (n_groups, k, k), for fast group bootstraps."""
    index = {c: i for i, c in enumerate(classes)}
    group_ids = _group_ids(groups, len(y_true))
    k = len(classes)
    out = np.zeros((group_ids.max() + 1, k, k))
    np.add.at(out, (group_ids, [index[t] for t in y_true], [index[p] for p in y_pred]), 1)
    return out


def resampled_confusions(y_true: Sequence, y_pred: Sequence, classes: Sequence[str], groups: Sequence | None = None,
                         *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, k, k) confusion matrices of bootstrap resamples of prompt groups (or rows), drawn with
    replacement: every agreement figure's interval is read off the same draws."""
    per_group = _grouped_confusions(y_true, y_pred, groups, classes)
    return np.einsum("bg,gij->bij", _group_draws(per_group.shape[0], n_boot, seed), per_group)


def accuracy_from_confusion(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def bootstrap_share(flags: Sequence[bool], groups: Sequence | None = None, *, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the share of flagged rows, resampling prompt groups (or rows)."""
    if len(flags) == 0:
        return float("nan"), float("nan")
    ids = _group_ids(groups, len(flags))
    hits, sizes = np.bincount(ids, weights=np.asarray(flags, dtype=float)), np.bincount(ids)
    draws = _group_draws(len(sizes), n_boot, seed)
    return _percentile_interval(draws @ hits / (draws @ sizes), level)


def bootstrap_kappa(y_true: Sequence, y_pred: Sequence, classes: Sequence[str], groups: Sequence | None = None,
                    *, n_boot: int = 1000, weights: str | None = None, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for kappa, resampling prompt groups (or rows) with replacement.

    Resampling groups, not rows, respects that one prompt's responses are not independent.
    """
    if len(y_true) == 0:
        return float("nan"), float("nan")
    cms = resampled_confusions(y_true, y_pred, classes, groups, n_boot=n_boot, seed=seed)
    return _percentile_interval(np.array([kappa_from_confusion(cm, weights) for cm in cms]), level)


def paired_kappa_difference(y_true: Sequence, pred_a: Sequence, pred_b: Sequence, classes: Sequence[str],
                            groups: Sequence | None = None, *, n_boot: int = 2000, level: float = 0.95,
                            seed: int = 0) -> tuple[float, tuple[float, float] | None]:
    """kappa(a) - kappa(b) on the same rows, with a paired percentile bootstrap interval over prompt groups
    (None below `MIN_GROUPS` groups, as in `agreement`).

    Each resample draws prompt groups with replacement and scores both students on the same draw,
    so what the two share (easy and hard prompts) cancels and the interval is much narrower than
    the two separate intervals suggest.

    >>> y = ["a", "b"] * 10
    >>> paired_kappa_difference(y, y, y, ["a", "b"])
    (0.0, (0.0, 0.0))
    """
    if len(y_true) == 0:
        return float("nan"), (float("nan"), float("nan"))
    per_a = _grouped_confusions(y_true, pred_a, groups, classes)
    per_b = _grouped_confusions(y_true, pred_b, groups, classes)
    delta = kappa_from_confusion(per_a.sum(axis=0)) - kappa_from_confusion(per_b.sum(axis=0))
    if per_a.shape[0] < MIN_GROUPS:
        return float(delta), None
    counts = _group_draws(per_a.shape[0], n_boot, seed)
    a = np.array([kappa_from_confusion(cm) for cm in np.einsum("bg,gij->bij", counts, per_a)])
    b = np.array([kappa_from_confusion(cm) for cm in np.einsum("bg,gij->bij", counts, per_b)])
    return float(delta), _percentile_interval(a - b, level)


def bootstrap_rate_errors(keys: Sequence[str], teacher_in: Sequence[bool], student_in: Sequence[bool],
                          groups: Sequence | None = None, *, n_boot: int = 2000, level: float = 0.95,
                          seed: int = 0, ranking: bool = True) -> dict:
    """Per key (a response model): student rate - teacher rate, with a paired percentile bootstrap interval
    over prompt groups; and Kendall's tau between the two rankings of the keys, with its interval.

    One prompt's answers from several models share a group, so each resample draws whole prompts and
    rescores every model on the same draw, as a benchmark rerun on other prompts would. `teacher_in` and
    `student_in` say whether each row's label counts toward the rate (e.g. is safe). `ranking=False`
    skips Kendall's tau, nearly all of the cost (one scipy call per resample). A model seen in fewer
    than `MIN_GROUPS` prompt groups gets no interval (None), and with fewer groups in all there is no tau.

    >>> out = bootstrap_rate_errors(["a", "a", "b", "b"], [1, 0, 1, 1], [1, 1, 1, 1], ["p", "q", "p", "q"])
    >>> out["errors"]["a"][0], out["errors"]["b"]  # two prompt groups: too few for an interval
    (0.5, (0.0, None))
    """
    names, key_ids = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
    group_ids = _group_ids(groups, len(keys))
    shape = (group_ids.max() + 1, len(names))
    rows, teacher, student = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    np.add.at(rows, (group_ids, key_ids), 1)
    np.add.at(teacher, (group_ids, key_ids), np.asarray(teacher_in, dtype=float))
    np.add.at(student, (group_ids, key_ids), np.asarray(student_in, dtype=float))
    counts = _group_draws(shape[0], n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without a model's rows: nan, dropped
        teacher_rates, student_rates = (counts @ teacher) / (counts @ rows), (counts @ student) / (counts @ rows)
    point_teacher, point_student = teacher.sum(0) / rows.sum(0), student.sum(0) / rows.sum(0)
    errors = {str(name): (float(point_student[j] - point_teacher[j]),
                          _percentile_interval(student_rates[:, j] - teacher_rates[:, j], level)
                          if (rows[:, j] > 0).sum() >= MIN_GROUPS else None)
              for j, name in enumerate(names)}
    tau = None
    if ranking and len(names) >= 3 and shape[0] >= MIN_GROUPS:
        with warnings.catch_warnings():  # a resample where every model has the same rate: tau is nan, dropped
            warnings.simplefilter("ignore")
            point = kendalltau(point_teacher, point_student).statistic
            taus = np.array([kendalltau(t, s).statistic for t, s in zip(teacher_rates, student_rates)
                             if not (np.isnan(t).any() or np.isnan(s).any())])
        tau = None if point != point else (float(point), _percentile_interval(taus, level))
    return {"errors": errors, "kendall_tau": tau}


def agreement(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str], *,
              groups: Sequence | None = None, safe_labels: Sequence[str] | None = None,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """Every agreement number for one set of paired labels (teacher = y_true, student = y_pred).

    Returns kappa, quadratic-weighted kappa on the scheme's ordered classes and accuracy, each with a
    group-bootstrap 95% interval (one set of resampled prompt groups for all, described in `interval`; None
    below `MIN_GROUPS` groups, whose count is `groups`); macro-F1, per-class
    precision / recall / F1, the confusion matrix (rows = teacher, columns = student) in counts and
    row-normalized and, given `safe_labels`, the binary safe / unsafe view with its intervals.
    """
    classes = list(classes)
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    n = int(cm.sum())
    n_groups = int(_group_ids(groups, n).max()) + 1 if n else 0
    draws = (resampled_confusions(y_true, y_pred, classes, groups, n_boot=n_boot, seed=seed)
             if n_boot and n_groups >= MIN_GROUPS else None)

    def interval(stat, cms=draws):
        return None if cms is None else _percentile_interval(np.array([stat(c) for c in cms]), 0.95)

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    present = [i for i, c in enumerate(classes) if support[i] > 0 or c in set(y_pred)]
    ordinal = len(classes) > 2
    result = {
        "n": n,
        "groups": n_groups,
        "interval": None if draws is None else
        f"percentile bootstrap over {n_groups} {'rows' if groups is None else 'prompt groups'}, {n_boot} resamples",
        "kappa": kappa_from_confusion(cm),
        "kappa_ci": interval(kappa_from_confusion),
        "weighted_kappa": kappa_from_confusion(cm, "quadratic") if ordinal else None,
        "weighted_kappa_ci": interval(lambda c: kappa_from_confusion(c, "quadratic")) if ordinal else None,
        "accuracy": accuracy_from_confusion(cm),
        "accuracy_ci": interval(accuracy_from_confusion),
        "macro_f1": float(np.mean(f1[present])) if present else float("nan"),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "classes": classes,
        "confusion": cm.tolist(),
        "confusion_normalized": (cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)).tolist(),
    }
    if safe_labels is not None and ordinal:
        # the same resampled groups, each draw's matrix folded to safe / unsafe
        safe = np.array([c in safe_labels for c in classes])
        fold = np.stack([safe, ~safe]).astype(float)  # (2, k): which binary class each label falls in
        binary_cm = fold @ cm @ fold.T
        binary_draws = None if draws is None else np.einsum("ai,bij,cj->bac", fold, draws, fold)
        result["binary"] = {"kappa": kappa_from_confusion(binary_cm),
                            "kappa_ci": interval(kappa_from_confusion, binary_draws),
                            "accuracy": accuracy_from_confusion(binary_cm),
                            "accuracy_ci": interval(accuracy_from_confusion, binary_draws),
                            "confusion": binary_cm.astype(int).tolist()}
    return result


def rates(labels: Sequence[str], classes: Sequence[str], rate_labels: Sequence[str],
          probs: np.ndarray | None = None) -> dict:
    """Share of each label and the headline rate (e.g. safety rate = refuse + warning), as fractions.

    Given the student's probabilities (columns in `classes` order), each share is their mean (the
    expected share) and ``label_rate`` keeps the share of top labels. Counting top labels is biased
    toward the majority class, on every model whose answers the student is unsure of (a calibrated
    0.3 counts as 0); the mean probability is not (Bella et al. 2010, "probabilistic classify and count").

    >>> r = rates(["a", "a"], ["a", "b"], ["b"], probs=np.array([[0.7, 0.3], [0.6, 0.4]]))
    >>> round(r["rate"], 6), r["label_rate"]
    (0.35, 0.0)
    """
    n = len(labels)
    shares = {c: (sum(label == c for label in labels) / n if n else float("nan")) for c in classes}
    counted = sum(shares[c] for c in rate_labels) if n else float("nan")
    if probs is None:
        return {"n": n, **shares, "rate": counted}
    means = np.asarray(probs, dtype=float).mean(axis=0) if n else np.full(len(classes), np.nan)
    shares = {c: float(means[j]) for j, c in enumerate(classes)}
    return {"n": n, **shares, "rate": sum(shares[c] for c in rate_labels), "label_rate": counted}


def group_by(values: Sequence[str | None], *columns: Sequence) -> dict[str, tuple[list, ...]]:
    """Split parallel columns by a key column (category, model, ...); missing keys are skipped."""
    out: dict[str, tuple[list, ...]] = defaultdict(lambda: tuple([] for _ in columns))
    for i, key in enumerate(values):
        if key is None:
            continue
        for column, bucket in zip(columns, out[str(key)]):
            bucket.append(column[i])
    return dict(sorted(out.items()))


def is_nan(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
