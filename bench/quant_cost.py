"""What 4-bit NF4 costs a small backbone, and what a budget's cut of epochs costs: MiniLM on the same folds.

Every variant trains on the same grouped 5 folds of XSTest's 989 GPT-4 labels (view `full`, early
stopping) through the portfolio's own fold function, and predicts the held-out fold. Pooled out-of-fold
kappa per variant with its group-bootstrap interval, then the paired differences. The default variants
are LoRA under NF4, LoRA and a full fine-tune at the default epochs: on a CPU bitsandbytes computes NF4
in fp32, so the weights' rounding is what is measured, as on CUDA (about 40 minutes on 2 cores: a NF4
fold ~220 s, LoRA ~170 s, full ~140 s in bf16). `full-1-epoch` and `full-2-epochs` are the full
fine-tune as a budget cap leaves it (docs/distill.md, Budget; ~40 s and ~75 s a fold).

    nice -n 5 .venv/bin/python bench/quant_cost.py            # --folds 0,1 for a shorter run
    nice -n 5 .venv/bin/python bench/quant_cost.py --variants full-1-epoch,full-2-epochs,full
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench.distill_compare import DATA  # noqa: E402
from bench.shared_data import dataset_of  # noqa: E402
from judge.metrics import bootstrap_kappa, paired_kappa_difference, top_labels  # noqa: E402
from judge.splits import grouped_folds  # noqa: E402
from judge.training.config import TrainConfig  # noqa: E402
from judge.training.lexical import kappa  # noqa: E402
from judge.training.portfolio import Context, TransformerCandidate  # noqa: E402

VARIANTS = {"lora-nf4": ("lora", "4bit", None), "lora": ("lora", "none", None), "full": ("full", "none", None),
            "full-1-epoch": ("full", "none", 1.0), "full-2-epochs": ("full", "none", 2.0)}  # None: the default epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2,3,4", help="which of the 5 folds to run (comma list)")
    parser.add_argument("--variants", default="lora-nf4,lora,full", help=f"comma list of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    dataset = dataset_of(DATA["xstest"][0]())
    records, scheme = dataset.labelled, dataset.scheme
    config, folds = TrainConfig.resolve(), grouped_folds(records, 5, 0)
    run = [int(f) for f in args.folds.split(",")]
    rows = np.concatenate([folds.held(f) for f in run])
    y = np.array([r.label for r in records])
    groups = [records[i].prompt_group for i in rows]
    predicted = {}
    with tempfile.TemporaryDirectory() as work:
        ctx = Context(records, folds, scheme, config, Path(work), float("inf"))
        for name in variants:
            finetune, quant, epochs = VARIANTS[name]
            candidate = TransformerCandidate(f"minilm-{name}", "minilm", finetune)
            cfg = replace(candidate.configure(replace(config, quant=quant)), view="full",
                          epochs=epochs or config.epochs)
            labels = np.empty(len(records), dtype=object)
            for fold in run:
                started = time.perf_counter()
                probs, training = candidate._fold(ctx, cfg, fold)
                held = folds.held(fold)
                labels[held] = top_labels(probs, scheme.classes)
                print(f"{name:<13} fold {fold}: kappa {kappa(y[held], labels[held], scheme.classes):.3f} "
                      f"({training['quant']}, {training['precision']}, {time.perf_counter() - started:.0f}s)", flush=True)
            predicted[name] = list(labels[rows])
    print(f"\nXSTest GPT-4 labels, {len(rows)} rows out of fold (grouped folds {args.folds}), MiniLM view full:")
    for name, labels in predicted.items():
        low, high = bootstrap_kappa(list(y[rows]), labels, scheme.classes, groups)
        print(f"{name:<13} kappa {kappa(y[rows], labels, scheme.classes):.3f} [{low:.3f}, {high:.3f}]")
    for a, b in itertools.combinations(predicted, 2):
        delta, (low, high) = paired_kappa_difference(list(y[rows]), predicted[a], predicted[b], scheme.classes, groups)
        print(f"{a} - {b}: {delta:+.3f} [{low:+.3f}, {high:+.3f}] (paired group bootstrap)")


if __name__ == "__main__":
    main()
