"""Which student to ship: every candidate is compared on out-of-fold predictions over the same grouped folds.

The rules (docs/distill.md says the same):

- **Design.** The labelled rows (less a `--holdout` test split, if asked for) are cut into K grouped,
  label-stratified folds (`folds`, default 5). The lexical student runs all K. A transformer runs
  folds while the budget affords another one plus its refit, both timed from the folds that ran
  (`transformer_folds` caps them), early-stopping on a slice of each fold's own fitting rows, never
  on the held-out fold. Its first fold reads the widest view; the other views are tried on that fold
  only if, timed from it, they and all K folds still fit beside the refit.
- **The probe** reads a frozen backbone: its features cost one forward pass over the rows, so it runs
  all K folds whenever that pass fits the budget. A further view's pass may take a third of what is left,
  short of what a transformer after it needs to train at all; once none could train, all but FINISH_SECONDS.
- **Comparison.** Candidates that predicted every row are compared on all of them, each with its paired
  kappa difference to the best and a 95% paired group-bootstrap interval; one that predicted only some
  folds, on its own rows against the choice among those (see `choose`).
- **Ensembles cost nothing extra.** The stack and the blend are fitted on those out-of-fold
  predictions (no member is retrained), so they run whenever two members did; when a member ran only
  some folds, a second pair combines the members that predicted every row.
- **Per-model rates guard the choice.** Where the rows name two or more response models, each
  candidate's row also gives its worst model's rate error out of fold (the student's mean probability
  minus the teacher's share, in points, paired group-bootstrap interval): what a user publishing
  per-model rates needs to see. Kappa still ranks; with ~150 rows a model those intervals are +/-4-8
  points wide, too wide to rank by. But a winner whose worst model is off at 95% (by a point or more)
  yields to the best candidate whose worst model is not and is nearer, if that one's kappa is not
  resolved below the best's
  (`rate_guard`; on nested XSTest splits it cut the worst model's error from 4.3 to 1.9 points at
  the same kappa, docs/benchmarks.md).
- **Ties.** The best out-of-fold kappa wins, unless a student cheaper to score is within `tie_margin` (0.01)
  of it. Cost is the backbone passes a scored row needs (`scoring_passes`): none for lexical, one for a probe
  or a transformer, an ensemble's members' sum, so a stack of lexical and the probe costs what the probe does
  and the better kappa of the two wins. Not "the cheapest whose interval includes zero": on a thousand
  rows a paired interval is about +/-0.04 wide, so that rule would ship TF-IDF whenever the better
  student's lead is smaller than that, throwing away the expected gain to save scoring time.
- **Every label in the shipped judge.** The winner is refitted on all those rows with the settings it
  chose (a transformer for the epoch count early stopping chose in its folds); see distill.py.
- **Budget.** Before a transformer starts, the cost of a fold and of its refit is estimated from a few
  timed training steps (epochs are cut if not even one fold fits); after each fold, from that fold's
  own time. The leaderboard says what was cut.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from judge import __version__
from judge.backbones import PRESETS, missing_backbone
from judge.calibrate import calibrate_out_of_fold
from judge.errors import InputError
from judge.evaluate import benchmark_view
from judge.metrics import MIN_GROUPS, agreement, paired_kappa_difference, top_labels
from judge.model import Judge, write_meta
from judge.records import Record
from judge.schemes import Scheme
from judge.splits import Folds, Split, early_stopping_split, grouped_folds
from judge.training import ranks
from judge.training.config import TrainConfig
from judge.training.lexical import CLASS_WEIGHTS, CS, FIRST_C, cross_validate_lexical, distinct_views, kappa, train_lexical
from judge.views import VIEWS

log = logging.getLogger(__name__)
ESTIMATE_MARGIN = 1.3  # Trainer overhead (evaluation, checkpoints) on top of the probed step time
MEASURED_MARGIN = 1.1  # on top of what a fold that ran took: the next one's batches are not the same
MIN_EPOCH_SHARE = 0.75  # the budget may cut a fine-tune's epochs this far and no further: MiniLM's full fine-tune
# stayed at the majority class after 1 epoch of 4 on XSTest's five folds (kappa 0) and reached ~0.5 after 2
BACKBONE_PASSES = {"lexical": 0, "transformer": 1, "probe": 1}  # per scored row: what a tie is broken by


def parse_budget(text: str | None) -> float:
    """Seconds in "90s", "10m", "1.5h" (a bare number is minutes); "none" or empty is unlimited."""
    if text is None or str(text).strip().lower() in ("", "none", "inf", "0"):
        return math.inf
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text).lower())
    if not match:
        raise InputError(f"budget {text!r}: expected e.g. 90s, 10m, 1h or none")
    return float(match.group(1)) * {"s": 1, "m": 60, "": 60, "h": 3600}[match.group(2)]


def search_views(config: TrainConfig) -> tuple[str, ...]:
    if config.views == "auto":
        return tuple(VIEWS)
    views = tuple(v.strip() for v in config.views.split(",") if v.strip())
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise InputError(f"views {config.views!r}: choose from {', '.join(VIEWS)} (comma-separated) or auto")
    return views


@dataclass
class Context:
    """What every candidate's cross-validation shares: the rows, their folds, the clock and the printer."""

    records: list[Record]
    folds: Folds
    scheme: Scheme
    config: TrainConfig
    work: Path
    budget: float
    started: float = field(default_factory=time.perf_counter)
    progress: bool = False
    reserved: float = 0.0  # seconds kept back for refitting transformers that already ran
    later: list = field(default_factory=list)  # the candidates still to run after the current one

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started) - self.reserved

    def say(self, message: str) -> None:
        log.info(message)
        if self.progress and ranks.is_main():
            left = self.budget - (time.perf_counter() - self.started)
            print(f"[distill] {message}" + (f"  ({left:.0f}s of the budget left)" if math.isfinite(left) else ""),
                  file=sys.stderr, flush=True)


