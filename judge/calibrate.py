"""Calibration: make the student's confidence mean what it says, and check it still agrees later.

Temperature scaling (Guo et al. 2017) divides the logits by one fitted T, which changes the
probabilities but never the predicted label. It is fitted on teacher labels kept apart from the
training data, as scikit-learn's calibration module advises. `judge distill` fits one on its
winner's out-of-fold predictions (each row predicted by a fold model that never saw its prompt
group: held apart in effect, with no label set aside); `judge calibrate` replaces it with one fitted
on a calibration split or a fresh sample. The temperature lands in judge.json ``meta["calibration"]``,
which ``Judge.predict_proba`` reads, so `judge score`, the rates and the escalation threshold use
calibrated confidences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.model_selection import GroupKFold

from judge.errors import InputError
from judge.metrics import agreement
from judge.model import Judge, floored_log, seen_in_training, softmax
from judge.records import Record, file_sha256, sources_of
from judge.report import save_figure, with_ci

N_BINS = 15
T_BOUNDS = (0.05, 20.0)
CROSS_FIT_FOLDS = 5
OUT_OF_FOLD = "out-of-fold"  # the `fitted_on` of the temperature `judge distill` fits ("held-apart": `judge calibrate`)


def label_indices(records: Sequence[Record], classes: Sequence[str]) -> np.ndarray:
    """Teacher labels as column indices of the judge's probability arrays (unlabelled records refused)."""
    missing = [r for r in records if r.label is None]
    if missing:
        raise InputError(f"{len(missing)} records have no teacher label (e.g. id {missing[0].id!r})",
                         path=missing[0].source or None)
    return np.array([list(classes).index(r.label) for r in records])


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE on the top-label confidence with equal-width bins.

    ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|, bins (0, 1/n_bins], ... (with
    a confidence of exactly 0 put in the first bin).

    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 1, 0]), n_bins=4), 6)  # 0.5*0.15 + 0.5*0.35
    0.25
    """
    bins = reliability_bins(probs, y, n_bins)
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins))


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    """Per non-empty bin: its range, count, mean confidence and accuracy (the reliability diagram's data)."""
    probs = np.asarray(probs, dtype=float)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    return [{"low": float(b / n_bins), "high": float((b + 1) / n_bins), "n": int((bins == b).sum()),
             "confidence": float(confidence[bins == b].mean()), "accuracy": float(correct[bins == b].mean())}
            for b in np.unique(bins)]


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over items of sum_k (p_k - [y == k])^2 (0 is perfect, 2 the worst).

    >>> round(brier_score(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([0, 0])), 6)
    0.4
    """
    probs = np.asarray(probs, dtype=float)
    onehot = np.eye(probs.shape[1])[np.asarray(y)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    logp = log_softmax(np.asarray(logits, dtype=float) / temperature, axis=1)
    return float(-logp[np.arange(len(y)), np.asarray(y)].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The T in `bounds` minimising the NLL of softmax(logits / T), searched on log T."""
    result = minimize_scalar(lambda log_t: nll(logits, y, float(np.exp(log_t))),
                             bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-6})
    return float(np.exp(result.x))


