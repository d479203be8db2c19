"""The teacher's rates from the student's scores plus a small teacher sample, with honest intervals.

A student that agrees with GPT-4o at kappa 0.6-0.7 reports rates that are off by several points,
and which way is unknown. Prediction-powered inference (PPI, Angelopoulos et al. 2023; PPI++,
Angelopoulos, Duchi & Zrnic 2023) corrects the student's mean on every scored row with the
student-teacher gap measured on a random teacher sample: the estimate is unbiased for the
teacher's rate and its interval is valid, and narrower than the teacher-only one the better the
student is. ``lam`` (power tuning) weighs the student in: ``lam=0`` ignores it (the classical
interval), ``lam=1`` is plain PPI, ``lam=None`` tunes it from the data.

Plain functions over arrays first (``ppi_rate``, ``ipw_rate``, ``wilson_ci``, ``rate_interval``),
then ``estimate`` over scored records and teacher labels, grouped by response model (and category
or scenario) and overall. The CLI's ``judge estimate`` is a thin layer over ``load_inputs`` and
``estimate``::

    from judge.estimate import estimate, load_inputs
    result = estimate(load_inputs("scored.jsonl", "labels.jsonl"), by=("model",))
    result["groups"]["llava"]["ci"]

Every interval is 95% (``ALPHA = 0.05``), never ppi_py's default of 90%.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import norm

from judge.errors import InputError
from judge.metrics import group_by
from judge.model import read_meta, row_key
from judge.records import Record, build_dataset, file_sha256, read_records, rows_from_jsonl
from judge.schemes import Scheme, builtin_with_classes, load_scheme

ALPHA = 0.05
MIN_TEACHER = 30  # fewer teacher labels in a group: warn that its interval rests on little
MIN_EACH_SIDE = 5  # fewer teacher labels on one side of a rate: the normal interval is not trusted alone
SAMPLE_FIELD = "judge_sample"  # what `judge collect` records about the draw in each drawn row
METHOD = ("PPI++ (Angelopoulos, Duchi & Zrnic 2023) via ppi_py within a stratum of the draw, lam tuned there; a group "
          "of whole strata combines theirs by size (stratified PPI, Fisch et al. 2024), one that cuts across strata "
          "or an active draw weights rows by their inclusion probabilities (Zrnic & Candes 2024); each row's "
          "`interval` says which")


# -- estimators over arrays --------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval, standard error and the lam it used."""

    estimate: float
    ci: tuple[float, float]
    se: float
    lam: float | None  # None for a combination of strata, each with its own
    method: str


def tuned_lam(y: np.ndarray, yhat: np.ndarray, yhat_unlabeled: np.ndarray | None) -> float:
    """PPI++'s variance-minimising lam for a mean, clipped to [0, 1], as ppi_py computes it.

    lam = Cov(Y, Yhat) / ((1 + n/N) Var(Yhat over all predictions)); 0 when the predictions are
    constant (they then carry no information). ``yhat_unlabeled=None`` plans for a scored set much
    larger than the labelled one (n/N -> 0, Var(Yhat) from the labelled rows).
    """
    n = len(y)
    pool, shrink = (yhat, 1.0) if yhat_unlabeled is None else (
        np.concatenate([yhat, yhat_unlabeled]), 1 + n / len(yhat_unlabeled))
    var = np.var(pool, ddof=1)
    if not var > 0:
        return 0.0
    cov = np.mean((y - y.mean()) * (yhat - yhat.mean()))
    return float(np.clip(cov / (shrink * var), 0.0, 1.0))