@dataclass
class Result:
    """One leaderboard row, plus (not serialised) the out-of-fold probabilities and what refitting needs."""

    candidate: str
    kind: str
    status: str = "skipped"  # trained / skipped
    note: str = ""
    view: str | None = None
    design: str | None = None
    rows: int | None = None
    kappa: float | None = None  # on every row, or (a candidate cut to some folds) on its own rows
    kappa_ci: tuple[float, float] | None = None
    delta: float | None = None  # kappa - the best's (a cut candidate: the full-coverage choice's), paired on the same rows
    delta_ci: tuple[float, float] | None = None
    worst_model: str | None = None  # the response model whose rate (mean probability) is furthest from the teacher's
    worst_error: float | None = None  # student - teacher, as a fraction, on the same rows as kappa
    worst_error_ci: tuple[float, float] | None = None
    chosen_over: str | None = None  # the best-kappa candidate the rate guard passed over for this one
    seconds: float | None = None
    estimate_seconds: float | None = None
    probs: np.ndarray | None = field(default=None, repr=False)
    covered: np.ndarray | None = field(default=None, repr=False)
    settings: dict = field(default_factory=dict, repr=False)
    source: object = field(default=None, repr=False)

    def row(self) -> dict:
        keys = ("candidate", "kind", "status", "note", "view", "design", "rows", "kappa", "kappa_ci", "delta",
                "delta_ci", "worst_model", "worst_error", "worst_error_ci", "seconds", "estimate_seconds")
        return {k: getattr(self, k) for k in keys} | {"settings": {k: v for k, v in self.settings.items() if k != "fitted"}}


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def stamp(meta: dict, name: str, scheme: Scheme, config: TrainConfig) -> dict:
    meta.update(judge_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                scheme=scheme.to_dict(), student=name, config=config.to_dict())
    return meta


class LexicalCandidate:
    """TF-IDF + logistic regression; view, C and class weighting chosen on out-of-fold kappa."""

    kind = "lexical"

    def __init__(self, name: str = "lexical", *, views: tuple[str, ...] | None = None, Cs=CS,
                 class_weights=CLASS_WEIGHTS):
        self.name, self.views, self.Cs, self.class_weights = name, views, Cs, class_weights

    def cross_validate(self, ctx: Context, result: Result) -> None:
        views_only = ctx.config.lexical_search == "views"
        if ctx.config.lexical_search not in ("full", "views"):
            raise InputError(f"lexical_search {ctx.config.lexical_search!r}: full or views")
        cv = cross_validate_lexical(ctx.records, ctx.folds, ctx.scheme, views=self.views or search_views(ctx.config),
                                    Cs=(FIRST_C,) if views_only else self.Cs,
                                    class_weights=(None,) if views_only else self.class_weights,
                                    seed=ctx.config.seed, say=ctx.say)
        result.probs, result.covered = cv.probs, np.ones(len(ctx.records), bool)
        result.view, result.design = cv.view, f"{ctx.folds.k}-fold"
        result.settings = {"view": cv.view, "C": cv.C, "class_weight": cv.class_weight, "search": cv.search}

    def refit(self, records, scheme, config, result: Result, out: Path) -> dict:
        if not ranks.is_main():  # nothing to train together: rank 0 fits and writes it
            return {}
        s = result.settings
        info = train_lexical(records, out, view=s["view"], C=s["C"], class_weight=s["class_weight"], seed=config.seed)
        meta = {"kind": "lexical", "view": info.pop("view"), "model_file": info.pop("model_file"),
                "training": {**info, "cv_search": s["search"]}}
        write_meta(out, stamp(meta, self.name, scheme, config))
        return meta


def fewest_epochs(epochs: float) -> int:
    """The fewest epochs the budget may cut `epochs` to: MIN_EPOCH_SHARE of them, and at least one."""
    return max(1, math.ceil(MIN_EPOCH_SHARE * epochs))


def least_time(epochs: float, fold_cost: float, refit_cost: float) -> float:
    """The least time left in which `fit_to_budget` trains rather than refuses: one fold and the refit, at
    `fewest_epochs` where that is fewer than `epochs`.

    >>> least_time(4.0, 500, 600), least_time(0.5, 100, 100)
    (825.0, 200.0)
    """
    return (fold_cost + refit_cost) * min(1.0, fewest_epochs(epochs) / epochs)


def fit_to_budget(left: float, wanted: int, epochs: float, fold_cost: float, refit_cost: float, rate: float):
    """(folds expected to fit, epochs, fold cost, refit cost, note): the refit is set aside first; if not
    even one fold fits beside it, the epochs are cut in proportion, and below MIN_EPOCH_SHARE of them (or
    one epoch) it is refused: an under-trained transformer costs minutes and scores nothing the others do not.

    >>> fit_to_budget(900, 5, 4.0, 150, 250, 10.0)[:2], fit_to_budget(900, 5, 4.0, 500, 600, 10.0)[:2]
    ((4, 4.0), (1, 3.0))
    """
    folds = min(wanted, math.floor((left - refit_cost) / fold_cost)) if left > refit_cost else 0
    if folds >= 1:
        return folds, epochs, fold_cost, refit_cost, ""
    capped = math.floor(epochs * left / (fold_cost + refit_cost))
    if left < least_time(epochs, fold_cost, refit_cost):
        raise InputError(f"one fold and the refit need ~{(fold_cost + refit_cost) / epochs:.0f}s per epoch "
                         f"(measured {rate:.1f} examples/s); {max(left, 0):.0f}s of the budget left afford "
                         f"{max(capped, 0)} of {epochs:g} epochs, too few to train")
    capped = max(capped, fewest_epochs(epochs))  # least_time's own product may round a hair below it
    scale = capped / epochs
    return 1, float(capped), fold_cost * scale, refit_cost * scale, (
        f"epochs capped {epochs:g} -> {capped} to fit the budget: early stopping may not have been reached")


def measured_costs(fold: dict, epochs: float, rows: int, refit_epochs: int) -> tuple[float, float]:
    """(seconds for one more fold, for the refit on all `rows`), timed from a fold that ran (its training
    record, with `fold_seconds`): the next fold may run every epoch even if this one stopped early; the
    refit trains `refit_epochs` on every row.

    >>> fold = {"fold_seconds": 200.0, "train_seconds": 180.0, "train_rows": 570, "epochs_run": 4.0}
    >>> measured_costs(fold, 4.0, 791, 4)
    (220.0, 274.8)
    """
    ran = max(fold["epochs_run"], 1e-9)
    per_example_epoch = fold["train_seconds"] / (fold["train_rows"] * ran)
    return (round(MEASURED_MARGIN * fold["fold_seconds"] * max(1.0, epochs / ran), 1),
            round(MEASURED_MARGIN * rows * refit_epochs * per_example_epoch, 1))


