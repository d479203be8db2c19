"""`judge score --engine ray`: the local engine's scoring, spread over the actors of a Ray cluster.

The driver reads the input with `judge.records.read_records` (so every format, id rule and
``--skip-invalid`` behaves as locally) and cuts it into the length-sorted batches the local engine
scores (`judge.model.length_sorted_batches`). Ray Data gets one row per batch (``from_items``);
a pool of actors, each loading the judge once, runs `judge.score.score_records` on every batch it
is handed (one GPU per actor when the cluster has GPUs); the driver puts the rows back in input
order. Every response is scored in the very batch it would be scored in locally, so its row is the
same as `judge score`'s. Ray is an optional extra (``pip install "judge-distill[ray]"``) imported
only here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from judge.errors import InputError
from judge.model import Judge, Prediction, backend_class, length_sorted_batches
from judge.records import Record


class ScoreBatches:
    """A Ray Data actor: loads the judge once, then scores each planned batch with `score_records`.

    An actor that cannot load the judge (its node's copy of the folder damaged) answers each batch with
    why, for the driver to raise: raised here, it reached the user as some 330 lines of Ray traceback."""

    def __init__(self, judge_dir: str, batch_size: int):
        self.judge: Judge | None = None
        self.problem: str | None = None
        try:
            self.judge = Judge.load(judge_dir)
        except InputError as exc:
            self.problem = str(exc)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        from judge.score import score_records

        if self.judge is None:
            return {"batch": batch["batch"], "scored": [json.dumps({"error": self.problem})] * len(batch["batch"])}
        scored = []
        for payload in batch["records"]:
            records = [Record(**fields) for fields in json.loads(payload)]
            rows, predictions = score_records(self.judge, records, batch_size=self.batch_size)
            # JSON keeps float64 probabilities exact and any row shape intact (Arrow would unify schemas)
            scored.append(json.dumps({"rows": rows, "probs": [[p.probs[c] for c in self.judge.classes_]
                                                              for p in predictions]}, ensure_ascii=False))
        return {"batch": batch["batch"], "scored": scored}


def score_records_ray(judge_dir: str | Path, records: Sequence[Record], *, batch_size: int | None = None,
                      address: str | None = None, workers: int | None = None) -> tuple[list[dict], list[Prediction]]:
    """What `judge.score.score_records` returns, computed by `workers` Ray actors.

    `address` joins a running cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:10001``); without it, a
    Ray already initialised in this process is used, else a local cluster is started for the call.
    The judge folder must be readable at the same path on every node.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError('--engine ray needs Ray: pip install "judge-distill[ray]"') from None

    judge_dir = str(Path(judge_dir).resolve())
    described = Judge.without_model(judge_dir)
    if not records:
        return [], []
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-operator progress logs, every 10 s otherwise
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    elif address is not None:
        raise InputError(f"--address {address}: Ray is already initialised in this process; leave --address out")
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        meta = described.meta
        size = batch_size or backend_class(meta, judge_dir).default_batch_size(meta, "cuda" if gpus else "cpu")
        plan = length_sorted_batches(records, size)
        workers = max(1, min(workers or gpus or cpus // 2, len(plan)))  # an actor with no batch would only load
        items = [{"batch": k, "records": json.dumps([asdict(records[i]) for i in chunk], ensure_ascii=False)}
                 for k, chunk in enumerate(plan)]
        resources = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // workers)}
        # many small blocks, so an actor that is done takes the next one rather than all wait for a long one
        blocks = min(len(items), 50 * workers)
        scored = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            ScoreBatches, fn_constructor_args=(judge_dir, size), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers), **resources)
        rows: list[dict | None] = [None] * len(records)
        predictions: list[Prediction | None] = [None] * len(records)
        for out in scored.iter_rows():
            result = json.loads(out["scored"])
            if "error" in result:
                raise InputError(f"{result['error']} (on a Ray node: each needs the whole judge folder at this path)")
            for i, row, probs in zip(plan[out["batch"]], result["rows"], result["probs"]):
                rows[i] = row
                predictions[i] = Prediction(row["judge_label"], dict(zip(described.classes_, probs)))
    finally:
        if started_here:
            ray.shutdown()
    return rows, predictions