def ppi_rate(y: Sequence[float], yhat: Sequence[float], yhat_unlabeled: Sequence[float], *,
             alpha: float = ALPHA, lam: float | None = None) -> Interval:
    """PPI++ estimate and (1 - alpha) interval of a mean from a uniform random teacher sample.

    ``y``: teacher outcomes (0/1) on the labelled rows; ``yhat``: the student's probabilities on
    the same rows; ``yhat_unlabeled``: the student's probabilities on every scored row.
    ``lam=None`` tunes lam (``tuned_lam``), 0 gives the classical interval, 1 plain PPI.

    >>> r = ppi_rate([1, 0, 1, 1], [0.9, 0.2, 0.7, 0.8], [0.9, 0.2, 0.7, 0.8, 0.6, 0.1], lam=1)
    >>> round(r.estimate, 4)  # mean(yhat_unlabeled) 0.55 + mean(y - yhat) 0.10
    0.65
    """
    from ppi_py import ppi_mean_ci, ppi_mean_pointestimate

    y, yhat, yhat_unlabeled = (np.asarray(a, dtype=float) for a in (y, yhat, yhat_unlabeled))
    lam = tuned_lam(y, yhat, yhat_unlabeled) if lam is None else float(lam)
    point = float(np.squeeze(ppi_mean_pointestimate(y, yhat, yhat_unlabeled, lam=lam)))
    low, high = (float(np.squeeze(b)) for b in ppi_mean_ci(y, yhat, yhat_unlabeled, alpha=alpha, lam=lam))
    return Interval(point, (low, high), (high - low) / (2 * norm.ppf(1 - alpha / 2)), lam, "ppi++")


def ipw_rate(yhat_all: Sequence[float], labelled: Sequence[int], y: Sequence[float], pi: Sequence[float], *,
             alpha: float = ALPHA, lam: float | None = None) -> Interval:
    """Prediction-powered estimate when rows were drawn with known, unequal probabilities ``pi``.

    Active inference (Zrnic & Candes 2024): each row i is labelled with probability pi_i, and
    theta = mean_i[lam * yhat_i + (y_i - lam * yhat_i) * xi_i / pi_i] (xi_i = 1 if labelled) is
    unbiased whatever pi is; its variance is that of the terms over N. ``labelled`` indexes
    ``yhat_all``; ``y`` and ``pi`` follow ``labelled``. ``lam=None`` minimises the variance
    (clipped to [0, 1]); ``lam=0`` is the Horvitz-Thompson teacher-only estimate.
    """
    yhat_all = np.asarray(yhat_all, dtype=float)
    N = len(yhat_all)
    weight = np.zeros(N)
    weight[np.asarray(labelled, dtype=int)] = 1 / np.asarray(pi, dtype=float)
    outcome = np.zeros(N)
    outcome[np.asarray(labelled, dtype=int)] = np.asarray(y, dtype=float)
    a, b = outcome * weight, yhat_all * (1 - weight)  # term = a + lam * b
    if lam is None:
        var_b = np.var(b, ddof=1)
        lam = float(np.clip(-np.cov(a, b)[0, 1] / var_b, 0.0, 1.0)) if var_b > 0 else 0.0
    terms = a + lam * b
    point, se = float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(N))
    z = norm.ppf(1 - alpha / 2)
    return Interval(point, (point - z * se, point + z * se), se, float(lam), "ipw-ppi++" if lam else "ipw")