class TransformerCandidate:
    """LoRA or a full fine-tune of a transformer backbone (None: the config's), via judge/training/transformer.py."""

    kind = "transformer"

    def __init__(self, name: str, backbone: str | None = None, finetune: str | None = None):
        self.name, self.backbone, self.finetune = name, backbone, finetune
        self.speed: tuple | None = None  # (context, config, examples/s): timed once, for a probe before it and its plan

    def configure(self, config: TrainConfig) -> TrainConfig:
        finetune = self.finetune or config.finetune
        # a full fine-tune moves full-precision weights: 4-bit only if asked for (and then refused)
        quant = "none" if finetune == "full" and config.quant == "auto" else config.quant
        return replace(config, backbone=self.backbone or config.backbone, finetune=finetune, quant=quant)

    def _train(self, rows, scheme, config, out: Path, progress: bool, recorded: TrainConfig | None = None) -> dict:
        """Train on `rows` (early-stopping on val_size of them) into `out`; judge.json records `recorded`
        (the run's config, so the card can rebuild it) or `config`."""
        from judge.training.transformer import train_transformer

        fit, val = early_stopping_split(rows, config.val_size, config.seed + 1)
        training = train_transformer(Split(fit, val, []), scheme, config, out, progress=progress)
        training.update(view=config.view, epochs=config.epochs, train_rows=len(fit))
        meta = {"kind": "transformer", "view": config.view, "max_length": config.max_length,
                "backbone": training.pop("backbone"), "training": training}
        if ranks.is_main():
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            write_meta(out, stamp(meta, self.name, scheme, recorded or config))
        ranks.wait()  # no rank loads the judge before rank 0 has written judge.json
        return meta

    def _fold(self, ctx: Context, cfg: TrainConfig, fold: int) -> tuple[np.ndarray, dict]:
        started = time.perf_counter()
        fit = [ctx.records[i] for i in ctx.folds.fit_rows(fold)]
        held = [ctx.records[i] for i in ctx.folds.held(fold)]
        out = ctx.work / f"{self.name}-fold{fold}-{cfg.view}"
        meta = self._train(fit, ctx.scheme, cfg, out, ctx.progress)
        probs = Judge.load(out).predict_proba(held)
        ranks.wait()  # every rank has read the fold's judge before rank 0 removes it
        if ranks.is_main():
            shutil.rmtree(out, ignore_errors=True)
        return probs, {**meta["training"], "fold_seconds": round(time.perf_counter() - started, 1)}

    def _plan_or_reason(self, ctx: Context, cfg: TrainConfig):
        try:
            return self.plan(ctx, cfg)
        except InputError as exc:
            return str(exc)

    def plan(self, ctx: Context, cfg: TrainConfig) -> tuple[int, float, float, float, str]:
        """(folds expected to fit, epochs, seconds per fold, seconds for the refit, note), from a speed probe."""
        if math.isinf(ctx.budget):
            return wanted_folds(ctx, cfg), cfg.epochs, math.nan, math.nan, ""
        fold_cost, refit_cost, rate = self.costs(ctx, cfg)
        return fit_to_budget(ctx.left(), wanted_folds(ctx, cfg), cfg.epochs, fold_cost, refit_cost, rate)

    def costs(self, ctx: Context, cfg: TrainConfig) -> tuple[float, float, float]:
        """(seconds for one fold, for the refit, training examples/s) at `cfg.epochs`, from a speed probe run
        once per context and config."""
        if self.speed is None or self.speed[0] is not ctx or self.speed[1] != cfg:
            self.speed = ctx, cfg, probe_train_speed(cfg, ctx.records, len(ctx.scheme.classes))
        rate = self.speed[2]
        n, k = len(ctx.records), ctx.folds.k
        fitting = (1 - 1 / k) * n
        # per epoch: the fold's training rows, its early-stopping rows evaluated (~3x faster); then the held fold
        per_fold_epoch = (fitting * (1 - cfg.val_size) + fitting * cfg.val_size / 3 + n / k / 3 / cfg.epochs) / rate
        return ESTIMATE_MARGIN * cfg.epochs * per_fold_epoch, ESTIMATE_MARGIN * cfg.epochs * n / rate, rate

    def least_time(self, ctx: Context) -> float:
        """The least time left in which the budget would let it train (rank 0's clock and speed probe)."""
        cfg = self.configure(ctx.config)
        try:
            fold_cost, refit_cost, _ = self.costs(ctx, cfg)
        except InputError:  # it cannot start at all: its own turn says why
            return math.inf
        return least_time(cfg.epochs, fold_cost, refit_cost)

    def cross_validate(self, ctx: Context, result: Result) -> None:
        cfg = self.configure(ctx.config)
        # rank 0 probes and decides for every rank: their clocks differ, and ranks that disagree deadlock
        planned = ranks.shared(self._plan_or_reason(ctx, cfg) if ranks.is_main() else None)
        if isinstance(planned, str):
            raise InputError(planned)
        n_folds, epochs, fold_cost, refit_cost, note = planned
        cfg = replace(cfg, epochs=epochs)
        if math.isfinite(fold_cost):
            result.estimate_seconds = round(n_folds * fold_cost + refit_cost, 1)
        views = distinct_views(ctx.records, search_views(ctx.config)) if ctx.config.student == "auto" else [cfg.view]
        probs = np.zeros((len(ctx.records), len(ctx.scheme.classes)))
        covered = np.zeros(len(ctx.records), bool)
        histories = []
        wanted = wanted_folds(ctx, cfg)
        # fold 1 reads the widest view (a cross-encoder can use the context TF-IDF gains little from); the
        # others are tried on it only if, timed from that fold, they and every fold still fit beside the refit
        view = views[-1]
        for fold in range(wanted):
            if histories and math.isfinite(ctx.budget):  # does one more fold still fit beside the refit?
                next_cost, refit_cost = measured_costs(histories[-1], epochs, len(ctx.records),
                                                       refit_epochs(histories, epochs))
                if ranks.shared(ctx.left() < next_cost + refit_cost):
                    note = join_notes(note, f"{fold} of {wanted} folds: the budget (a fold took "
                                            f"{histories[-1]['fold_seconds']:.0f}s, the refit needs ~{refit_cost:.0f}s)")
                    break
            ctx.say(f"{self.name}: fold {fold + 1} of {wanted}, view {view}, up to {epochs:g} epochs")
            held = ctx.folds.held(fold)
            fold_probs, training = self._fold(ctx, replace(cfg, view=view), fold)
            if fold == 0 and len(views) > 1:
                view, fold_probs, training, why = self._search_views(ctx, cfg, views, (fold_probs, training), wanted,
                                                                     result)
                note = join_notes(note, why)
            probs[held], covered[held] = fold_probs, True
            histories.append(training)
        result.probs, result.covered, result.view = probs, covered, view
        result.design = design_of(covered, ctx.folds)
        result.note = join_notes(result.note, note)
        result.settings.update(view=view, epochs_max=epochs, refit_epochs=ranks.shared(refit_epochs(histories, epochs)),
                               fold_best_epochs=[best_epoch(h) for h in histories])
        if math.isfinite(ctx.budget):  # kept back from later candidates: the refit, timed from the last fold
            ctx.reserved += measured_costs(histories[-1], epochs, len(ctx.records), result.settings["refit_epochs"])[1]

    def _search_views(self, ctx: Context, cfg: TrainConfig, views: list[str], widest: tuple, wanted: int,
                      result: Result) -> tuple[str, np.ndarray, dict, str]:
        """The other views on fold 1, if the budget affords them: (chosen view, its fold probabilities, its
        training record, a note when the search was cut)."""
        training = widest[1]
        if math.isfinite(ctx.budget):
            fold_cost, refit_cost = measured_costs(training, cfg.epochs, len(ctx.records),
                                                   refit_epochs([training], cfg.epochs))
            if ranks.shared(ctx.left() < (wanted - 1 + len(views) - 1) * fold_cost + refit_cost):
                return views[-1], *widest, (f"view {views[-1]}, the widest: {len(views)} views on a fold and "
                                            f"{wanted} folds do not fit (a fold took {training['fold_seconds']:.0f}s)")
        tried = {views[-1]: widest}
        for view in views[:-1]:
            ctx.say(f"{self.name}: view {view} on fold 1 of {ctx.folds.k} (up to {cfg.epochs:g} epochs)")
            tried[view] = self._fold(ctx, replace(cfg, view=view), 0)
        truth = [ctx.records[i].label for i in ctx.folds.held(0)]
        scores = {v: kappa(truth, top_labels(tried[v][0], ctx.scheme.classes), ctx.scheme.classes) for v in views}
        view = ranks.shared(max(views, key=lambda v: scores[v]))  # a tie goes to the narrower view; rank 0 decides
        result.settings["view_search"] = {v: round(s, 4) for v, s in scores.items()}
        return view, *tried[view], ""

    def refit(self, records, scheme, config, result: Result, out: Path) -> dict:
        """All rows, no validation left: as many epochs as early stopping chose in the folds."""
        cfg = replace(self.configure(config), view=result.settings["view"], epochs=float(result.settings["refit_epochs"]),
                      val_size=0.0)
        meta = self._train(records, scheme, cfg, out, progress=False, recorded=config)
        meta["training"]["fold_best_epochs"] = result.settings["fold_best_epochs"]
        if ranks.is_main():
            write_meta(out, meta)
        return meta


