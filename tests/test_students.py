"""The student portfolio: lexical artifacts, selection by validation kappa, the budget, and stacking without leaks."""

import json
import math
import os

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from judge.cli import app
from judge.backends.lexical import MODEL_FILE, load_estimator, save_estimator
from judge.errors import InputError
from judge.model import Judge, write_meta
from judge.records import read_records
from judge.splits import split_by_group
from judge.views import render_text
from tests.tiny import synthetic_rows, write_jsonl
from judge.training.config import TrainConfig
from judge.training.distill import distill
from judge.training.lexical import fit_lexical
from judge.training.portfolio import EnsembleCandidate, LexicalCandidate, TransformerCandidate, parse_budget, run_portfolio


def _dataset(tmp_path, n=90, seed=0, scheme="vlsbench"):
    return read_records(write_jsonl(tmp_path / f"labels-{n}-{seed}.jsonl", synthetic_rows(n, seed=seed, scheme=scheme)))


def _underfit() -> LexicalCandidate:
    """A deliberately bad student: regularised so hard its weights are ~0 and only faint signal survives."""
    return LexicalCandidate("lexical-underfit", views=("question",), Cs=(1e-6,), class_weights=(None,))


def test_lexical_artifact_round_trip(tmp_path):
    dataset = _dataset(tmp_path)
    split = split_by_group(dataset.labelled, seed=0)
    fit = fit_lexical(split, dataset.scheme, views=("response", "full"), Cs=(10.0,))
    (tmp_path / "judge").mkdir()
    save_estimator(fit.pipeline, tmp_path / "judge" / MODEL_FILE)
    write_meta(tmp_path / "judge", {"kind": "lexical", "view": fit.view, "scheme": dataset.scheme.to_dict()})

    judge = Judge.load(tmp_path / "judge")
    probs = judge.predict_proba(split.test)
    direct = fit.pipeline.predict_proba([render_text(r, fit.view) for r in split.test])
    columns = [list(fit.pipeline.classes_).index(c) for c in judge.classes_]
    np.testing.assert_allclose(probs, direct[:, columns], rtol=1e-6)
    assert [p.label for p in judge.predict(split.test)] == [r.label for r in split.test]  # the wording gives it away


def test_estimator_file_with_foreign_code_is_refused(tmp_path):
    save_estimator(Pipeline([("f", FunctionTransformer(func=os.system))]), tmp_path / "evil.skops")
    with pytest.raises(InputError, match="types judge does not load"):
        load_estimator(tmp_path / "evil.skops")
    assert sio.get_untrusted_types(file=tmp_path / "evil.skops")  # skops itself would ask too


def test_best_validation_kappa_wins_and_the_leaderboard_lists_every_candidate(tmp_path):
    dataset = _dataset(tmp_path)
    config = TrainConfig.resolve(overrides={"budget": "none"})
    best = LexicalCandidate(Cs=(1.0, 10.0))
    report = distill(dataset, tmp_path / "run", config, candidates=[_underfit(), best], progress=False)

    board = {row["candidate"]: row for row in report["leaderboard"]}
    assert set(board) == {"lexical", "lexical-underfit"} and all(r["status"] == "trained" for r in board.values())
    assert board["lexical"]["val_kappa"] > board["lexical-underfit"]["val_kappa"]
    assert board["lexical"]["val_kappa_ci"][0] <= board["lexical"]["val_kappa"]
    assert report["student"] == "lexical" and report["overall"]["kappa"] > 0.9

    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["student"] == "lexical" and meta["kind"] == "lexical" and len(meta["leaderboard"]) == 2
    assert Judge.load(tmp_path / "run").view == board["lexical"]["view"] == meta["view"]
    assert not (tmp_path / "run" / "candidates").exists()


def test_budget_skips_what_does_not_fit_and_says_so(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path, n=60)
    split = split_by_group(dataset.labelled, seed=0)
    config = TrainConfig.resolve(overrides={"backbone": tiny_bert, "budget": "0.001s", "max_length": 48})
    quick = LexicalCandidate(Cs=(10.0,), class_weights=(None,))
    portfolio = run_portfolio(split, dataset.scheme, config, tmp_path / "c",
                              candidates=[quick, TransformerCandidate("transformer"), EnsembleCandidate()])

    rows = {r["candidate"]: r for r in portfolio.leaderboard()}
    assert rows["lexical"]["status"] == "trained"  # cheap: always runs
    assert rows["transformer"]["status"] == "skipped" and rows["transformer"]["estimate_seconds"] > 0
    assert "budget" in rows["transformer"]["note"]
    assert rows["ensemble"]["status"] == "skipped" and "two trained candidates" in rows["ensemble"]["note"]
    assert portfolio.winner.candidate == "lexical"
    assert (parse_budget("90s"), parse_budget("10m"), parse_budget("1h"), parse_budget("none")) == (90, 600, 3600, math.inf)
    with pytest.raises(InputError, match="budget"):
        parse_budget("ten minutes")