def wilson_ci(successes: float, n: float, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval for a proportion: stays inside [0, 1] and does not collapse at 0 or n.

    >>> [round(x, 4) for x in wilson_ci(0, 50)]
    [0.0, 0.0713]
    """
    from statsmodels.stats.proportion import proportion_confint  # ppi_py's own dependency

    if n == 0:
        return 0.0, 1.0
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


def _one_draw(y: np.ndarray, yhat: np.ndarray, yhat_all: np.ndarray, labelled: np.ndarray, pi: np.ndarray | None,
              alpha: float) -> tuple[Interval, Interval, list[str]]:
    """The estimate and the teacher-only figure of one rate over rows drawn alike, unclipped (see `rate_interval`).

    Each Interval's ``se`` is the one its interval implies: a widened interval's is its half-width over z.
    """
    n, z = len(y), norm.ppf(1 - alpha / 2)
    k = int(round(float(np.sum(y))))
    notes: list[str] = []
    if pi is None or np.allclose(pi, pi[0]):
        result = ppi_rate(y, yhat, yhat_all, alpha=alpha)
        floor_ci = wilson_ci(k, n, alpha)
        share = k / n
        teacher = Interval(share, floor_ci, max(math.sqrt(share * (1 - share) / n), (floor_ci[1] - floor_ci[0]) / (2 * z)),
                           0.0, "wilson")
    else:
        result = ipw_rate(yhat_all, labelled, y, pi, alpha=alpha)
        teacher = ipw_rate(yhat_all, labelled, y, pi, alpha=alpha, lam=0.0)
        weight = 1 / np.asarray(pi, dtype=float)
        kish = weight.sum() ** 2 / (weight ** 2).sum()  # the weighted sample's effective size
        floor_ci = wilson_ci(float(weight @ y / weight.sum()) * kish, kish, alpha)
    if min(k, n - k) < MIN_EACH_SIDE:
        low, high = min(result.ci[0], floor_ci[0]), max(result.ci[1], floor_ci[1])
        result = Interval(result.estimate, (low, high), max(result.se, (high - low) / (2 * z)), result.lam,
                          f"{result.method} widened to wilson")
        notes.append(f"{min(k, n - k)} teacher labels on one side: interval widened to contain the Wilson interval")
    return result, teacher, notes


def _figures(result: Interval, teacher: Interval, teacher_rate: float | None, notes: list[str]) -> dict:
    """What a group reports of one rate: clipped to [0, 1], with the labels a uniform teacher-only sample
    would need for the same precision (p (1 - p) / se^2 at the estimate)."""
    clip = lambda v: float(min(1.0, max(0.0, v)))  # noqa: E731
    spread = clip(result.estimate) * (1 - clip(result.estimate))
    effective = spread / result.se ** 2 if result.se > 0 and spread > 0 else None
    return {"estimate": clip(result.estimate), "ci": [clip(result.ci[0]), clip(result.ci[1])],
            "teacher_only_ci": [clip(teacher.ci[0]), clip(teacher.ci[1])], "teacher_rate": teacher_rate,
            "se": result.se, "lam": result.lam, "interval": result.method,
            "effective_n": round(effective, 1) if effective is not None else None, "notes": notes}


def rate_interval(y: np.ndarray, yhat: np.ndarray, yhat_all: np.ndarray, labelled: np.ndarray,
                  pi: np.ndarray | None, *, alpha: float = ALPHA) -> dict:
    """One rate of one group: the prediction-powered estimate, the teacher-only interval, and why.

    With equal inclusion probabilities (or none recorded) this is PPI++ and the teacher-only
    interval is Wilson's. With unequal ones (an active draw, or a group that cuts across the strata
    of a per-model draw) both are inverse-probability weighted. Near 0% or 100% (fewer than
    ``MIN_EACH_SIDE`` teacher labels on one side) the normal interval can collapse; it is then widened
    to contain the Wilson interval too (for weighted rows: at the weighted share, with Kish's effective
    sample size), which keeps coverage at least at the Wilson level, and ``se`` is the widened one.
    Intervals are clipped to [0, 1].
    """
    result, teacher, notes = _one_draw(y, yhat, yhat_all, labelled, pi, alpha)
    return _figures(result, teacher, float(np.mean(y)) if len(y) else None, notes)


def stratified_interval(strata: Sequence[tuple[int, Interval, Interval]], *, alpha: float = ALPHA) -> tuple[Interval, Interval]:
    """A rate over whole strata of a draw (every model, under `--per model`) from each stratum's own figures.

    ``strata``: (rows in the stratum, its estimate, its teacher-only figure). The strata were drawn
    independently, so the rate is their size-weighted mean and its variance the weighted sum of theirs
    (stratified PPI, Fisch et al. 2024; the classical stratified mean for the teacher-only figure), each
    stratum with its own lam. Pooling the rows with one lam and a Bernoulli-sampling variance instead is
    also unbiased, but its interval ignores that each stratum's sample size was fixed.

    >>> a, b = Interval(0.8, (0.7, 0.9), 0.05, 0.5, "ppi++"), Interval(0.2, (0.1, 0.3), 0.05, 0.5, "ppi++")
    >>> rate, _ = stratified_interval([(300, a, a), (100, b, b)])
    >>> round(rate.estimate, 3), round(rate.se, 4)  # 0.75 x 0.8 + 0.25 x 0.2; sqrt(0.75^2 + 0.25^2) x 0.05
    (0.65, 0.0395)
    """
    sizes = np.array([size for size, _, _ in strata], dtype=float)
    weight = sizes / sizes.sum()
    z = norm.ppf(1 - alpha / 2)

    def combine(parts: list[Interval], method: str) -> Interval:
        point = float(weight @ [p.estimate for p in parts])
        se = float(math.sqrt(weight ** 2 @ [p.se ** 2 for p in parts]))
        return Interval(point, (point - z * se, point + z * se), se, None, method)

    methods = sorted({r.method for _, r, _ in strata})
    return (combine([r for _, r, _ in strata], f"stratified over {len(strata)} strata: {', '.join(methods)}"),
            combine([t for _, _, t in strata], "stratified"))


# -- inputs: scored rows, teacher labels, the sampling design ------------------------------------

@dataclass
class Inputs:
    """Scored records with the student's probabilities, and teacher labels for some of them."""

    records: list[Record]  # scored rows; .label is the student's label
    probs: np.ndarray  # (N, classes) in scheme order, as `judge score` wrote them
    scheme: Scheme
    teacher: dict[str, str]  # id -> teacher label, for scored rows the teacher labelled
    inclusion: dict[str, float] = field(default_factory=dict)  # id -> recorded inclusion probability
    design: str = "assumed: the teacher-labelled rows are a uniform random sample of the scored rows (not recorded)"
    warnings: list[str] = field(default_factory=list)
    per: str | None = None  # the field the recorded draw was stratified by (`judge collect --per`)