def wanted_folds(ctx: Context, cfg: TrainConfig) -> int:
    return ctx.folds.k if cfg.transformer_folds == "auto" else max(1, min(int(cfg.transformer_folds), ctx.folds.k))


def design_of(covered: np.ndarray, folds: Folds) -> str:
    """"5-fold" when every row was predicted out of fold, else "1 of 5 folds"."""
    ran = sum(bool(covered[folds.held(f)].all()) for f in range(folds.k))
    return f"{folds.k}-fold" if ran == folds.k else f"{ran} of {folds.k} folds"


def best_epoch(training: dict) -> float | None:
    """The last epoch at the best validation kappa (None without validation): on a small validation
    slice kappa plateaus early, and the refit, on more rows, does no worse for training through the plateau."""
    history = training.get("val_history") or []
    return max(history, key=lambda h: (h["val_kappa"], h["epoch"]))["epoch"] if history else None


def refit_epochs(histories: list[dict], epochs: float) -> int:
    """The median of the folds' best epochs, rounded up (at least 1); `epochs` where none validated."""
    best = [b for b in (best_epoch(h) for h in histories) if b is not None]
    return max(1, math.ceil(float(np.median(best)))) if best else max(1, math.ceil(epochs))


class ProbeCandidate:
    """A logistic regression on a frozen backbone's pooled hidden states (judge/backends/probe.py): the
    backbone runs once over every row, so all K folds and the refit cost what one forward pass does."""

    kind = "probe"

    def __init__(self, name: str, backbone: str):
        self.name, self.backbone = name, backbone
        self.features: tuple[list[Record], np.ndarray] | None = None  # (the rows, the chosen features): for refit
        self.views_unreserved = False  # no transformer after it can train any more: said once, then the views use it

    def cross_validate(self, ctx: Context, result: Result) -> None:
        from judge.backbones import local_backbone, resolve_backbone
        from judge.backends.probe import Encoder, backbone_layers, searched_layers
        from judge.training.probe import cross_validate_probe

        self.views_unreserved = False
        ref = local_backbone(resolve_backbone(self.backbone))
        layers = searched_layers(backbone_layers(ref))
        longest = ctx.config.probe_max_length
        encoder = Encoder(ref, max(layers), layers, longest)
        views = distinct_views(ctx.records, search_views(ctx.config))
        n = len(ctx.records)
        costs = ranks.shared(PassCosts.timed(encoder, ctx.records, views) if ranks.is_main() else None)
        length = ranks.shared(affordable_length(longest, lambda tokens: costs.seconds(views[0], tokens), ctx.left()))
        seconds = {view: costs.seconds(view, length or longest) for view in views}
        result.estimate_seconds = round(sum(seconds.values()), 1)
        if length is None:
            shortest = shortest_length(longest)
            at_shortest = f", ~{costs.seconds(views[0], shortest):.0f}s at {shortest}" if shortest < longest else ""
            raise InputError(f"one pass over {n} rows needs ~{seconds[views[0]]:.0f}s at {longest} tokens{at_shortest}; "
                             f"{max(ctx.left(), 0):.0f}s of the budget left")
        if length < longest:  # a shorter read beats no probe: the pass costs in proportion to the tokens read
            encoder.max_length = length
            result.note = (f"{length} tokens, not probe_max_length {longest}: a pass at {longest} needs "
                           f"~{costs.seconds(views[0], longest):.0f}s, {max(ctx.left(), 0):.0f}s of the budget left")
        best, tried, search = None, [], []
        scale = 1.0  # the views after a pass are priced from it, with MEASURED_MARGIN (the first estimate ran ~17% low)
        for view in views:  # narrowest first: the response alone is what a mean over tokens reads least diluted
            cost = scale * seconds[view]
            stop = tried and math.isfinite(ctx.budget) and ranks.shared(
                self.too_dear(ctx, cost) if ranks.is_main() else None)
            if stop:
                result.note = join_notes(result.note, f"views {', '.join(tried)}: a pass over the {view} view needs "
                                                      f"~{cost:.0f}s, {max(ctx.left(), 0):.0f}s of the budget left")
                break
            ctx.say(f"{self.name}: layers {layers} of {self.backbone} over {n} rows, view {view} (~{cost:.0f}s)")
            started = time.perf_counter()
            features = encoder.features(ctx.records, view)
            scale = ranks.shared(MEASURED_MARGIN * (time.perf_counter() - started) / seconds[view])
            cv = cross_validate_probe(features, [r.label for r in ctx.records], ctx.folds, ctx.scheme.classes,
                                      seed=ctx.config.seed, say=ctx.say)
            tried.append(view)
            search += [{"view": view, **trial} for trial in cv.search]
            if best is None or cv.kappa > best[1].kappa:
                best = (view, cv, features[cv.layer])
        view, cv, chosen = best
        self.features = (ctx.records, chosen)
        result.probs, result.covered = cv.probs, np.ones(n, bool)
        result.view, result.design = view, f"{ctx.folds.k}-fold"
        result.settings = {"view": view, "layer": cv.layer, "depth": max(layers), "max_length": length, "C": cv.C,
                           "search": search, "backbone": {"name": self.backbone, "path": ref.path}}

    def too_dear(self, ctx: Context, cost: float) -> bool:
        """Whether a further view's pass of `cost` seconds is not read. While a transformer after the probe could
        still train in what is left, a view takes at most a third of it and never the time that transformer needs
        (on 2,000-row files a view more gained the probe nothing; what a fine-tune adds depends on the data); once
        none could, the views may use all but FINISH_SECONDS (else 453 s of 900 went unused on one; docs/benchmarks.md)."""
        left = ctx.left()
        needs = [c.least_time(ctx) for c in ctx.later if isinstance(c, TransformerCandidate)]
        trainable = [need for need in needs if need <= left]
        if trainable:
            return cost > left / 3 or cost > left - sum(trainable)
        if needs and not self.views_unreserved:
            ctx.say(f"{self.name}: no transformer after it can train in the {max(left, 0):.0f}s left; views may use them")
        self.views_unreserved = True
        return cost > left - FINISH_SECONDS

    def refit(self, records, scheme, config, result: Result, out: Path) -> dict:
        """The classifier on every row's features: those cross-validation computed, when the rows are the same."""
        from judge.backbones import local_backbone, resolve_backbone
        from judge.backends.probe import Encoder
        from judge.training.probe import train_probe

        if not ranks.is_main():  # nothing to train together: rank 0 fits and writes it
            return {}
        s = result.settings
        if self.features is not None and self.features[0] is records:
            features = self.features[1]
        else:
            encoder = Encoder(local_backbone(resolve_backbone(self.backbone)), s["depth"], [s["layer"]],
                              s["max_length"])
            features = encoder.features(records, s["view"])[s["layer"]]
        info = train_probe(features, [r.label for r in records], out, C=s["C"], seed=config.seed)
        meta = {"kind": "probe", "view": s["view"], "max_length": s["max_length"], "model_file": info["model_file"],
                "backbone": {"name": self.backbone, "path": str(Path(s["backbone"]["path"]).resolve())},
                "probe": {"layer": s["layer"], "depth": s["depth"], "pooling": "mean"},
                "training": {"C": s["C"], "cv_search": s["search"]}}
        write_meta(out, stamp(meta, self.name, scheme, config))
        return meta


