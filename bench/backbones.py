"""Which backbone: MiniLM LoRA vs SmolLM2-135M LoRA vs TF-IDF + logistic regression, on real GPT-4 labels.

XSTest v2 unsafe-prompt responses with GPT-4's labels (refuse / warning / unsafe), split by prompt
group (judge.splits). Each candidate runs in its own subprocess so its peak resident memory
(ru_maxrss) is its own; printed per candidate: held-out test kappa (group-bootstrap 95% interval),
training examples/s, scoring responses/s, peak RSS and the worker's CPU seconds (wall-clock rates
depend on what else the machine runs; CPU seconds much less). Reads ../shared/data; run with nice:

    nice -n 10 .venv/bin/python bench/backbones.py [--only tfidf,minilm,smollm2] [--smol-train 200]

SmolLM2 is ~10x slower than MiniLM on a CPU, so by default it trains 1 epoch on a seeded subsample
of the training split (the output says so); MiniLM trains on all of it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shared_data import dataset_of, xstest_gpt4_rows  # noqa: E402
from judge.metrics import agreement  # noqa: E402
from judge.splits import split_by_group  # noqa: E402

CANDIDATES = ("tfidf", "minilm", "smollm2")
VIEW = "full"  # question + response, as `judge distill` reads by default


def load_split(seed: int = 0):
    dataset = dataset_of(xstest_gpt4_rows(), "xstest_v2.jsonl", scheme="vlsbench")
    return dataset.scheme, split_by_group(dataset.labelled, test_size=0.2, val_size=0.1, seed=seed)


def run_tfidf(split, scheme) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from judge.views import render_text

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                          LogisticRegression(C=10, max_iter=2000, class_weight="balanced"))
    started = time.perf_counter()
    model.fit([render_text(r, VIEW) for r in split.train], [r.label for r in split.train])
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predicted = list(model.predict([render_text(r, VIEW) for r in split.test]))
    return {"predicted": predicted, "train_examples": len(split.train), "train_seconds": train_seconds,
            "score_seconds": time.perf_counter() - started, "setup": "word 1-2 grams, C=10, balanced"}


def run_lora(split, scheme, backbone: str, epochs: float, train_limit: int | None, out: Path) -> dict:
    from dataclasses import replace

    from judge.model import Judge, write_meta
    from judge.training.config import TrainConfig
    from judge.training.transformer import train_transformer

    train = split.train
    if train_limit and len(train) > train_limit:
        train = random.Random(0).sample(train, train_limit)
    config = TrainConfig.resolve(overrides={"backbone": backbone, "student": "transformer", "epochs": epochs,
                                            "max_length": 128, "view": VIEW, "batch_size": 16, "lr": 5e-4})
    training = train_transformer(replace(split, train=train), scheme, config, out, progress=False)
    write_meta(out, {"kind": "transformer", "scheme": scheme.to_dict(), "view": VIEW, "max_length": config.max_length,
                     "backbone": training["backbone"], "training": training})
    judge = Judge.load(out)
    started = time.perf_counter()
    predicted = [p.label for p in judge.predict(split.test)]
    epochs_run = max((h["epoch"] for h in training["val_history"]), default=epochs)
    return {"predicted": predicted, "train_examples": int(len(train) * epochs_run),
            "train_seconds": training["train_seconds"], "score_seconds": time.perf_counter() - started,
            "setup": f"{len(train)} train rows x {epochs_run:g} epochs, 128 tokens, LoRA r=16 (fp32, CPU)"}


def worker(name: str, args) -> None:
    """One candidate in this process; prints one JSON line (the parent reads ru_maxrss of this process)."""
    scheme, split = load_split(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if name == "tfidf":
            result = run_tfidf(split, scheme)
        elif name == "minilm":
            result = run_lora(split, scheme, "minilm", args.epochs, None, Path(tmp))
        else:
            result = run_lora(split, scheme, "smollm2-135m", args.smol_epochs, args.smol_train, Path(tmp))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = agreement([r.label for r in split.test], result.pop("predicted"), scheme.classes,
                       groups=[r.prompt_group for r in split.test], n_boot=1000, seed=args.seed)
    print(json.dumps({"name": name, "kappa": report["kappa"], "kappa_ci": report["kappa_ci"],
                      "accuracy": report["accuracy"], "test": len(split.test),
                      "train_per_s": result["train_examples"] / result["train_seconds"],
                      "score_per_s": len(split.test) / result["score_seconds"],
                      "peak_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "setup": result["setup"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CANDIDATES), help="comma list of tfidf, minilm, smollm2")
    parser.add_argument("--epochs", type=float, default=4.0, help="MiniLM epochs")
    parser.add_argument("--smol-epochs", type=float, default=1.0)
    parser.add_argument("--smol-train", type=int, default=200, help="SmolLM2 training rows (seeded subsample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)

    scheme, split = load_split(args.seed)
    print(f"XSTest v2 GPT-4 labels ({', '.join(scheme.classes)}), split by prompt group: "
          f"train {len(split.train)} / val {len(split.val)} / test {len(split.test)}\n")
    rows = []
    for name in args.only.split(","):
        command = [sys.executable, __file__, "--worker", name, "--epochs", str(args.epochs), "--smol-epochs",
                   str(args.smol_epochs), "--smol-train", str(args.smol_train), "--seed", str(args.seed)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-3000:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["wall"] = time.perf_counter() - started
        rows.append(row)
        print(f"{name}: done in {row['wall']:.0f}s ({row['setup']})", flush=True)

    print(f"\n{'candidate':<10} {'kappa':>6} {'95% CI':>15} {'acc':>6} {'train ex/s':>11} {'score resp/s':>13} "
          f"{'peak MiB':>9} {'CPU s':>7}")
    for r in rows:
        low, high = r["kappa_ci"] or (float("nan"), float("nan"))
        print(f"{r['name']:<10} {r['kappa']:>6.3f} {f'[{low:.3f}, {high:.3f}]':>15} {r['accuracy']:>6.3f} "
              f"{r['train_per_s']:>11.1f} {r['score_per_s']:>13.1f} {r['peak_mib']:>9.0f} {r['cpu_s']:>7.0f}")
    print("\nsetups: " + "; ".join(f"{r['name']}: {r['setup']}" for r in rows))


if __name__ == "__main__":
    main()