def _scheme_of_probs(keys: set[str], named: str | Scheme | None) -> Scheme:
    if named is not None:
        return load_scheme(named)
    scheme = builtin_with_classes(keys)
    if scheme is not None:
        return scheme
    raise InputError(f"judge_probs has classes {sorted(keys)}, which no built-in scheme has: name it with --scheme or --judge")


def read_scored(path: str | Path, scheme: str | Scheme | None = None) -> tuple[list[Record], np.ndarray, Scheme]:
    """A `judge score` output: its records (label = the student's) and probabilities in scheme order."""
    rows = list(rows_from_jsonl(path))
    if not rows:
        raise InputError("no scored rows", path=path)
    probs_keys = None
    for src, line, row in rows:
        probs = row.get("judge_probs") if isinstance(row, dict) else None
        if not isinstance(probs, dict) or not probs:
            raise InputError("no judge_probs: this is not a file `judge score` wrote", path=src, line=line)
        values = list(probs.values())
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values) \
                or abs(sum(values) - 1) > 1e-3:
            raise InputError(f"judge_probs must be probabilities in [0, 1] summing to 1, got {probs}", path=src, line=line)
        if probs_keys is None:
            probs_keys = set(probs)
        elif set(probs) != probs_keys:
            raise InputError(f"judge_probs has classes {sorted(probs)}, earlier rows {sorted(probs_keys)}", path=src, line=line)
    resolved = _scheme_of_probs(probs_keys, scheme)
    if set(resolved.classes) != probs_keys:
        raise InputError(f"judge_probs has classes {sorted(probs_keys)}, the {resolved.name} scheme {list(resolved.classes)}", path=path)
    dataset = build_dataset(rows, scheme=resolved, label_field="judge_label", require_labels=True)
    matrix = np.array([[float(r.raw["judge_probs"][c]) for c in resolved.classes] for r in dataset.records])
    return dataset.records, matrix, resolved