@dataclass
class PassCosts:
    """What one forward pass of a frozen backbone costs: seconds per token, and every row's untruncated token
    count in each view, so a pass at any length is priced without tokenizing again."""

    per_token: float
    lengths: dict[str, list[int]]

    @classmethod
    def timed(cls, encoder, records: list[Record], views: list[str], sample: int = 32) -> PassCosts:
        """A seeded random batch of the first view timed (after a warm-up) per padded token; length-sorted
        batches pad little, so a pass costs about that per real token."""
        from judge.backends.transformer import token_lengths

        rows = [records[i] for i in np.random.default_rng(0).permutation(len(records))[:sample]]
        encoder.features(rows[:2], views[0])
        started = time.perf_counter()
        encoder.features(rows, views[0], batch_size=len(rows))
        padded = len(rows) * max(token_lengths(encoder.tokenizer, rows, views[0], encoder.max_length))
        return cls((time.perf_counter() - started) / padded,
                   {view: token_lengths(encoder.tokenizer, records, view, max_length=10**6) for view in views})

    def seconds(self, view: str, max_length: int) -> float:
        """A pass over every row in `view`, each cut at `max_length` tokens (as `encode` cuts a pair: in total)."""
        return MEASURED_MARGIN * self.per_token * sum(min(n, max_length) for n in self.lengths[view])


FINISH_SECONDS = 20.0  # what a probe's views leave of the budget once nothing after them needs it: the winner's refit
# and the report after the clock stops (7 s on 2,000 rows) and start-up before it (3 s), so the command ends in time
PROBE_MIN_LENGTH = 64  # the shortest read a probe is cut to for the budget: the demo's length


def shortest_length(longest: int) -> int:
    """The last of `longest`, `longest` / 2, ... that is not below PROBE_MIN_LENGTH (`longest` itself if it is)."""
    length = longest
    while length // 2 >= PROBE_MIN_LENGTH:
        length //= 2
    return length


def affordable_length(longest: int, seconds_at, left: float) -> int | None:
    """The longest of `longest`, `longest` / 2, ... down to `shortest_length` whose pass (`seconds_at(tokens)`)
    fits in `left` seconds; None if not even the shortest does.

    >>> affordable_length(256, lambda tokens: 2.0 * tokens, 600), affordable_length(256, lambda tokens: 2.0 * tokens, 300)
    (256, 128)
    >>> affordable_length(256, lambda tokens: 2.0 * tokens, 100), affordable_length(48, lambda tokens: 2.0 * tokens, 90)
    (None, None)
    """
    length = longest
    while seconds_at(length) > left:
        if length == shortest_length(longest):
            return None
        length //= 2
    return length


