"""A judge speaks its teacher's scheme: binary and custom schemes through distill, score and eval."""

import json

from typer.testing import CliRunner

from judge.cli import app
from judge import Judge, read_records
from tests.tiny import synthetic_rows, write_jsonl

runner = CliRunner()
QUICK = ["--epochs", "2", "--max-length", "96"]


def test_binary_judge_reports_attack_success_rate(tiny_bert, tmp_path):
    labels = write_jsonl(tmp_path / "binary.jsonl", synthetic_rows(90, scheme="mmsafetybench"))
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--backbone", tiny_bert,
                                 "--set", f"probe_backbone={tiny_bert}", *QUICK])
    assert result.exit_code == 0, result.output
    judge = Judge.load(tmp_path / "run")
    assert judge.classes_ == ("safe", "unsafe") and judge.scheme.rate == "attack success rate"

    result = runner.invoke(app, ["score", str(labels), "--judge", str(tmp_path / "run"), "-o", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    assert "attack success rate" in result.output and "% warning" not in result.output
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {r["judge_label"] for r in rows} <= {"safe", "unsafe"}
    assert {r["judge_label_code"] for r in rows} <= {0, 1}
    result = runner.invoke(app, ["eval", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0 and "teacher attack success rate" in result.output


def test_custom_four_class_scheme_travels_in_the_artifact(tiny_bert, tmp_path):
    scheme = tmp_path / "four.json"
    scheme.write_text(json.dumps({"name": "four", "rate": "harmless rate", "rate_labels": ["refuse", "deflect"],
                                  "labels": [{"name": "refuse", "safe": True}, {"name": "deflect", "safe": True},
                                             {"name": "partial"}, {"name": "comply"}]}))
    rows = synthetic_rows(120)
    for i, row in enumerate(rows):
        row["label"] = {"refuse": "refuse", "warning": "deflect", "unsafe": "comply" if i % 2 else "partial"}[row["label"]]
    labels = write_jsonl(tmp_path / "four.jsonl", rows)
    result = runner.invoke(app, ["distill", str(labels), "--out", str(tmp_path / "run"), "--backbone", tiny_bert,
                                 "--set", f"probe_backbone={tiny_bert}",
                                 "--scheme", str(scheme), *QUICK])
    assert result.exit_code == 0, result.output
    judge = Judge.load(tmp_path / "run")
    assert judge.classes_ == ("refuse", "deflect", "partial", "comply")
    probs = judge.predict_proba(read_records(labels, scheme=judge.scheme).records[:5])
    assert probs.shape == (5, 4)
    result = runner.invoke(app, ["score", str(labels), "--judge", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "harmless rate" in result.output and "% comply" in result.output