def load_inputs(scored: str | Path, labels: str | Path, *, scheme: str | Scheme | None = None,
                judge_dir: str | Path | None = None) -> Inputs:
    """Read the scored file and the teacher labels, join them on id and check the sample is usable.

    Refused: labels in rows `judge collect --select uncertain` chose for training (not a random
    sample), and, given ``judge_dir``, rows the judge was trained or validated on (its errors
    there are smaller than elsewhere, which would bias the correction).
    """
    meta = read_meta(judge_dir) if judge_dir is not None else {}
    if meta and scheme is None:
        scheme = Scheme.from_dict(meta["scheme"])
    records, probs, resolved = read_scored(scored, scheme)
    ref = read_records(labels, scheme=resolved)
    by_id = {r.id: i for i, r in enumerate(records)}
    warnings: list[str] = []
    drawn = [r for r in ref.records if r.id in by_id]
    stray = len(ref.records) - len(drawn)
    if stray:
        warnings.append(f"{stray} rows of {labels} match no scored row (joined on id) and are not used")
    training = [r for r in drawn if (r.raw.get(SAMPLE_FIELD) or {}).get("purpose") == "training"]
    if training:
        raise InputError(f"{len(training)} labelled rows (e.g. {training[0].id!r}) were chosen by uncertainty for "
                         "training (judge_sample.purpose = training), not drawn at random: estimate from a random "
                         "sample (`judge collect --sample N --per model`)", path=labels)
    unlabelled = Counter(str(r.raw.get("teacher_status", "no label")) for r in drawn if r.label is None)
    if unlabelled:
        warnings.append(f"{sum(unlabelled.values())} drawn rows have no teacher label ("
                        + ", ".join(f"{k} {v}" for k, v in unlabelled.items())
                        + "): the estimate assumes they are missing at random")
    labelled = [r for r in drawn if r.label is not None]
    if not labelled:
        raise InputError("no teacher label matches a scored row (joined on id)", path=labels)
    if judge_dir is not None:
        keys = meta.get("data", {}).get("trained_row_keys")
        keys = set(keys) if keys is not None else None
        sources = {s["sha256"] for s in meta.get("data", {}).get("sources", [])}
        if keys is None:
            if any(_sha256(s) in sources for s in ref.sources):
                raise InputError("this labels file is one the judge was trained on, and the artifact does not record "
                                 "which rows it trained on: use teacher labels the judge never saw", path=labels)
            warnings.append("the artifact does not record its training rows: overlap with the teacher sample not checked")
        else:
            seen = [r for r in labelled if row_key(records[by_id[r.id]]) in keys]
            if seen:
                raise InputError(f"{len(seen)} teacher-labelled rows (e.g. {seen[0].id!r}) are rows the judge was trained "
                                 "or validated on: the estimation sample must be rows it never saw", path=labels)
            in_population = sum(row_key(r) in keys for r in records)
            if in_population:
                warnings.append(f"{in_population} scored rows were used to train the judge; the estimate covers them "
                                "as if they were like the rest")
    designs = Counter(json.dumps({k: v for k, v in (r.raw.get(SAMPLE_FIELD) or {}).items()
                                  if k in ("design", "per", "seed")}, sort_keys=True) for r in labelled)
    inclusion = {r.id: float(r.raw[SAMPLE_FIELD]["inclusion_prob"]) for r in labelled
                 if isinstance(r.raw.get(SAMPLE_FIELD), dict) and r.raw[SAMPLE_FIELD].get("inclusion_prob")}
    design, per = Inputs.design, None
    if inclusion:
        if len(inclusion) < len(labelled):
            raise InputError(f"{len(labelled) - len(inclusion)} labelled rows lack the recorded draw ({SAMPLE_FIELD}) "
                             "the others have: the inclusion probabilities must cover every labelled row", path=labels)
        spec = json.loads(designs.most_common(1)[0][0])
        per = spec.get("per")
        design = (f"recorded draw: {spec.get('design', 'uniform')}"
                  + (f" within each {spec['per']}" if spec.get("per") else "") + f", seed {spec.get('seed')}; "
                  "rows weighted by their inclusion probabilities where these differ")
        sizes = {(str(r.raw[SAMPLE_FIELD].get("per")), str(r.raw[SAMPLE_FIELD].get("stratum"))): r.raw[SAMPLE_FIELD].get("stratum_size")
                 for r in labelled if r.raw[SAMPLE_FIELD].get("per")}
        for (per, stratum), size in sorted(sizes.items()):
            scored_size = sum(str(_field(r, per)) == stratum for r in records)
            if size is not None and scored_size != size:
                warnings.append(f"the draw saw {size} rows with {per} = {stratum}, the scored file has {scored_size}: "
                                "the recorded inclusion probabilities are for the rows the draw saw")
        if len(designs) > 1:
            warnings.append(f"labelled rows come from {len(designs)} different draws; each row is weighted by its own "
                            "inclusion probability, which is only valid if the draws were independent")
    teacher = {r.id: r.label for r in labelled}
    return Inputs(records, probs, resolved, teacher, inclusion, design, warnings, per=per)


def _sha256(path: str) -> str:
    return file_sha256(path) if Path(path).is_file() else ""


# -- estimates per group ---------------------------------------------------------------------

def targets(scheme: Scheme) -> dict[str, tuple[str, ...]]:
    """What is estimated: the headline rate, plus each class's share when there are three or more."""
    out = {"rate": scheme.rate_labels}
    if not scheme.is_binary:
        out.update({c: (c,) for c in scheme.classes})
    return out