class EnsembleCandidate:
    """A combiner (judge/training/ensemble.py: `stack` or `blend`) over every member that ran, or with
    `every_row` over those that predicted every row: a transformer the budget cut to some folds would
    otherwise confine the combination of the others to those folds' rows."""

    kind = "ensemble"

    def __init__(self, name: str = "stack", combiner: str = "stack", every_row: bool = False):
        self.name, self.combiner, self.every_row = name, combiner, every_row
        self.members: list[Result] = []

    def members_from(self, results: list[Result]) -> list[Result] | None:
        """Its members among `results`; None when `every_row` leaves the plain combiner's members, or fewer than two."""
        trained = [r for r in results if r.status == "trained" and r.kind != "ensemble"]
        if not self.every_row:
            return trained
        whole = [r for r in trained if r.covered.all()]
        return whole if 2 <= len(whole) < len(trained) else None

    def cross_validate(self, ctx: Context, result: Result) -> None:
        from judge.training.ensemble import Blend, Stack, cross_fitted

        if len(self.members) < 2:
            raise InputError("needs at least two trained candidates to combine")
        covered = np.logical_and.reduce([m.covered for m in self.members])
        rows = np.flatnonzero(covered)
        combiner = {"stack": Stack, "blend": Blend}[self.combiner]()
        ctx.say(f"{self.name}: {self.combiner} of {', '.join(m.candidate for m in self.members)} on {len(rows)} "
                "out-of-fold rows")
        oof, fitted, inner = cross_fitted(combiner, [m.probs[rows] for m in self.members],
                                          [ctx.records[i] for i in rows], ctx.scheme.classes, ctx.config.seed)
        result.probs = np.zeros((len(ctx.records), len(ctx.scheme.classes)))
        result.probs[rows], result.covered = oof, covered
        result.view = max((m.view for m in self.members), key=list(VIEWS).index)
        result.design = design_of(covered, ctx.folds)
        result.settings = {"members": [m.candidate for m in self.members], "fitted": fitted}
        result.note = f"inner {inner}-fold CV of the combiner on the members' out-of-fold rows"

    def refit(self, records, scheme, config, result: Result, out: Path) -> dict:
        """Members refitted on all rows under members/; the combiner as fitted on their out-of-fold predictions."""
        from judge.backends.ensemble import COMBINER_FILE
        from judge.backends.lexical import save_estimator

        members = []
        for m in self.members:
            m.source.refit(records, scheme, config, m, out / "members" / m.candidate)
            members.append({"name": m.candidate, "kind": m.kind, "view": m.view, "path": f"members/{m.candidate}"})
        if not ranks.is_main():
            return {}
        meta = {"kind": "ensemble", "view": result.view, "members": members,
                "training": {"combiner": self.combiner, "oof_rows": int(result.covered.sum())}}
        fitted = result.settings["fitted"]
        if self.combiner == "blend":
            meta["weights"] = list(fitted)
        else:
            out.mkdir(parents=True, exist_ok=True)
            save_estimator(fitted, out / COMBINER_FILE)
            meta["combiner_file"] = COMBINER_FILE
            meta["training"]["combiner_classes"] = [str(c) for c in fitted.classes_]
        write_meta(out, stamp(meta, self.name, scheme, config))
        return meta


class Unavailable:
    """A candidate that cannot run here (its backbone package is missing); the leaderboard says why."""

    def __init__(self, name: str, reason: str, kind: str = "transformer"):
        self.name, self.reason, self.kind = name, reason, kind

    def cross_validate(self, ctx: Context, result: Result) -> None:
        raise InputError(self.reason)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def probe_train_speed(config: TrainConfig, records, num_labels: int, steps: int = 2) -> float:
    """Training examples per second for this backbone on `records` here: a few real steps (LoRA or full) on
    one seeded random batch, scaled from its padded length to the records' mean token length, since
    length-grouped batches pad little (timed at the padded length alone, it capped GPTFuzz's folds to 3
    epochs and left 483 s of the budget unused)."""
    import torch
    from peft import get_peft_model

    from judge.backbones import local_backbone, resolve_backbone
    from judge.backends.transformer import encode, load_classifier, load_tokenizer, token_lengths
    from judge.training.transformer import lora_config, resolve_precision, resolve_quant

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = local_backbone(resolve_backbone(config.backbone))
    tokenizer = load_tokenizer(ref)
    model = load_classifier(ref, num_labels, pad_token_id=tokenizer.pad_token_id)
    if config.finetune == "lora":
        model = get_peft_model(model, lora_config(config))
    model = model.to(device).train()
    sample = [records[i] for i in np.random.default_rng(config.seed).permutation(len(records))[:config.batch_size]]
    batch = encode(tokenizer, sample, config.view, config.max_length).to(device)
    labels = torch.zeros(len(sample), dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    bf16 = resolve_precision(config, resolve_quant(config)) == "bf16"
    elapsed = 0.0
    for step in range(steps + 1):  # the first step warms up and is not timed
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):  # as the Trainer's mixed precision
            loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed += (time.perf_counter() - started) if step else 0.0
    lengths = token_lengths(tokenizer, records, config.view, config.max_length)
    mean_tokens = sum(lengths) / len(lengths)
    return steps * batch["input_ids"].numel() / elapsed / mean_tokens


FINETUNES = ("lora", "full")
PORTFOLIOS = ("default", "quick", "wide")
COMBINERS = ("stack", "blend")


def candidates_for(student: str, config: TrainConfig) -> list:
    """The candidates `student` names: auto = the `portfolio`'s; stack / blend / ensemble = the members, then it.

    Every portfolio has the lexical student and a probe on `probe_backbone` (unless "none"). `default`
    and `quick` train one transformer: the configured backbone as a full fine-tune where it runs
    unquantized (MiniLM on a CPU or a GPU: on a CPU a second transformer costs as much as the first and
    earned nothing in our benchmarks), LoRA under 4-bit QLoRA (1B+ parameters on CUDA). `wide` trains
    both, plus installed open LMs on CUDA. A backbone whose package is missing is listed as skipped,
    with the install command.
    """
    label = config.backbone if config.backbone in PRESETS else "transformer"
    if config.portfolio not in PORTFOLIOS:
        raise InputError(f"unknown portfolio {config.portfolio!r}: choose one of {', '.join(PORTFOLIOS)}")
    combiners = [EnsembleCandidate(c, c) for c in COMBINERS]
    if student == "auto":
        combiners += [EnsembleCandidate(f"{c}-all-rows", c, every_row=True) for c in COMBINERS]
    if student in ("auto", "ensemble", *COMBINERS):
        missing = missing_backbone(config.backbone)
        members = [LexicalCandidate(), *probe_candidates(config)]
        if missing:
            log.warning(missing)
            members.append(Unavailable(f"{label}-full", missing))
        else:
            from judge.training.transformer import resolve_quant  # imports torch, peft: only where one trains

            unquantized = resolve_quant(config) == "none"
            finetunes = (FINETUNES if unquantized else ("lora",)) if config.portfolio == "wide" else (
                ("full",) if unquantized else ("lora",))
            members += [TransformerCandidate(f"{label}-{f}", config.backbone, f) for f in finetunes]
            if config.portfolio == "wide" and _cuda():  # open LMs train in reasonable time only on a GPU
                # only presets already on disk: hub presets download gigabytes, so they are asked for by name
                members += [TransformerCandidate(f"{p}-lora", p, "lora") for p in PRESETS
                            if p not in (config.backbone, "minilm") and PRESETS[p].hub is None and not missing_backbone(p)]
        if student in COMBINERS:
            combiners = [c for c in combiners if c.name == student]
        return members + combiners
    if student == "lexical":
        return [LexicalCandidate()]
    if student == "probe" or (student.endswith("-probe") and student.removesuffix("-probe") in PRESETS):
        backbone = config.probe_backbone if student == "probe" else student.removesuffix("-probe")
        missing = missing_backbone(backbone)
        if missing:
            raise InputError(missing)
        return [ProbeCandidate(probe_name(backbone), backbone)]
    preset, _, finetune = student.rpartition("-")
    if student == "transformer" or (preset in (label, *PRESETS) and finetune in FINETUNES):
        backbone = config.backbone if student == "transformer" or preset == label else preset
        missing = missing_backbone(backbone)
        if missing:
            raise InputError(missing)
        if student == "transformer":  # named like auto names it on a preset (minilm-lora), else "transformer"
            return [TransformerCandidate(f"{label}-{config.finetune}" if label in PRESETS else "transformer")]
        return [TransformerCandidate(student, backbone, finetune)]
    names = ["auto", "lexical", "transformer", "probe", "ensemble", *COMBINERS,
             *(f"{p}-{f}" for p in PRESETS for f in (*FINETUNES, "probe"))]
    raise InputError(f"unknown student {student!r}: choose one of {', '.join(names)}")


