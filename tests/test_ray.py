"""`judge score --engine ray` on a real local Ray cluster gives judge score's rows, in input order."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import torch
from typer.testing import CliRunner

from judge.cli import app
from judge.model import Judge
from judge.records import read_records
from judge.score import score_records, score_with_engine
from tests.tiny import synthetic_rows, write_jsonl


def _rows_with_odd_fields(n: int) -> list[dict]:
    """Rows whose extra fields differ in type and shape from row to row (Arrow could not unify them)."""
    rows = synthetic_rows(n, seed=3, with_labels=False)
    for i, row in enumerate(rows):
        row["extra"] = {"run": i, "tags": ["a", "ü"]} if i % 3 == 0 else (None if i % 3 == 1 else f"note {i}")
    return rows


@contextmanager
def torch_threads(n: int):
    """Run the local reference with the threads a Ray actor gets, so floats are summed in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_ray_engine_returns_the_local_rows_and_predictions(tiny_judge, ray_cluster, tmp_path):
    responses = write_jsonl(tmp_path / "responses.jsonl", _rows_with_odd_fields(70))
    local_judge = Judge.load(tiny_judge)
    records = read_records(responses, prefer_scheme=local_judge.scheme).records
    local_rows, local_predictions = score_records(local_judge, records, batch_size=8)

    # two actors of one CPU each: one thread each, where the local run used all the machine's
    rows, predictions = score_with_engine(Judge.without_model(tiny_judge), records, "ray", batch_size=8, workers=2)
    assert [p.label for p in predictions] == [p.label for p in local_predictions]
    assert len({p.label for p in predictions}) > 1  # the tiny judge tells the classes apart
    for row, local in zip(rows, local_rows, strict=True):  # input order, every field
        assert {k: v for k, v in row.items() if k != "judge_probs"} == {k: v for k, v in local.items() if k != "judge_probs"}
        assert np.allclose(list(row["judge_probs"].values()), list(local["judge_probs"].values()), atol=2e-6)


def test_cli_joins_a_running_cluster_with_address_and_writes_the_same_file(tiny_judge, ray_cluster, tmp_path):
    responses = write_jsonl(tmp_path / "responses.jsonl", _rows_with_odd_fields(40))
    with torch_threads(2):  # what the one actor gets on the fixture's 2-CPU cluster
        local = CliRunner().invoke(app, ["score", str(responses), "-j", tiny_judge, "-o", str(tmp_path / "local.jsonl")])
    assert local.exit_code == 0, local.output
    # another process, a driver of its own, joining the fixture's cluster
    done = subprocess.run([sys.executable, "-m", "judge", "score", str(responses), "-j", tiny_judge,
                           "-o", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--address", ray_cluster,
                           "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()  # to the bit
    assert "safety rate" in done.stdout  # the same rate summary as the local engine prints
    assert [json.loads(line)["id"] for line in (tmp_path / "ray.jsonl").read_text().splitlines()] == \
        [f"r{i}" for i in range(40)]


def test_local_engine_refuses_ray_only_options(tiny_judge, tmp_path):
    responses = write_jsonl(tmp_path / "responses.jsonl", synthetic_rows(4, with_labels=False))
    result = CliRunner().invoke(app, ["score", str(responses), "-j", tiny_judge, "--workers", "2"])
    assert result.exit_code == 1 and "--address and --workers need --engine ray" in result.output


def test_a_damaged_artifact_is_refused_by_the_driver_before_any_actor_loads_it(lexical_judge, tmp_path):
    """The actors' load error was some 330 lines of Ray traceback, after the cluster had started."""
    judge_dir = shutil.copytree(lexical_judge, tmp_path / "judge")
    model = judge_dir / "model.skops"
    model.write_bytes(model.read_bytes()[:-100])
    responses = write_jsonl(tmp_path / "responses.jsonl", synthetic_rows(4, with_labels=False))
    result = CliRunner().invoke(app, ["score", str(responses), "-j", str(judge_dir), "--engine", "ray"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.splitlines() == [  # before the input is even read
        f"error: {model}: truncated or not a skops file (BadZipFile: File is not a zip file): "
        "copy the judge folder again, or re-run `judge distill`"]


def test_an_actor_that_cannot_load_the_judge_is_one_line(lexical_judge, ray_cluster, tmp_path):
    """What the driver cannot see (it checks the weight files there are): a node's copy without model.skops."""
    judge_dir = shutil.copytree(lexical_judge, tmp_path / "judge")
    (judge_dir / "model.skops").unlink()
    responses = write_jsonl(tmp_path / "responses.jsonl", synthetic_rows(4, with_labels=False))
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["score", str(responses), "-j", str(judge_dir), "--engine", "ray", "--workers", "1",
                                      "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.splitlines() == ["4 lines read, 4 used, 0 skipped", f"error: {judge_dir / 'model.skops'}: "
                                          "missing estimator file: copy the judge folder again, or re-run `judge distill` "
                                          "(on a Ray node: each needs the whole judge folder at this path)"]
    assert not out.exists()