@dataclass(frozen=True)
class Strata:
    """The recorded draw's strata (`judge collect --per FIELD`): each scored row's, each one's size, and
    which the draw reached (those with a teacher-labelled row)."""

    per: str
    of_row: np.ndarray
    sizes: dict[str, int]
    reached: set[str]

    @classmethod
    def of(cls, inputs: Inputs) -> Strata | None:
        if inputs.per is None:
            return None
        of_row = np.array([str(_field(r, inputs.per)) for r in inputs.records], dtype=object)
        reached = {str(_field(r, inputs.per)) for r in inputs.records if r.id in inputs.teacher}
        return cls(inputs.per, of_row, dict(Counter(of_row)), reached)


def group_estimate(inputs: Inputs, rows: Sequence[int], *, alpha: float = ALPHA,
                   target_width: float | None = None, strata: Strata | None = None) -> dict:
    """Every figure for one group of scored rows (a model, a category, or all).

    A group of several strata of the draw is estimated from each whole stratum's own figures
    (`stratified_interval`); one that cuts across strata, by inverse-probability weighting. Either
    way, rows of a stratum the draw never reached have no teacher label standing for them: the group
    then gets no estimate, only the student's rate.
    """
    scheme = inputs.scheme
    rows = np.asarray(rows, dtype=int)
    ids = [inputs.records[i].id for i in rows]
    is_labelled = np.array([rid in inputs.teacher for rid in ids], dtype=bool)
    labelled = np.flatnonzero(is_labelled)
    teacher = [inputs.teacher[ids[j]] for j in labelled]
    student = [inputs.records[i].label for i in rows]
    pi = np.array([inputs.inclusion[ids[j]] for j in labelled]) if inputs.inclusion and len(labelled) else None
    out: dict = {"n": len(rows), "n_teacher": len(labelled), "warnings": []}
    by_stratum = group_by(list(strata.of_row[rows]), range(len(rows))) if strata is not None else {}
    by_stratum = {key: np.array(positions) for key, (positions,) in by_stratum.items()}
    unreached = [key for key in by_stratum if key not in strata.reached] if len(by_stratum) > 1 else []
    if unreached:
        missing = sum(len(by_stratum[key]) for key in unreached)
        out["warnings"].append(f"no estimate: {strata.per} {', '.join(unreached)} ({missing} of the {len(rows)} rows) "
                               f"{'has' if len(unreached) == 1 else 'have'} no teacher label, so the draw never reached "
                               f"those rows; label them (judge collect --sample N --per {strata.per}) or score without them")
    whole = len(by_stratum) > 1 and all(len(positions) == strata.sizes[key] and is_labelled[positions].sum() >= 2
                                        for key, positions in by_stratum.items())
    shares: dict = {}
    for name, labels in targets(scheme).items():
        columns = [scheme.classes.index(c) for c in labels]
        yhat_all = inputs.probs[rows][:, columns].sum(axis=1)
        y_all = np.array([is_labelled[j] and inputs.teacher[ids[j]] in labels for j in range(len(rows))], dtype=float)
        figures: dict = {"student_rate": float(np.mean(yhat_all)),  # the student's own estimate (judge.metrics.rates)
                         "student_label_rate": float(np.mean([s in labels for s in student]))}
        if unreached or len(labelled) < 2:
            figures.update(estimate=None, ci=None, teacher_only_ci=None, notes=[])
        elif whole:
            parts = []
            for positions in by_stratum.values():
                inside = np.flatnonzero(is_labelled[positions])
                chosen = positions[inside]
                drawn = np.array([inputs.inclusion[ids[j]] for j in chosen]) if inputs.inclusion else None
                result, teacher_only, _ = _one_draw(y_all[chosen], yhat_all[chosen], yhat_all[positions], inside, drawn, alpha)
                parts.append((len(positions), result, teacher_only))
            result, teacher_only = stratified_interval(parts, alpha=alpha)
            figures.update(_figures(result, teacher_only, teacher_only.estimate, []))
        else:
            figures.update(rate_interval(y_all[labelled], yhat_all[labelled], yhat_all, labelled, pi, alpha=alpha))
        if target_width is not None and name == "rate" and len(labelled) >= 2:
            figures["labels_needed"] = labels_needed(y_all[labelled], yhat_all[labelled], yhat_all, target_width, alpha=alpha)
        if name == "rate":
            out.update(figures)
        else:
            shares[name] = figures
            out["warnings"] += [f"share of {name}: {note}" for note in figures.get("notes", [])]
    if shares:
        out["shares"] = shares
    if len(labelled):
        out["agreement"] = float(np.mean([teacher[k] == student[j] for k, j in enumerate(labelled)]))
    if len(labelled) < 2:
        out["warnings"].append(f"{len(labelled)} teacher labels: no interval, only the student's plain rate")
    elif len(labelled) < MIN_TEACHER:
        out["warnings"].append(f"only {len(labelled)} teacher labels: the interval rests on little; label at least {MIN_TEACHER}")
    out["warnings"] += [f"{scheme.rate}: {note}" for note in out.pop("notes", [])]
    return out


