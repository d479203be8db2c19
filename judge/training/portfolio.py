"""Which student to ship: train candidates within a time budget and keep the best validation kappa.

Candidates run cheapest first: the lexical student (TF-IDF, every view searched, seconds), the
embedded transformer with LoRA and as a full fine-tune (reading the view the lexical search
picked; epochs by early stopping), open LMs when CUDA is there, and a stacked ensemble of whatever
was trained. Before a candidate starts, its cost is estimated (a transformer from a few measured
training steps, corrected by how far off that estimate was for the previous transformer); what
does not fit the budget is skipped or has its epochs capped, and the leaderboard says so. Every
candidate writes a complete artifact, so whichever wins is scored the same way.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from judge import __version__
from judge.backbones import PRESETS
from judge.errors import InputError
from judge.metrics import agreement
from judge.model import Judge, write_meta
from judge.schemes import Scheme
from judge.splits import Split
from judge.views import VIEWS
from judge.training.config import TrainConfig
from judge.training.lexical import CLASS_WEIGHTS, CS, train_lexical

log = logging.getLogger(__name__)
ESTIMATE_MARGIN = 1.3  # Trainer overhead (evaluation, checkpoints) on top of the measured step time


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
class Entry:
    """One leaderboard row, plus (not serialised) what the ensemble needs to retrain the candidate."""

    candidate: str
    kind: str
    status: str  # trained / skipped
    note: str = ""
    view: str | None = None
    val_kappa: float | None = None
    val_kappa_ci: tuple[float, float] | None = None
    val_macro_f1: float | None = None
    train_seconds: float | None = None
    items_per_second: float | None = None
    estimate_seconds: float | None = None
    path: str | None = None
    source: object = field(default=None, repr=False)  # the candidate object
    config: TrainConfig | None = field(default=None, repr=False)
    meta: dict = field(default_factory=dict, repr=False)

    def row(self) -> dict:
        keys = ("candidate", "kind", "status", "note", "view", "val_kappa", "val_kappa_ci", "val_macro_f1",
                "train_seconds", "items_per_second", "estimate_seconds")
        return {k: getattr(self, k) for k in keys}

    @property
    def score(self) -> float:
        return -math.inf if self.val_kappa is None or math.isnan(self.val_kappa) else self.val_kappa


class LexicalCandidate:
    """TF-IDF + logistic regression; searches views, C and class weighting on validation."""

    kind = "lexical"

    def __init__(self, name: str = "lexical", *, views: tuple[str, ...] | None = None, Cs=CS,
                 class_weights=CLASS_WEIGHTS):
        self.name, self.views, self.Cs, self.class_weights = name, views, Cs, class_weights

    def configure(self, config: TrainConfig, entries: list[Entry]) -> TrainConfig:
        return config

    def estimate(self, split: Split, scheme: Scheme, config: TrainConfig) -> float | None:
        return None  # minutes at most: always runs first, and its time is reported

    def train(self, split, scheme, config, out: Path, *, resume=False, progress=False) -> dict:
        info = train_lexical(split, scheme, out, views=self.views or search_views(config), Cs=self.Cs,
                             class_weights=self.class_weights, seed=config.seed)
        return {"kind": "lexical", "view": info.pop("view"), "model_file": info.pop("model_file"), "training": info}

    def fixed(self, meta: dict) -> LexicalCandidate:
        """The same student with its chosen settings frozen (for refitting on folds)."""
        t = meta["training"]
        return LexicalCandidate(self.name, views=(meta["view"],), Cs=(t["C"],), class_weights=(t["class_weight"],))

    def fold_seconds(self, entry: Entry) -> float:
        """Refitting on a fold is one point of the search the full run made."""
        return entry.train_seconds / max(1, len(entry.meta["training"]["search"]))


class TransformerCandidate:
    """LoRA or a full fine-tune of a transformer backbone (None: the config's), via judge/training/transformer.py."""

    kind = "transformer"

    def __init__(self, name: str, backbone: str | None = None, finetune: str | None = None):
        self.name, self.backbone, self.finetune = name, backbone, finetune

    def configure(self, config: TrainConfig, entries: list[Entry]) -> TrainConfig:
        """Read the view the lexical search chose (when one ran); a full fine-tune trains unquantized."""
        lexical = [e for e in entries if e.kind == "lexical" and e.status == "trained"]
        view = max(lexical, key=lambda e: e.score).view if lexical else config.view
        finetune = self.finetune or config.finetune
        # a full fine-tune moves full-precision weights: 4-bit only if asked for (and then refused)
        quant = "none" if finetune == "full" and config.quant == "auto" else config.quant
        return replace(config, backbone=self.backbone or config.backbone, view=view, finetune=finetune, quant=quant)

    def estimate(self, split: Split, scheme: Scheme, config: TrainConfig) -> float:
        rate = probe_train_speed(config, split.train[:config.batch_size], len(scheme.classes))
        per_epoch = (len(split.train) + len(split.val) / 3) / rate  # evaluation runs ~3x faster than training
        return ESTIMATE_MARGIN * config.epochs * per_epoch

    def train(self, split, scheme, config, out: Path, *, resume=False, progress=False) -> dict:
        from judge.training.transformer import train_transformer

        training = train_transformer(split, scheme, config, out, resume=resume, progress=progress)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        return {"kind": "transformer", "view": config.view, "max_length": config.max_length,
                "backbone": training.pop("backbone"), "training": training}

    def fixed(self, meta: dict) -> TransformerCandidate:
        return self

    def fold_seconds(self, entry: Entry) -> float:
        """A fold holds (K-1)/K of train; K of them cost about (K-1) full runs."""
        return entry.train_seconds


class EnsembleCandidate:
    """Stacks every trained candidate (see judge/training/ensemble.py); `oof` keeps the fold bookkeeping."""

    kind = "ensemble"

    def __init__(self, name: str = "ensemble"):
        self.name = name
        self.members: list[Entry] = []
        self.oof = None

    def configure(self, config: TrainConfig, entries: list[Entry]) -> TrainConfig:
        self.members = [e for e in entries if e.status == "trained" and e.kind != "ensemble"]
        return config

    def estimate(self, split: Split, scheme: Scheme, config: TrainConfig) -> float:
        if len(self.members) < 2:
            raise InputError("needs at least two trained candidates to stack")
        return (config.folds - 1) * sum(m.source.fold_seconds(m) for m in self.members)

    def train(self, split, scheme, config, out: Path, *, resume=False, progress=False) -> dict:
        from judge.backends.ensemble import COMBINER_FILE
        from judge.training.ensemble import fit_combiner, out_of_fold

        pairs = [(m.source.fixed(m.meta), m.config) for m in self.members]
        started = time.perf_counter()
        self.oof = out_of_fold(pairs, split, scheme, k=config.folds, seed=config.seed, work_dir=out / "folds",
                               progress=progress)
        combiner = fit_combiner(self.oof, [r.label for r in split.train], out, seed=config.seed)
        shutil.rmtree(out / "folds", ignore_errors=True)
        members = []
        for m in self.members:
            shutil.copytree(m.path, out / "members" / m.candidate, dirs_exist_ok=True)
            members.append({"name": m.candidate, "kind": m.kind, "view": m.view, "path": f"members/{m.candidate}"})
        widest = max((m.view for m in self.members), key=list(VIEWS).index)
        return {"kind": "ensemble", "view": widest, "members": members, "combiner_file": COMBINER_FILE,
                "training": {"folds": config.folds, "oof_rows": int(len(self.oof.fold_of)),
                             "fold_sizes": np.bincount(self.oof.fold_of).tolist(),
                             "combiner_classes": [str(c) for c in combiner.classes_],
                             "stacking_seconds": round(time.perf_counter() - started, 1)}}


def probe_train_speed(config: TrainConfig, records, num_labels: int, steps: int = 2) -> float:
    """Training examples per second for this backbone here: a few real steps (LoRA or full) on one batch."""
    import torch
    from peft import get_peft_model

    from judge.backbones import local_backbone, resolve_backbone
    from judge.backends.transformer import encode, load_classifier, load_tokenizer
    from judge.training.transformer import lora_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = local_backbone(resolve_backbone(config.backbone))
    tokenizer = load_tokenizer(ref)
    model = load_classifier(ref, num_labels, pad_token_id=tokenizer.pad_token_id)
    if config.finetune == "lora":
        model = get_peft_model(model, lora_config(config))
    model = model.to(device).train()
    batch = encode(tokenizer, records, config.view, config.max_length).to(device)
    labels = torch.zeros(len(records), dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    elapsed = 0.0
    for step in range(steps + 1):  # the first step warms up and is not timed
        started = time.perf_counter()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed += (time.perf_counter() - started) if step else 0.0
    return steps * len(records) / elapsed


FINETUNES = ("lora", "full")


def candidates_for(student: str, config: TrainConfig) -> list:
    """The candidates `student` names: auto = all that apply here; ensemble = its members, then it.

    Auto trains the configured backbone as LoRA and, where it runs unquantized anyway (the CPU
    default), as a full fine-tune too: small encoders often gain from moving every weight, and
    validation decides. Under 4-bit QLoRA a full fine-tune is asked for by name (`minilm-full`).
    """
    label = config.backbone if config.backbone in PRESETS else "transformer"
    if student in ("auto", "ensemble"):
        # judge.training.transformer imports peft and transformers (seconds): only on the paths that train one
        import torch

        from judge.training.transformer import resolve_quant

        finetunes = FINETUNES if resolve_quant(config) == "none" else ("lora",)
        found = [LexicalCandidate(), *(TransformerCandidate(f"{label}-{f}", config.backbone, f) for f in finetunes)]
        if torch.cuda.is_available():  # open LMs train in reasonable time only on a GPU
            # only presets already on disk: hub presets download gigabytes, so they are asked for by name
            found += [TransformerCandidate(f"{p}-lora", p, "lora") for p in PRESETS
                      if p not in (config.backbone, "minilm") and PRESETS[p].hub is None]
        return found + [EnsembleCandidate()]
    if student == "lexical":
        return [LexicalCandidate()]
    if student == "transformer":  # named like auto names it on a preset (minilm-lora), else "transformer"
        return [TransformerCandidate(f"{label}-{config.finetune}" if label in PRESETS else "transformer")]
    preset, _, finetune = student.rpartition("-")
    if preset in (label, *PRESETS) and finetune in FINETUNES:
        return [TransformerCandidate(student, config.backbone if preset == label else preset, finetune)]
    names = ["auto", "lexical", "transformer", "ensemble", *(f"{p}-{f}" for p in PRESETS for f in FINETUNES)]
    raise InputError(f"unknown student {student!r}: choose one of {', '.join(names)}")


def write_candidate(candidate, split: Split, scheme: Scheme, config: TrainConfig, out: Path, *,
                    resume: bool = False, progress: bool = False) -> dict:
    """Train one candidate into a complete artifact folder (judge.json included); return its meta."""
    meta = candidate.train(split, scheme, config, out, resume=resume, progress=progress)
    meta.update(judge_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                scheme=scheme.to_dict(), student=candidate.name, config=config.to_dict())
    write_meta(out, meta)
    return meta


def validate(entry: Entry, split: Split, scheme: Scheme, seed: int) -> None:
    """Val kappa (group-bootstrap interval), macro-F1 and scoring speed of a trained candidate."""
    judge = Judge.load(entry.path)
    started = time.perf_counter()
    predicted = [p.label for p in judge.predict(split.val)]
    seconds = time.perf_counter() - started
    report = agreement([r.label for r in split.val], predicted, scheme.classes,
                       groups=[r.prompt_group for r in split.val], seed=seed)
    entry.val_kappa = round(report["kappa"], 4)
    entry.val_kappa_ci = tuple(round(x, 4) for x in report["kappa_ci"])
    entry.val_macro_f1 = round(report["macro_f1"], 4)
    entry.items_per_second = round(len(split.val) / max(seconds, 1e-9), 1)


@dataclass
class Portfolio:
    entries: list[Entry]
    winner: Entry

    def leaderboard(self) -> list[dict]:
        return [e.row() for e in self.entries]


def run_portfolio(split: Split, scheme: Scheme, config: TrainConfig, out_dir: str | Path, *,
                  candidates: list | None = None, resume: bool = False, progress: bool = False) -> Portfolio:
    """Train candidates into out_dir/<name>/ and pick the winner.

    With ``config.student == "auto"`` the budget applies; the best validation kappa wins (ties: the
    faster scorer), among `candidates` if given. Naming one student trains it (and, for the
    ensemble, its members first) regardless of the budget.
    """
    student = config.student
    if not split.val and (student == "auto" or candidates is not None):
        raise InputError("choosing a student needs a validation split: set val_size > 0 or name a --student")
    candidates = candidates if candidates is not None else candidates_for(student, config)
    budget = parse_budget(config.budget) if student == "auto" else math.inf
    started = time.perf_counter()
    entries: list[Entry] = []
    speed = {}  # kind -> real / raw estimated time per epoch, from the last candidate of that kind trained
    for candidate in candidates:
        entry = Entry(candidate.name, candidate.kind, "skipped", source=candidate)
        entries.append(entry)
        cfg = candidate.configure(config, entries[:-1])
        remaining = budget - (time.perf_counter() - started)
        try:
            estimate = candidate.estimate(split, scheme, cfg)
        except InputError as exc:
            entry.note = str(exc)
            continue
        if estimate is not None and candidate.kind in speed:
            estimate *= speed[candidate.kind]
            entry.note = f"estimate x{speed[candidate.kind]:.2f}, the speed measured on the last {candidate.kind}"
        entry.estimate_seconds = None if estimate is None else round(estimate, 1)
        if estimate is not None and estimate > remaining:
            epochs = math.floor(cfg.epochs * remaining / estimate) if candidate.kind == "transformer" else 0
            if epochs < 1:
                entry.note = join_notes(entry.note, f"estimated {estimate:.0f}s, {max(remaining, 0):.0f}s of the budget left")
                log.warning("skipping %s: %s", candidate.name, entry.note)
                continue
            entry.note = join_notes(entry.note, f"epochs capped {cfg.epochs:g} -> {epochs} to fit the budget "
                                                f"(estimated {estimate:.0f}s)")
            estimate *= epochs / cfg.epochs
            cfg = replace(cfg, epochs=float(epochs))
        path = Path(out_dir) / candidate.name
        if not resume:
            shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        entry.meta = write_candidate(candidate, split, scheme, cfg, path, resume=resume and candidate.kind == "transformer",
                                     progress=progress)
        entry.train_seconds = round(time.perf_counter() - t0, 1)
        entry.status, entry.view, entry.path, entry.config = "trained", entry.meta["view"], str(path), cfg
        if estimate:  # early stopping may have run fewer epochs than estimated for
            ran = (entry.meta["training"].get("epochs_run") or cfg.epochs) / cfg.epochs
            speed[candidate.kind] = speed.get(candidate.kind, 1.0) * entry.train_seconds / (estimate * ran)
        if split.val:
            validate(entry, split, scheme, config.seed)
        log.info("%s: val kappa %s in %ss", candidate.name, entry.val_kappa, entry.train_seconds)
    trained = [e for e in entries if e.status == "trained"]
    if not trained:
        raise InputError("no candidate fitted the budget: raise --budget or name a --student")
    named = [e for e in trained if e.candidate == student]
    winner = named[0] if named else max(trained, key=lambda e: (e.score, e.items_per_second or 0.0))
    return Portfolio(entries, winner)


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def format_leaderboard(rows: list[dict]) -> str:
    """The leaderboard as a text table: candidates in the order they ran, skipped ones with the reason."""
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [f"{'candidate':<18} {'view':<9} {'val kappa':>9} {'95% CI':>15} {'macro-F1':>8} {'est. s':>7} {'train s':>8} "
             f"{'items/s':>8}  note"]
    for r in rows:
        ci = f"[{r['val_kappa_ci'][0]:.2f}, {r['val_kappa_ci'][1]:.2f}]" if r.get("val_kappa_ci") else "-"
        note = r["note"] if r["status"] == "trained" else f"{r['status']}: {r['note']}"
        lines.append(f"{r['candidate']:<18} {r['view'] or '-':<9} {num(r['val_kappa'], '.3f'):>9} {ci:>15} "
                     f"{num(r['val_macro_f1'], '.3f'):>8} {num(r['estimate_seconds'], '.0f'):>7} {num(r['train_seconds'], '.1f'):>8} "
                     f"{num(r['items_per_second'], '.0f'):>8}  {note}")
    return "\n".join(lines)
