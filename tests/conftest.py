"""Shared fixtures: tiny real models built once per session, and an offline environment."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.tiny import make_tiny_bert, make_tiny_llama, synthetic_rows, write_jsonl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Folder of a random 2-layer BERT with a tokenizer: a stand-in backbone for fast tests."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """Folder of a random 6-layer Llama: a decoder deep enough for the probe's layer search (2, 3, 4)."""
    return str(make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), layers=6))


@pytest.fixture(scope="session")
def tiny_judge(tiny_bert, tmp_path_factory) -> str:
    """A judge artifact distilled from synthetic labels on the tiny BERT (trained once per session)."""
    from judge.records import read_records
    from judge.training.config import TrainConfig
    from judge.training.distill import distill

    root = tmp_path_factory.mktemp("tiny-judge")
    labels = write_jsonl(root / "labels.jsonl", synthetic_rows(150))
    config = TrainConfig.resolve(overrides={"backbone": tiny_bert, "epochs": 40, "lr": 1e-3, "max_length": 96,
                                            "batch_size": 16, "early_stopping_patience": 40,
                                            "student": "transformer"})
    distill(read_records(labels), root / "judge", config, progress=False)
    return str(root / "judge")


@pytest.fixture(scope="session")
def lexical_judge(tmp_path_factory) -> str:
    """A TF-IDF judge (seconds to train), for what is the same for every student: reading files, escalation.
    Shared: copy it before changing its judge.json."""
    from typer.testing import CliRunner

    from judge.cli import app

    root = tmp_path_factory.mktemp("lexical-judge")
    labels = write_jsonl(root / "labels.jsonl", synthetic_rows(120))
    result = CliRunner().invoke(app, ["distill", str(labels), "--student", "lexical", "--out", str(root / "judge")])
    assert result.exit_code == 0, result.output
    return str(root / "judge")


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """One local Ray cluster (2 CPUs) shared by every Ray test, shut down at the end; yields its address."""
    ray = pytest.importorskip("ray", reason='the Ray engine needs the extra: pip install -e ".[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