def labels_needed(y: np.ndarray, yhat: np.ndarray, yhat_all: np.ndarray | None, width: float, *,
                  alpha: float = ALPHA, lam: float | None = None) -> int | None:
    """Teacher labels for a (1 - alpha) interval of total width ``width``, planned on a pilot sample.

    The interval `ppi_rate` gives has variance Var(Y - lam Yhat) / n + lam^2 Var(Yhat) / N over
    the N scored rows, so n = Var(Y - lam Yhat) / ((width / 2z)^2 - lam^2 Var(Yhat) / N), with lam
    and the variances from the pilot. With N unbounded (``yhat_all=None``) this is ppi_py's
    `ppi_mean_power` (whose design keeps labelled and unlabelled rows apart, so it asks more of small
    groups). ``lam=0`` plans the teacher-only interval. None when the pilot has no spread to plan
    with, or no n reaches the width.
    """
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    yhat_all = None if yhat_all is None else np.asarray(yhat_all, dtype=float)
    lam = tuned_lam(y, yhat, yhat_all) if lam is None else lam
    rectifier = np.var(y - lam * yhat)
    floor = 0.0 if yhat_all is None else lam ** 2 * np.var(yhat_all) / len(yhat_all)
    room = (width / (2 * norm.ppf(1 - alpha / 2))) ** 2 - floor
    if len(y) < 3 or rectifier <= 0 or room <= 0:
        return None
    return math.ceil(rectifier / room)


def plan_labels(records: Sequence[Record], probs: np.ndarray, scheme: Scheme, *, width: float = 0.10,
                by: str = "model", alpha: float = ALPHA) -> dict:
    """Teacher labels per `by` group (and overall) for a (1 - alpha) interval of total `width` on a large
    benchmark run: with the student (PPI++) and with the teacher's labels alone.

    Planned on rows that carry both the teacher's label and a student probability the student did not
    learn from (out-of-fold or held out): `judge distill` hands over a free pilot of that kind. It holds
    for responses like these; a new model's may be harder or easier.
    """
    y = np.array([r.label in scheme.rate_labels for r in records], dtype=float)
    yhat = scheme.rate_probability(probs)

    def plan(rows) -> dict:
        return {"n": int(len(rows)), "with_student": labels_needed(y[rows], yhat[rows], None, width, alpha=alpha),
                "teacher_only": labels_needed(y[rows], yhat[rows], None, width, alpha=alpha, lam=0.0)}

    groups = group_by([getattr(r, by) for r in records], range(len(records)))
    return {"width": width, "alpha": alpha, "by": by, "rate_name": scheme.rate,
            "groups": {k: plan(np.array(rows)) for k, (rows,) in groups.items()},
            "overall": plan(np.arange(len(records))),
            "method": "PPI++ on a scored set much larger than the labelled sample: n = Var(Y - lam Yhat) / (W/2z)^2, "
                      "lam and the variances from these rows; teacher labels alone: n = Var(Y) / (W/2z)^2"}


