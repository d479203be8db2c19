"""How much the out-of-fold kappa `judge distill` reports flatters the student it chose.

Every setting search (lexical: views x C x class weights; the probe: views x layers x C) and the choice
between candidates happen on the same out-of-fold rows the winner's kappa is then read from, and nothing
corrects for that. Two measurements on XSTest's GPT-4 labels, with lexical students only (CPU-cheap):

- **null**: the labels shuffled across rows (true agreement 0, label counts kept). Mean reported kappa of
  one fixed lexical setting, of lexical after its search, and of the best of five candidates (three
  lexical views, their stack and blend) is the optimism each level of choice adds.
- **nested**: the whole selection rerun inside grouped outer folds; each outer fold's winner, refitted on
  the other folds, predicts it. The gap to the reported kappa is the optimism plus the cost of fitting on
  4/5 of the rows (so an upper bound on the optimism).

    nice -n 10 .venv/bin/python bench/selection_optimism.py --groups 40 --null-seeds 12 --nested-seeds 2
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shared_data import xstest_gpt4_rows  # noqa: E402
from judge.metrics import agreement, top_labels  # noqa: E402
from judge.model import Judge  # noqa: E402
from judge.records import build_dataset  # noqa: E402
from judge.splits import grouped_folds  # noqa: E402
from judge.training.config import TrainConfig  # noqa: E402
from judge.training.portfolio import EnsembleCandidate, LexicalCandidate, run_portfolio  # noqa: E402


def candidates() -> list:
    return [LexicalCandidate("lex-response", views=("response",)), LexicalCandidate("lex-question", views=("question",)),
            LexicalCandidate("lex-full", views=("full",)), EnsembleCandidate("stack", "stack"),
            EnsembleCandidate("blend", "blend")]


def xstest_sample(groups: int | None):
    """XSTest's GPT-4-labelled rows, of `groups` prompt groups drawn with seed 0 (all without)."""
    rows = xstest_gpt4_rows()
    names = sorted({r["group"] for r in rows})
    random.Random(0).shuffle(names)
    keep = set(names[:groups] if groups else names)
    return build_dataset((("xstest", i + 1, r) for i, r in enumerate(r for r in rows if r["group"] in keep)))


def null(dataset, seeds: int, work: Path) -> None:
    fixed, searched, best = [], [], []
    for seed in range(seeds):
        labels = [r.label for r in dataset.labelled]
        random.Random(100 + seed).shuffle(labels)
        rows = [replace(r, label=y) for r, y in zip(dataset.labelled, labels)]
        portfolio = run_portfolio(rows, dataset.scheme, TrainConfig(seed=seed, rate_guard=False), work,
                                  candidates=candidates(), progress=False)
        first = next(r for r in portfolio.results if r.candidate == "lex-response")
        fixed.append(first.settings["search"][0]["cv_kappa"])
        searched.append(first.kappa)
        best.append(portfolio.winner.kappa)
        print(f"null seed {seed}: fixed {fixed[-1]:+.3f}  searched {searched[-1]:+.3f}  best of 5 {best[-1]:+.3f} "
              f"({portfolio.winner.candidate})", flush=True)
    for name, values in (("one fixed setting", fixed), ("lexical after its search", searched),
                         ("best of five candidates", best)):
        print(f"null, true kappa 0: {name:<26} mean {np.mean(values):+.3f} (SD {np.std(values):.3f}, {seeds} shuffles)")


def nested(dataset, seed: int, work: Path) -> None:
    rows, classes = dataset.labelled, dataset.scheme.classes
    config = TrainConfig(seed=seed)
    reported = run_portfolio(rows, dataset.scheme, config, work, candidates=candidates(), progress=False).winner
    outer = grouped_folds(rows, 5, seed + 1000)
    probs, picks = np.zeros((len(rows), len(classes))), []
    for fold in range(outer.k):
        fit, held = [rows[i] for i in outer.fit_rows(fold)], [rows[i] for i in outer.held(fold)]
        inner = run_portfolio(fit, dataset.scheme, config, work, candidates=candidates(), progress=False).winner
        out = work / f"nested-{fold}"
        shutil.rmtree(out, ignore_errors=True)
        inner.source.refit(fit, dataset.scheme, config, inner, out)
        probs[outer.held(fold)] = Judge.load(out).predict_proba(held)
        picks.append(inner.candidate)
    estimate = agreement([r.label for r in rows], top_labels(probs, classes), classes,
                         groups=[r.prompt_group for r in rows], seed=seed)
    print(f"nested seed {seed}: reported {reported.kappa:.3f} ({reported.candidate}), nested {estimate['kappa']:.3f} "
          f"[{estimate['kappa_ci'][0]:.3f}, {estimate['kappa_ci'][1]:.3f}], gap {reported.kappa - estimate['kappa']:+.3f}; "
          f"outer folds chose {', '.join(picks)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=40, help="prompt groups of XSTest to use (0: all)")
    parser.add_argument("--null-seeds", type=int, default=12)
    parser.add_argument("--nested-seeds", type=int, default=2)
    args = parser.parse_args()
    dataset = xstest_sample(args.groups or None)
    print(f"XSTest, GPT-4 labels: {len(dataset.labelled)} rows of "
          f"{len({r.prompt_group for r in dataset.labelled})} prompt groups", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        null(dataset, args.null_seeds, Path(tmp))
        for seed in range(args.nested_seeds):
            nested(dataset, seed, Path(tmp))


if __name__ == "__main__":
    main()
