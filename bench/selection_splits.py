"""How much does `judge distill`'s choice gain over TF-IDF on untouched prompts, over many splits, not one?

bench/distill_compare.py tests one 80/20 split: on XSTest its 198 test rows give a kappa interval
0.2 wide, so one run cannot say whether a rule helps. Here the same design is repeated on several
seeded outer splits, at the cost of one backbone pass: SmolLM2-135M's features (the probe's layers,
mean over tokens, every distinct view) are computed once for all rows, and on each split the
lexical search, the probe search, the stack and the blend are cross-validated on the 80% exactly
as the portfolio does (same functions, same grouped folds), `choose` picks the student (with the
rate guard, the default, and without it: "kappa only"), and every candidate is refitted on the 80%
and scored on the 20% beside the plain TF-IDF. MiniLM's fine-tune is left out: it is what the budget
cuts on a CPU. Reads ../shared/data:

    nice -n 5 .venv/bin/python bench/selection_splits.py --only xstest --seeds 10
    nice -n 5 .venv/bin/python bench/selection_splits.py --only xstest --seeds 3 --nested

A 20% split has ~40 rows a response model on XSTest, too few to read a model's rate error off;
`--nested` pools grouped 5-fold outer folds instead, so every row is predicted once a seed by a
student that never saw its prompt, and each model's rate rests on all its rows.

Printed per split (or outer fold): each candidate's out-of-fold kappa and worst model (rate error,
points, 95% CI) and the two choices; then each one's test kappa / worst model / mean |model error|;
then per rule and candidate the mean test kappa, its mean difference to TF-IDF with the spread over
seeds, and the mean errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.distill_compare import DATA, model_errors  # noqa: E402
from bench.shared_data import dataset_of  # noqa: E402
from judge.backbones import local_backbone, resolve_backbone  # noqa: E402
from judge.backends.lexical import aligned_log_proba  # noqa: E402
from judge.backends.probe import Encoder, backbone_layers, searched_layers  # noqa: E402
from judge.metrics import top_labels  # noqa: E402
from judge.splits import grouped_folds, split_by_group  # noqa: E402
from judge.training.config import TrainConfig  # noqa: E402
from judge.training.ensemble import Blend, Stack, cross_fitted  # noqa: E402
from judge.training.lexical import cross_validate_lexical, distinct_views, fit_pipeline, kappa  # noqa: E402
from judge.training.portfolio import EnsembleCandidate, Result, choose, rate_guard  # noqa: E402
from judge.training.probe import cross_validate_probe, probe_classifier  # noqa: E402
from judge.views import VIEWS, render_text  # noqa: E402

CANDIDATES = ("lexical", "probe", "stack", "blend")
RULES = ("chosen", "kappa only")  # judge distill's choice (rate guard on, the default) and the same without it


def probe_features(records, config: TrainConfig) -> tuple[dict[str, dict[int, np.ndarray]], list[str]]:
    """{view: {layer: features}} over every row, and the views: the pass the probe candidate makes."""
    ref = local_backbone(resolve_backbone(config.probe_backbone))
    layers = searched_layers(backbone_layers(ref))
    encoder = Encoder(ref, max(layers), layers, config.probe_max_length)
    views = distinct_views(records, tuple(VIEWS))
    features = {}
    for view in views:
        started = time.perf_counter()
        features[view] = encoder.features(records, view)
        print(f"probe features, view {view}: {time.perf_counter() - started:.0f}s", flush=True)
    return features, views


def test_figures(test, probs, scheme) -> tuple[float, float, float]:
    """(kappa, the worst model's rate error in points, the mean |error| over models) on the test rows."""
    predicted = top_labels(probs, scheme.classes)
    worst, mean = model_errors(test, predicted, scheme, probs)
    return kappa([r.label for r in test], predicted, scheme.classes), 100 * worst["error"], mean


def select_and_predict(records, dev_rows, test_rows, scheme, features, views, config: TrainConfig,
                       seed: int) -> tuple[dict[str, np.ndarray], str]:
    """Cross-validate the candidates on `dev_rows` as the portfolio does, choose with the rate guard (the
    default) and without it, refit on those rows and predict `test_rows`: {name: probabilities}, and what the
    leaderboard's out-of-fold figures and the two choices were."""
    dev, test = [records[i] for i in dev_rows], [records[i] for i in test_rows]
    labels = [r.label for r in dev]
    folds = grouped_folds(dev, config.folds, seed)
    lexical = cross_validate_lexical(dev, folds, scheme, seed=config.seed)
    view, probe = max(((v, cross_validate_probe({layer: x[dev_rows] for layer, x in features[v].items()}, labels, folds,
                                                scheme.classes, seed=config.seed)) for v in views),
                      key=lambda pair: pair[1].kappa)
    members = [lexical.probs, probe.probs]
    (stack_oof, stack, _), (blend_oof, blend, _) = (cross_fitted(c, members, dev, scheme.classes, config.seed)
                                                    for c in (Stack(), Blend()))

    def result(name, kind, probs):
        r = Result(name, kind, status="trained", probs=probs, covered=np.ones(len(dev), bool), rows=len(dev))
        if kind == "ensemble":
            r.source = EnsembleCandidate(name)
            r.source.members = [Result("lexical", "lexical"), Result("probe", "probe")]
        return r

    results = [result("lexical", "lexical", lexical.probs), result("probe", "probe", probe.probs),
               result("stack", "ensemble", stack_oof), result("blend", "ensemble", blend_oof)]
    kappa_only, _, _ = choose(results, dev, scheme, replace(config, rate_guard=False))
    winner = rate_guard(kappa_only, results, config.rate_guard_points / 100)  # what choose does next with the guard on

    pipeline = fit_pipeline(dev, lexical.view, lexical.C, lexical.class_weight, config.seed)
    lexical_test = np.exp(aligned_log_proba(pipeline, [render_text(r, lexical.view) for r in test], scheme.classes))
    chosen = features[view][probe.layer]
    classifier = probe_classifier(probe.C, config.seed).fit(chosen[dev_rows], labels)
    probe_test = np.exp(aligned_log_proba(classifier, chosen[test_rows], scheme.classes))
    tfidf = fit_pipeline(dev, "response", 10.0, None)
    probs = {"lexical": lexical_test, "probe": probe_test,
             "stack": Stack().predict_proba(stack, [lexical_test, probe_test], scheme.classes),
             "blend": Blend().predict_proba(blend, [lexical_test, probe_test], scheme.classes),
             "tf-idf": np.exp(aligned_log_proba(tfidf, [render_text(r, "response") for r in test], scheme.classes))}
    probs["chosen"], probs["kappa only"] = probs[winner.candidate], probs[kappa_only.candidate]
    out_of_fold = "  ".join(f"{r.candidate} {r.kappa:.3f}" + (
        f" {100 * r.worst_error:+.1f} [{100 * r.worst_error_ci[0]:+.1f}, {100 * r.worst_error_ci[1]:+.1f}]"
        if r.worst_error is not None else "") for r in results)
    return probs, (f"out of fold {out_of_fold}; chose {winner.candidate} (kappa only: {kappa_only.candidate}; "
                   f"lexical view {lexical.view}, probe view {view} layer {probe.layer})")


def one_split(records, scheme, features, views, config: TrainConfig, seed: int) -> dict[str, tuple]:
    """Figures of every candidate and rule on one seeded 80/20 split by prompt group."""
    split = split_by_group(records, test_size=0.2, val_size=0.0, seed=seed)
    index = {r.id: i for i, r in enumerate(records)}
    test_rows = [index[r.id] for r in split.test]
    probs, said = select_and_predict(records, [index[r.id] for r in split.train], test_rows, scheme, features, views,
                                     config, seed)
    figures = {name: test_figures(split.test, p, scheme) for name, p in probs.items()}
    print(f"split {seed}: {said}\n  test " +
          "  ".join(f"{name} {k:.3f} {w:+.1f} {m:.1f}" for name, (k, w, m) in figures.items()), flush=True)
    return figures


def nested(records, scheme, features, views, config: TrainConfig, seed: int) -> dict[str, tuple]:
    """Figures of every candidate and rule on grouped 5-fold outer folds, each row predicted once by a student
    chosen and fitted on the other four folds, pooled: every row tests, so each model's rate has all its rows."""
    outer = grouped_folds(records, 5, 100 + seed)
    pooled: dict[str, np.ndarray] = {}
    for fold in range(outer.k):
        test_rows = list(outer.held(fold))
        probs, said = select_and_predict(records, list(outer.fit_rows(fold)), test_rows, scheme, features, views,
                                         config, seed)
        print(f"seed {seed}, outer fold {fold}: {said}", flush=True)
        for name, p in probs.items():
            pooled.setdefault(name, np.zeros((len(records), p.shape[1])))[test_rows] = p
    figures = {name: test_figures(records, p, scheme) for name, p in pooled.items()}
    print(f"seed {seed}, pooled over the outer folds: " +
          "  ".join(f"{name} {k:.3f} {w:+.1f} {m:.1f}" for name, (k, w, m) in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATA), default="xstest")
    parser.add_argument("--seeds", type=int, default=10, help="outer splits (or nested repeats), seeds 0 .. N-1")
    parser.add_argument("--nested", action="store_true",
                        help="pool grouped 5-fold outer folds instead of 80/20 splits: every row tests once a seed")
    args = parser.parse_args()
    rows = DATA[args.only][0]()
    dataset = dataset_of(rows)
    records, scheme, config = dataset.labelled, dataset.scheme, TrainConfig.resolve()
    features, views = probe_features(records, config)
    design = nested if args.nested else one_split
    runs = [design(records, scheme, features, views, config, seed) for seed in range(args.seeds)]
    baseline = np.array([run["tf-idf"][0] for run in runs])
    how = ("grouped 5-fold outer folds, each row predicted by a student chosen and fitted on the other four, pooled"
           if args.nested else "outer splits (80% to choose and fit, 20% of the prompt groups to test)")
    print(f"\n{DATA[args.only][1]}: {len(records)} rows, {args.seeds} seeds of {how}; test kappa, - TF-IDF (mean, "
          "SD over seeds, seeds ahead, seeds ahead by 0.03 or more), the worst model's |rate error| and the mean "
          "|error| over models (points, mean probability)")
    for name in (*RULES, *CANDIDATES, "tf-idf"):
        k = np.array([run[name][0] for run in runs])
        gain = k - baseline
        worst, mean = (np.mean([abs(run[name][i]) for run in runs]) for i in (1, 2))
        print(f"{name:<10} kappa {k.mean():.3f}  - TF-IDF {gain.mean():+.3f} (SD {gain.std(ddof=1):.3f}; ahead "
              f"{int((gain > 0).sum())}/{len(runs)}, by 0.03+ {int((gain >= 0.03).sum())})  worst model {worst:4.1f}  "
              f"mean {mean:4.1f}")

if __name__ == "__main__":
    main()