def probe_candidates(config: TrainConfig) -> list:
    """The portfolio's probe on `probe_backbone`: none if "none", skipped with the install command if missing."""
    if config.probe_backbone == "none":
        return []
    name, missing = probe_name(config.probe_backbone), missing_backbone(config.probe_backbone)
    return [Unavailable(name, missing, kind="probe") if missing else ProbeCandidate(name, config.probe_backbone)]


def probe_name(backbone: str) -> str:
    return f"{backbone}-probe" if backbone in PRESETS else "probe"


@dataclass
class Portfolio:
    results: list[Result]
    winner: Result
    folds: Folds
    compared_rows: int
    resolved: bool | None  # every other candidate's paired interval lies below zero (None: only one ran)

    def leaderboard(self) -> list[dict]:
        return [r.row() for r in self.results]


def run_portfolio(records: list[Record], scheme: Scheme, config: TrainConfig, work_dir: str | Path, *,
                  candidates: list | None = None, progress: bool = False, within: str = "") -> Portfolio:
    """Cross-validate the candidates on grouped folds of `records` and choose one (rules in the module doc).

    Naming one student (``config.student``) runs it (and, for an ensemble, its members first) without
    the budget. Nothing is refitted here: ``refit_winner`` does that for the winner alone. `within`
    qualifies the counts the folds' errors give (distill's training split).
    """
    budget = parse_budget(config.budget) if config.student == "auto" or candidates is not None else math.inf
    candidates = candidates if candidates is not None else candidates_for(config.student, config)
    folds = grouped_folds(records, config.folds, config.seed, within=within)
    named = config.student != "auto" and len(candidates) == 1
    ctx = Context(records, folds, scheme, config, Path(work_dir), budget, progress=progress)
    results: list[Result] = []
    for number, candidate in enumerate(candidates, 1):
        if isinstance(candidate, EnsembleCandidate):
            members = candidate.members_from(results)
            if members is None:  # nothing its plain combiner does not already compare
                continue
            candidate.members = members
        result = Result(candidate.name, candidate.kind, source=candidate, note=folds.note if number == 1 else "")
        results.append(result)
        ctx.say(f"[{number}/{len(candidates)}] {candidate.name}")
        ctx.later = candidates[number:]
        t0 = time.perf_counter()
        try:
            candidate.cross_validate(ctx, result)
        except InputError as exc:
            if named:
                raise
            result.note = join_notes(result.note, str(exc))
            ctx.say(f"{candidate.name} skipped: {exc}")
            continue
        result.status, result.seconds = "trained", round(time.perf_counter() - t0, 1)
        result.rows = int(result.covered.sum())
    trained = [r for r in results if r.status == "trained"]
    if not trained:
        raise InputError("no candidate fitted the budget: raise --budget or name a --student")
    winner, compared, resolved = choose(trained, records, scheme, config)
    winner = trained[ranks.shared(trained.index(winner))]  # the ranks' probabilities may differ in the last bits
    ctx.say(f"chosen: {winner.candidate} (out-of-fold kappa {winner.kappa:.3f} on {compared} rows)")
    return Portfolio(results, winner, folds, compared, resolved)


def choose(trained: list[Result], records, scheme: Scheme, config: TrainConfig) -> tuple[Result, int, bool]:
    """(winner, rows compared, resolved). The candidates that predicted every row are scored on all of them:
    the best wins unless a cheaper one is within tie_margin. One that predicted only some folds (a transformer
    the budget cut, an ensemble with it) is scored on its own rows against that choice, and replaces it only by
    leading there by more than tie_margin: a candidate cut to one fold never shrinks the others' comparison."""
    full = [r for r in trained if r.covered.all()] or trained  # the lexical student always predicts every row
    rows = np.flatnonzero(np.logical_and.reduce([r.covered for r in full]))
    classes = scheme.classes

    def truth(on):
        return [records[i].label for i in on], [records[i].prompt_group for i in on]

    def rate(result: Result, on: np.ndarray) -> None:
        labels, groups = truth(on)
        report = agreement(labels, top_labels(result.probs[on], classes), classes, groups=groups, seed=config.seed)
        result.kappa, result.kappa_ci = round(report["kappa"], 4), rounded(report["kappa_ci"])
        worst_model_error(result, records, on, scheme, config.seed)

    def compare(result: Result, on: np.ndarray, against: Result) -> None:
        labels, groups = truth(on)
        delta, ci = paired_kappa_difference(labels, top_labels(result.probs[on], classes),
                                            top_labels(against.probs[on], classes), classes, groups, seed=config.seed)
        result.delta, result.delta_ci = round(delta, 4), rounded(ci)

    for r in full:
        rate(r, rows)
    best = max(full, key=lambda r: -math.inf if math.isnan(r.kappa) else r.kappa)
    for r in full:
        compare(r, rows, best)
    near = [r for r in full if r.kappa >= best.kappa - config.tie_margin]
    winner = min(near, key=lambda r: (scoring_passes(r), -r.kappa))
    partial = [r for r in trained if r not in full]
    for r in partial:
        own = np.flatnonzero(r.covered)
        rate(r, own)
        compare(r, own, winner)
        r.note = join_notes(f"- best: against {winner.candidate} on its {r.rows} rows", r.note)
    challengers = [r for r in partial if r.delta > config.tie_margin]
    if challengers:
        winner = max(challengers, key=lambda r: r.delta)
    if config.rate_guard:
        winner = rate_guard(winner, full, config.rate_guard_points / 100)
    resolved = None if len(trained) == 1 else (
        all(r is best or resolved_below(r) for r in full) and all(r is winner or resolved_below(r) for r in partial)
        and (winner in full or (winner.delta_ci is not None and winner.delta_ci[0] > 0)))
    return winner, len(rows), resolved