class _Underestimated(LexicalCandidate):
    """A student whose cost estimate is 1 ms, far below what training it really takes."""

    def estimate(self, split, scheme, config):
        return 0.001


def test_a_wrong_estimate_is_corrected_by_the_speed_measured_on_the_last_candidate_of_its_kind(tmp_path):
    dataset = _dataset(tmp_path, n=60)
    split = split_by_group(dataset.labelled, seed=0)
    config = TrainConfig.resolve(overrides={"budget": "1h"})
    one = {"views": ("question",), "Cs": (10.0,), "class_weights": (None,)}
    portfolio = run_portfolio(split, dataset.scheme, config, tmp_path / "c",
                              candidates=[_Underestimated("first", **one), _Underestimated("second", **one)])
    first, second = portfolio.leaderboard()
    assert first["estimate_seconds"] == 0.0 and first["train_seconds"] > 0.01
    # the second estimate is the first's scaled by measured / estimated: the first's real time
    assert second["estimate_seconds"] == pytest.approx(first["train_seconds"], abs=0.05)
    assert second["note"].startswith("estimate x") and "lexical" in second["note"]


def test_ensemble_is_fit_out_of_fold_and_never_on_rows_it_is_scored_on(tmp_path):
    dataset = _dataset(tmp_path, n=120)
    split = split_by_group(dataset.labelled, seed=0)
    config = TrainConfig.resolve(overrides={"budget": "none", "folds": 3})
    members = [LexicalCandidate("words", views=("response",), Cs=(1.0,), class_weights=(None,)), _underfit()]
    ensemble = EnsembleCandidate()
    portfolio = run_portfolio(split, dataset.scheme, config, tmp_path / "c", candidates=[*members, ensemble])

    oof = ensemble.oof
    assert len(oof.fold_of) == len(split.train) and sorted(set(oof.fold_of)) == [0, 1, 2]
    for i, record in enumerate(split.train):  # each row's stacked prediction came from models that never saw it
        assert record.id not in oof.trained_on[oof.fold_of[i]]
    for fold, seen in enumerate(oof.trained_on):  # ... and those models saw every other training row
        assert seen == {r.id for r, f in zip(split.train, oof.fold_of) if f != fold}
    groups = {}
    for record, fold in zip(split.train, oof.fold_of):
        assert groups.setdefault(record.prompt_group, fold) == fold  # a prompt group sits in one fold
    train_ids = {r.id for r in split.train}
    assert not train_ids & {r.id for r in split.val + split.test}  # the combiner never saw val or test rows
    assert all(p.shape == (len(split.train), 3) for p in oof.probs)

    entry = next(e for e in portfolio.entries if e.candidate == "ensemble")
    judge = Judge.load(entry.path)
    assert judge.meta["kind"] == "ensemble" and [m["name"] for m in judge.meta["members"]] == ["words", "lexical-underfit"]
    probs = judge.predict_proba(split.test)
    assert np.allclose(probs.sum(axis=1), 1) and entry.val_kappa > 0.9


def test_cli_student_lexical_then_score(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(90, seed=3, scheme="mmsafetybench"))
    runner = CliRunner()
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--student", "lexical"])
    assert result.exit_code == 0, result.output
    assert "lexical" in result.output and "val kappa" in result.output and "student lexical" in result.output
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


@pytest.mark.slow
def test_auto_portfolio_with_a_transformer_stacks_it_and_scores_through_the_artifact(tiny_bert, tmp_path):
    dataset = _dataset(tmp_path, n=60)
    config = TrainConfig.resolve(overrides={"backbone": tiny_bert, "budget": "none", "epochs": 1, "max_length": 48,
                                            "folds": 2, "lr": 1e-3})
    report = distill(dataset, tmp_path / "run", config, progress=False, keep_candidates=True)
    board = {row["candidate"]: row for row in report["leaderboard"]}
    names = ("lexical", "transformer-lora", "transformer-full", "ensemble")
    assert [board[n]["status"] for n in names] == ["trained"] * 4  # on a CPU: LoRA and a full fine-tune
    # the transformers read the view lexical chose
    assert board["transformer-lora"]["view"] == board["transformer-full"]["view"] == board["lexical"]["view"]
    full = Judge.load(tmp_path / "run" / "candidates" / "transformer-full")
    assert full.meta["training"]["finetune"] == "full" and full.meta["config"]["quant"] == "none"
    ensemble = Judge.load(tmp_path / "run" / "candidates" / "ensemble")
    assert [m["name"] for m in ensemble.meta["members"]] == ["lexical", "transformer-lora", "transformer-full"]
    assert ensemble.predict_proba(dataset.labelled[:5]).shape == (5, 3)
    assert report["student"] == max(board.values(), key=lambda r: (r["val_kappa"], r["items_per_second"]))["candidate"]
