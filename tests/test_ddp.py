"""Two CPU processes (DDP over gloo): the LoRA training path, and the whole of `judge distill`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from safetensors.torch import load_file

from judge.model import Judge
from judge.records import read_records
from tests.tiny import synthetic_rows, write_jsonl

# What one process runs under torch.distributed.run: the LoRA training path, then rank 0 writes judge.json.
TRAIN_ONE_RANK = """
import json, os, sys
from pathlib import Path
import torch.distributed as dist
from judge.model import write_meta
from judge.records import read_records
from judge.splits import split_by_group
from judge.training.config import TrainConfig
from judge.training.transformer import train_transformer

labels, backbone, out = sys.argv[1:4]
dataset = read_records(labels)
split = split_by_group(dataset.labelled, test_size=0.2, val_size=0.2, seed=0)
config = TrainConfig.resolve(overrides={"backbone": backbone, "student": "transformer", "epochs": 3, "lr": 1e-3,
                                        "max_length": 48, "batch_size": 8, "early_stopping_patience": 10})
training = train_transformer(split, dataset.scheme, config, Path(out), progress=False)
if dist.get_rank() == 0:
    write_meta(out, {"kind": "transformer", "scheme": dataset.scheme.to_dict(), "view": config.view,
                     "max_length": config.max_length, "backbone": training["backbone"], "training": training})
# one file per rank: two ranks printing at once can interleave on stdout
Path(out, f"rank{dist.get_rank()}.json").write_text(json.dumps({"rank": dist.get_rank(), "world": dist.get_world_size(),
                                                                 "backend": dist.get_backend()}))
"""


def free_port() -> int:
    with socket.socket() as probe:  # torchrun's rendezvous hangs on port 0: give it a free one
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_train_one_lora_judge(tiny_bert, tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60))
    script = tmp_path / "train_one_rank.py"
    script.write_text(TRAIN_ONE_RANK)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                           str(script), str(labels), tiny_bert, str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "run" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks == [{"rank": 0, "world": 2, "backend": "gloo"}, {"rank": 1, "world": 2, "backend": "gloo"}]

    saved = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for k, t in saved.items() if "lora_B" in k)  # zero-initialised: gradients flowed
    judge = Judge.load(tmp_path / "run")
    records = read_records(labels).records
    predictions = judge.predict(records)
    assert len(predictions) == len(records) and {p.label for p in predictions} <= set(judge.classes_)
    assert judge.meta["training"]["epochs_run"] > 0


def test_judge_distill_under_two_gloo_processes_runs_the_portfolio_and_rank_0_writes_one_judge(tiny_bert, tmp_path):
    """The whole `judge distill` (probe, budget, view search, folds, ensembles, refit) as two ranks: the ranks
    agree on every cut, train each transformer together, and only rank 0 writes and reports."""
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                           "-m", "judge", "distill", str(labels), "--backbone", tiny_bert, "--budget", "1h",
                           "--set", "folds=2", "--set", "epochs=1", "--set", "max_length=48", "--set", "views=response,full",
                           "--set", f"probe_backbone={tiny_bert}",
                           "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("judge written to") == 1  # rank 0 alone reports
    meta = json.loads((tmp_path / "run" / "judge.json").read_text())
    board = {row["candidate"]: row for row in meta["leaderboard"]}
    assert board["transformer-full"]["status"] == "trained" and board["transformer-full"]["design"] == "2-fold"
    assert set(board["transformer-full"]["settings"]["view_search"]) == {"response", "full"}
    assert board["probe"]["status"] == "trained" and board["probe"]["design"] == "2-fold"
    assert meta["data"]["trained_on"] == 60 and not (tmp_path / "run" / "candidates").exists()
    records = read_records(labels).records
    assert len(Judge.load(tmp_path / "run").predict(records)) == len(records)