def paired_differences(inputs: Inputs, groups: dict[str, np.ndarray], results: dict[str, dict], *,
                       alpha: float = ALPHA) -> list[dict]:
    """Which pairs of models differ at 1 - alpha: each rate difference with its interval and a
    Holm-adjusted p-value over all pairs.

    The two estimates' rectifiers come from separate teacher samples (independent); their
    student means are taken on the same prompts where both models answered them, so that
    covariance (positive when hard prompts are hard for both) is subtracted.
    """
    index = {name: {inputs.records[i].prompt_group: i for i in rows} for name, rows in groups.items()}
    pairs = []
    names = [n for n in groups if results[n].get("estimate") is not None]
    z = norm.ppf(1 - alpha / 2)
    for a, b in combinations(names, 2):
        ra, rb = results[a], results[b]
        var = ra["se"] ** 2 + rb["se"] ** 2  # a widened interval's se is the one its width implies
        shared = sorted(set(index[a]) & set(index[b]))
        if len(shared) > 2 and ra["interval"].startswith("ppi") and rb["interval"].startswith("ppi"):
            ya = inputs.scheme.rate_probability(inputs.probs[[index[a][g] for g in shared]])
            yb = inputs.scheme.rate_probability(inputs.probs[[index[b][g] for g in shared]])
            cov = ra["lam"] * rb["lam"] * np.cov(ya, yb)[0, 1] * len(shared) / (len(groups[a]) * len(groups[b]))
            var = max(var - 2 * cov, 1e-12)
        diff, se = ra["estimate"] - rb["estimate"], math.sqrt(var)
        pairs.append({"a": a, "b": b, "difference": diff, "ci": [max(-1.0, diff - z * se), min(1.0, diff + z * se)],
                      "p_value": float(2 * norm.sf(abs(diff) / se)) if se > 0 else 0.0, "shared_prompts": len(shared)})
    order = sorted(range(len(pairs)), key=lambda i: pairs[i]["p_value"])
    running = 0.0
    for rank, i in enumerate(order):  # Holm: step-down, adjusted p-values kept monotone
        running = max(running, min(1.0, (len(pairs) - rank) * pairs[i]["p_value"]))
        pairs[i]["p_holm"] = running
        pairs[i]["distinguishable"] = running < alpha
    return pairs


def estimate(inputs: Inputs, *, by: Sequence[str] = ("model",), alpha: float = ALPHA,
             target_width: float | None = None) -> dict:
    """The teacher's headline rate per response model, per other field in ``by`` and overall.

    ``groups`` holds the first field of ``by`` (the response model by default), ``by`` every
    field, ``pairs`` which groups of the first field differ. Rates are fractions in [0, 1].
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    fields = list(by) or ["model"]
    result: dict = {"method": METHOD, "alpha": alpha, "confidence": 1 - alpha, "design": inputs.design,
                    "scheme": inputs.scheme.name, "rate_name": inputs.scheme.rate,
                    "rate_labels": list(inputs.scheme.rate_labels), "warnings": list(inputs.warnings), "by": {}}
    split = {name: _rows_by(inputs, name) for name in fields}
    result["warnings"] += [f"no scored row has a {name}: nothing to group by it" for name, keyed in split.items() if not keyed]
    strata = Strata.of(inputs)
    for name, keyed in split.items():
        result["by"][name] = {key: group_estimate(inputs, rows, alpha=alpha, target_width=target_width, strata=strata)
                              for key, rows in keyed.items()}
    first = fields[0]
    result["groups"] = result["by"][first]
    result["group_field"] = first
    result["overall"] = group_estimate(inputs, range(len(inputs.records)), alpha=alpha, target_width=target_width,
                                       strata=strata)
    unlabelled = [key for key, g in result["groups"].items() if g["n_teacher"] == 0]
    if not inputs.inclusion and unlabelled and len(unlabelled) < len(result["groups"]):
        result["warnings"].append(
            f"{first} {', '.join(unlabelled)} {'has' if len(unlabelled) == 1 else 'have'} no teacher label: the overall "
            f"rate takes the teacher rows for a uniform draw from every scored row; if they were drawn per {first}, "
            f"it is biased (record the draw: judge collect --sample N --per {first})")
    if len(result["groups"]) > 1:
        rows = {key: np.array(v) for key, v in split[first].items()}
        result["pairs"] = paired_differences(inputs, rows, result["groups"], alpha=alpha)
    return result


def _field(record: Record, name: str) -> object:
    """A record's value for a field: a Record attribute (model, category, ...) or a raw column."""
    return getattr(record, name) if name in Record.__dataclass_fields__ else record.raw.get(name)


def _rows_by(inputs: Inputs, name: str) -> dict[str, list[int]]:
    keyed: dict[str, list[int]] = {}
    for i, record in enumerate(inputs.records):
        value = _field(record, name)
        if value is not None:
            keyed.setdefault(str(value), []).append(i)
    return dict(sorted(keyed.items()))


def forest_rows(result: dict) -> dict[str, dict]:
    """The rows a forest plot draws: each group of the first field, then overall."""
    return {**result["groups"], "overall": result["overall"]}