def plot_reliability(before: list[dict], after: list[dict], path: str | Path, *, n_bins: int = N_BINS) -> Path:
    """Reliability diagram: accuracy against confidence per bin, before and after scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1 / n_bins
    for bins, name, color, shift in ((before, "before", "tab:orange", -0.25), (after, "after", "tab:blue", 0.25)):
        centres = [(b["low"] + b["high"]) / 2 + shift * width for b in bins]
        ax.bar(centres, [b["accuracy"] for b in bins], width=width / 2, color=color, alpha=0.7,
               label=f"accuracy per bin ({name})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("agreement with the teacher")
    ax.set_title("reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def scaling_figures(logits: np.ndarray, y: np.ndarray, temperature: float, before: np.ndarray,
                    after: np.ndarray, n_bins: int = N_BINS) -> dict:
    """The calibration block of judge.json: T, and ECE, Brier and NLL before scaling (`before`) and
    after (`after`), both probabilities of the same rows."""
    return {"temperature": temperature,
            "ece_before": expected_calibration_error(before, y, n_bins),
            "ece_after": expected_calibration_error(after, y, n_bins),
            "brier_before": brier_score(before, y),
            "brier_after": brier_score(after, y),
            "nll_before": float(-floored_log(before[np.arange(len(y)), y]).mean()),
            "nll_after": float(-floored_log(after[np.arange(len(y)), y]).mean()),
            "n": int(len(y)),
            "bins": n_bins}


def cross_fitted(logits: np.ndarray, y: np.ndarray, groups: Sequence[str], seed: int = 0) -> tuple[np.ndarray, int] | None:
    """(softmax of each group's logits under a temperature fitted on the other groups, the number of folds),
    or None for a single prompt group: how a temperature does on rows that did not fit it."""
    k = min(CROSS_FIT_FOLDS, len(set(groups)))
    if k < 2:
        return None
    out = np.zeros_like(logits, dtype=float)
    for fit, held in GroupKFold(k, shuffle=True, random_state=seed).split(logits, y, groups):
        out[held] = softmax(logits[held], fit_temperature(logits[fit], y[fit]))
    return out, k


def at_bound(logits: np.ndarray, y: np.ndarray, temperature: float) -> bool:
    """Whether the labels fit T no better than an edge of its search range (within a millionth of a nat):
    they barely constrain it, as when the judge is never wrong and ever smaller T look as good."""
    return any(nll(logits, y, bound) - nll(logits, y, temperature) < 1e-6 for bound in T_BOUNDS)


def refuse_training_rows(judge: Judge, records: Sequence[Record], why: str, source) -> None:
    """Calibration and drift need labels the judge never saw; `judge distill` records the rows it did."""
    seen = seen_in_training(judge.meta, records)
    if seen:
        raise InputError(f"{len(seen)} of these {len(records)} labelled rows (e.g. {seen[0].id!r}) are rows the judge was "
                         f"trained or validated on, and {why}: use teacher labels it never saw", path=source)


def calibrate(judge: Judge, records: Sequence[Record], *, logits: np.ndarray | None = None,
              source: str | Path | None = None, png: str | Path | None = None, n_bins: int = N_BINS,
              seed: int = 0) -> dict:
    """Fit the temperature on teacher-labelled `records` and, if it helps, set ``judge.meta["calibration"]``.

    "Before" is the judge as it is (its current temperature); "after" is cross-fitted over prompt
    groups, each group rescaled by a temperature fitted on the others, so no figure is measured on the
    rows that fitted it. The temperature fitted on every row replaces the judge's only if that lowers
    the cross-fitted log loss (on few or easy labels the fit is noise, or runs to its bound). Returns
    the figures, ``applied`` and the reliability bins; call ``judge.save_meta()`` to keep the result.
    """
    y = label_indices(records, judge.classes_)
    refuse_training_rows(judge, records, "a temperature fitted on them comes out too sharp", source)
    groups = [r.prompt_group for r in records]
    logits = judge.logits(records) if logits is None else np.asarray(logits)
    crossed = cross_fitted(logits, y, groups, seed)
    if crossed is None:
        raise InputError(f"calibration needs teacher labels from at least two prompt groups (these {len(y)} are one): "
                         "the fitted temperature is checked on groups that did not fit it", path=source)
    after, folds = crossed
    current, temperature = judge.temperature, fit_temperature(logits, y)
    before = softmax(logits, current)
    figures = scaling_figures(logits, y, temperature, before, after, n_bins)
    result = {**figures, "fitted_on": "held-apart", "cross_fit_folds": folds, "temperature_before": current,
              "applied": figures["nll_after"] < figures["nll_before"], "at_bound": at_bound(logits, y, temperature),
              "source": str(source) if source else None,
              "source_sha256": file_sha256(source) if source and Path(source).is_file() else None}
    if result["applied"]:
        judge.meta["calibration"] = result
    reliability = {"before": reliability_bins(before, y, n_bins), "after": reliability_bins(after, y, n_bins)}
    if png:
        plot_reliability(reliability["before"], reliability["after"], png, n_bins=n_bins)
    return {**result, "reliability": reliability, "png": str(png) if png else None}


def calibrate_out_of_fold(probs: np.ndarray, records: Sequence[Record], classes: Sequence[str], *,
                          seed: int = 0, n_bins: int = N_BINS) -> tuple[np.ndarray, dict | None]:
    """(the out-of-fold `probs` recalibrated, the calibration block for judge.json), or (`probs`, None)
    when the rows hold a single prompt group.

    The block's T is fitted on every row: the refitted judge's temperature. The block's after-scaling
    figures use a temperature cross-fitted over prompt groups (each group rescaled by one fitted on the
    other groups), so no figure is measured on the rows that fitted it. T is applied only if that
    lowers the log loss; otherwise (a temperature near 1 fitted on few rows, where its noise costs
    more than it corrects) the block says so, the judge keeps T = 1 and `probs` come back unchanged.
    """
    y = label_indices(records, classes)
    logits = floored_log(probs)
    crossed = cross_fitted(logits, y, [r.prompt_group for r in records], seed)
    if crossed is None:
        return probs, None
    after, k = crossed
    figures = scaling_figures(logits, y, fit_temperature(logits, y), softmax(logits, 1.0), after, n_bins)
    block = {**figures, "fitted_on": OUT_OF_FOLD, "cross_fit_folds": k, "source": None,
             "applied": figures["nll_after"] < figures["nll_before"]}
    if block["applied"]:
        return after, block
    return probs, {**block, "temperature": 1.0, "fitted_temperature": figures["temperature"]}


def out_of_fold(calibration: dict | None) -> bool:
    """Whether a calibration block is the temperature `judge distill` fitted on out-of-fold predictions."""
    return bool(calibration) and calibration.get("fitted_on") == OUT_OF_FOLD


def fitted_temperature(calibration: dict) -> float:
    """The T that was fitted, applied or not (an out-of-fold one that gave no gain is stored as T = 1)."""
    return calibration.get("fitted_temperature", calibration["temperature"])


def drift(judge: Judge, records: Sequence[Record], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Agreement on new teacher labels, compared with the agreement measured at training time.

    The verdict is "within" when the new kappa's bootstrap interval overlaps the training one (or,
    without intervals, when the new kappa is at least the training kappa), else "DEGRADED". Teacher
    labels of one class give no verdict (kappa cannot tell a good judge there): an InputError says so.
    """
    label_indices(records, judge.classes_)
    source = sources_of(records)
    refuse_training_rows(judge, records, "its agreement there says nothing of new data", source)
    taught = sorted({r.label for r in records})
    if len(taught) < 2:  # kappa is then 0 or undefined whatever the judge says: within or DEGRADED would be made up
        raise InputError(f"all {len(records)} teacher labels are {taught[0]!r}, so kappa cannot measure agreement on "
                         "them: a drift check needs teacher labels of at least two classes", path=source)
    predicted = [p.label for p in judge.predict(records)]
    new = agreement([r.label for r in records], predicted, judge.classes_, groups=[r.prompt_group for r in records],
                    safe_labels=judge.scheme.safe_labels, n_boot=n_boot, seed=seed)
    trained = (judge.meta.get("metrics") or {}).get("test") or {}
    if trained.get("kappa") is None:
        verdict = "unknown"
    elif new.get("kappa_ci") and trained.get("kappa_ci") and not np.isnan(new["kappa_ci"][0]):
        verdict = "within" if new["kappa_ci"][1] >= trained["kappa_ci"][0] else "DEGRADED"
    else:
        verdict = "within" if new["kappa"] >= trained["kappa"] else "DEGRADED"
    return {"n": new["n"], "groups": new["groups"], "kappa": new["kappa"], "kappa_ci": new["kappa_ci"], "accuracy": new["accuracy"],
            "training": {"kappa": trained.get("kappa"), "kappa_ci": trained.get("kappa_ci"), "n": trained.get("n")},
            "verdict": verdict, "agreement": new}


def format_drift(result: dict) -> str:
    """One plain sentence a user can act on."""
    if result["verdict"] == "unknown":
        return f"kappa on {result['n']} new teacher labels: {with_ci(result, 'kappa')}; the artifact has no training-time kappa to compare"
    message = (f"kappa on {result['n']} new teacher labels: {with_ci(result, 'kappa')}; at training time: "
               f"{with_ci(result['training'], 'kappa')} (n={result['training']['n']})")
    if result["verdict"] == "within":
        return message + "\nwithin: the judge still agrees with its teacher as well as it did at training time"
    return message + ("\nDEGRADED: agreement is below what was measured at training time; collect new teacher "
                      "labels for this data and distil again (or escalate more items to the teacher)")


def format_calibration(result: dict) -> str:
    if out_of_fold(result):
        fitted = (f"temperature {fitted_temperature(result):.3f} fitted on {result['n']} "
                  f"out-of-fold predictions; after it, cross-fitted over prompt groups ({result['cross_fit_folds']} folds), "
                  f"log loss {result['nll_before']:.4f} -> {result['nll_after']:.4f}: "
                  + ("applied" if result["applied"] else "no gain, not applied (the judge keeps T = 1)"))
    elif "cross_fit_folds" in result:
        fitted = (f"temperature {result['temperature']:.3f} fitted on {result['n']} teacher labels"
                  + (" (at the edge of its search range: these labels barely constrain it)" if result["at_bound"] else "")
                  + f"; before: the judge as it was (T = {result['temperature_before']:.3f}); after: cross-fitted over "
                  f"prompt groups ({result['cross_fit_folds']} folds), log loss {result['nll_before']:.4f} -> "
                  f"{result['nll_after']:.4f}: " + ("applied" if result["applied"] else
                                                   f"no gain, not applied (the judge keeps T = {result['temperature_before']:.3f})"))
    else:  # a block written before the figures were cross-fitted
        fitted = f"temperature {result['temperature']:.3f} fitted on {result['n']} teacher labels"
    return (f"{fitted}\n"
            f"expected calibration error ({result['bins']} bins): {result['ece_before']:.4f} -> {result['ece_after']:.4f}\n"
            f"Brier score: {result['brier_before']:.4f} -> {result['brier_after']:.4f}"
            + (f"\nreliability diagram drawn to {result['png']}" if result.get("png") else ""))