def resolved_below(result: Result) -> bool:
    """Its kappa is resolved below the one it was paired with (the interval lies under zero); without an
    interval (too few prompt groups) nothing is resolved."""
    return result.delta_ci is not None and result.delta_ci[1] < 0


def biased(result: Result, material: float = 0.0) -> bool:
    """Its worst response model's rate error is resolved from zero (a 95% interval on one side of it) and at
    least `material` (a share: 0.01 is a point)."""
    return (result.worst_error_ci is not None and (result.worst_error_ci[0] > 0 or result.worst_error_ci[1] < 0)
            and abs(result.worst_error) >= material)


def rate_guard(winner: Result, compared: list[Result], material: float = 0.0) -> Result:
    """The winner, or, if its worst model's rate is off at 95% out of fold by at least `material`, the best-kappa
    candidate of those compared on every row whose worst model is not, is nearer the teacher than the winner's,
    and whose kappa is not resolved below the best's: a user publishes per-model rates, and a bias resolved on
    ~150 rows a model is one the intervals can see. A smaller error is never traded for a larger one that merely
    has a wider interval, and an error under `material` counts as none, in the winner as in the others."""
    if not biased(winner, material):
        return winner
    calm = [r for r in compared if r.worst_error_ci is not None and not biased(r, material)
            and abs(r.worst_error) < abs(winner.worst_error) and not resolved_below(r)]
    if not calm:
        return winner
    chosen = max(calm, key=lambda r: (r.kappa, -scoring_passes(r)))
    chosen.chosen_over = winner.candidate
    low, high = (100 * x for x in winner.worst_error_ci)
    chosen.note = join_notes(f"chosen over {winner.candidate} (rate guard): its worst model, {winner.worst_model}, is "
                             f"{100 * winner.worst_error:+.1f} [{low:+.1f}, {high:+.1f}] points off", chosen.note)
    return chosen


def scoring_passes(result: Result) -> int:
    """Backbone passes one scored row costs: TF-IDF next to none, an ensemble what its members cost together."""
    if result.kind == "ensemble":
        return sum(scoring_passes(member) for member in result.source.members)
    return BACKBONE_PASSES[result.kind]


def worst_model_error(result: Result, records: list[Record], on: np.ndarray, scheme: Scheme, seed: int) -> None:
    """Set the result's worst response model on rows `on`: the row of `judge eval`'s benchmark view with the
    largest |student - teacher|, and its paired group-bootstrap interval. The student's rate is its mean
    out-of-fold probability after the temperature `judge distill` would give it (cross-fitted, as in its
    report), so the rate guard judges the rates the shipped judge would print. Left unset unless those
    rows name two or more models."""
    subset = [records[i] for i in on]
    probs, _ = calibrate_out_of_fold(result.probs[on], subset, scheme.classes, seed=seed)
    view = benchmark_view(subset, top_labels(probs, scheme.classes), scheme, probs=probs, seed=seed, ranking=False)
    if len(view["rows"]) < 2:
        return
    model, worst = max(view["rows"].items(), key=lambda item: item[1]["abs_error"])
    result.worst_model, result.worst_error = model, round(worst["error"], 4)
    result.worst_error_ci = rounded(worst["error_ci"])


def rounded(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    """An interval to 4 decimals for the leaderboard (None where too few prompt groups gave none)."""
    return None if interval is None else tuple(round(x, 4) for x in interval)


def format_leaderboard(rows: list[dict]) -> str:
    """The leaderboard as a text table: candidates in the order they ran, skipped ones with the reason; the
    worst model's rate error (points) where the rows named response models."""
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    def interval(pair, spec, scale=1):
        return f"[{format(scale * pair[0], spec)}, {format(scale * pair[1], spec)}]" if pair else "-"

    per_model = any(r.get("worst_model") for r in rows)
    lines = [f"{'candidate':<18} {'view':<9} {'design':<13} {'rows':>5} {'kappa':>6} {'95% CI':>13} "
             f"{'- best':>7} {'paired 95% CI':>17} " + (f"{'worst model':>11} {'95% CI':>15} " if per_model else "")
             + f"{'s':>6}  note"]
    for r in rows:
        note = r["note"] if r["status"] == "trained" else f"{r['status']}: {r['note']}"
        worst = ""
        if per_model:
            note = join_notes(f"worst model: {r['worst_model']}" if r.get("worst_model") else "", note)
            error = r.get("worst_error")
            worst = (f"{num(None if error is None else 100 * error, '+.1f'):>11} "
                     f"{interval(r.get('worst_error_ci'), '+.1f', 100):>15} ")
        lines.append(f"{r['candidate']:<18} {r['view'] or '-':<9} {r['design'] or '-':<13} {num(r['rows'], 'd'):>5} "
                     f"{num(r['kappa'], '.3f'):>6} {interval(r['kappa_ci'], '.2f'):>13} {num(r['delta'], '+.3f'):>7} "
                     f"{interval(r['delta_ci'], '+.3f'):>17} {worst}{num(r['seconds'], '.0f'):>6}  {note}")
    return "\n".join(lines)


def selection_title(report: dict) -> str:
    """One line over the leaderboard: the design the candidates were compared on and how the choice came out."""
    s = report["selection"]
    without = any(r.get("delta") is not None and r.get("delta_ci") is None for r in report["leaderboard"])
    verdict = ("only one candidate ran" if s["resolved"] is None else
               "every other candidate's paired interval is below zero" if s["resolved"] else
               f"not resolved: fewer than {MIN_GROUPS} prompt groups give no paired interval" if without else
               "not resolved at 95%: some paired intervals include zero")
    return (f"grouped {s['folds']}-fold CV on {report['trained_on']} rows, out-of-fold; compared on the "
            f"{s['compared_rows']} rows every full-coverage candidate predicted; - best is paired, group bootstrap; "
            f"{verdict}; "
            f"tie rule: a student with fewer backbone passes within {s['tie_margin']} kappa of the best wins"
            + ("; worst model: the response model whose rate is furthest from the teacher's (student's mean "
               "probability - teacher, points, paired group bootstrap on the same rows)"
               + (f"; rate guard: a winner whose worst model is off at 95% by {s.get('rate_guard_points', 0):g} points "
                  "or more yields to the best candidate whose is not, is nearer, and whose kappa is not resolved below "
                  "the best's" if s.get("rate_guard") else "")
               if any(r.get("worst_model") for r in report["leaderboard"]) else ""))
