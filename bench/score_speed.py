"""Scoring speed: `judge score` against a plain forward loop of the same model, in the same run.

Trains the lexical, MiniLM LoRA and MiniLM full judges quickly (1 epoch on a few hundred XSTest
rows from ../shared/data: speed does not depend on quality), then, for each judge in a fresh
subprocess (so its peak RSS is its own), times what `judge score` does after start-up
(`score_records` over the responses) next to the plainest loop over the same texts: the same
length-sorted order, max_length and batch size, one tokenizer call and one `model(**batch)` per
batch under `torch.inference_mode` (for TF-IDF: one `predict_proba` call). The two alternate
`--repeats` times; the ratio is best judge rate / best plain rate. Optional variants on the MiniLM
judges: the other of fp32 and bf16 (the judge's default is bf16 where the CPU has it natively) and
int8 dynamic quantization (speed and the kappa against the teacher's labels next to the default's),
and other batch sizes. Then `--engine ray` with `--ray-workers` actors on a local cluster (rate of
the whole call, actor start-up and model loads included) and whether its rows equal the local
engine's. Run with nice, nothing else heavy alongside:

    nice -n 10 .venv/bin/python bench/score_speed.py [--rows 400] [--repeats 2] [--variants fp32,bf16,int8]
        [--batch-sizes 16,64] [--ray-workers 2] [--only lexical,minilm-lora,minilm-full] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.shared_data import write_rows, xstest_gpt4_rows  # noqa: E402

JUDGES = ("lexical", "minilm-lora", "minilm-full")


def prepare(work: Path, n_train: int, n_rows: int, judges: list[str], epochs: float) -> Path:
    """Responses to score and quickly trained judges under `work` (reused when already there)."""
    rows = xstest_gpt4_rows()
    random.Random(0).shuffle(rows)
    responses = write_rows(work / "responses.jsonl", rows[:n_rows])
    train = write_rows(work / "train.jsonl", rows[-n_train:])
    from judge.records import read_records
    from judge.training.config import TrainConfig
    from judge.training.distill import distill

    for name in judges:
        if (work / name / "judge.json").is_file():
            continue
        started = time.perf_counter()
        config = TrainConfig.resolve(overrides={"student": name, "epochs": epochs, "view": "full", "max_length": 128})
        distill(read_records(train), work / name, config, progress=False)
        print(f"trained {name} in {time.perf_counter() - started:.0f}s", flush=True)
    return responses


def plain_loop(judge, records, batch_size: int):
    """The plainest scoring of the same texts: returns a function that scores them all once."""
    from judge.model import length_sorted_batches
    from judge.views import render, render_text

    batches = length_sorted_batches(records, batch_size)  # the order and batches `judge score` uses
    order = [i for chunk in batches for i in chunk]
    if judge.meta["kind"] == "lexical":
        from judge.backends.lexical import load_estimator

        pipeline = load_estimator(judge.path / judge.meta.get("model_file", "model.skops"))
        texts = [render_text(records[i], judge.view) for i in order]
        return lambda: pipeline.predict_proba(texts)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from judge.backends.transformer import artifact_backbone

    backbone = artifact_backbone(judge.meta["backbone"]).path
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=len(judge.classes_),
                                                               dtype=judge.dtype).eval()  # the judge's own precision
    pairs = [[render(records[i], judge.view) for i in chunk] for chunk in batches]

    @torch.inference_mode()
    def run():
        for chunk in pairs:
            contexts, responses = zip(*chunk)
            batch = tokenizer(list(contexts), list(responses), truncation="longest_first", max_length=judge.max_length,
                              padding=True, return_tensors="pt")
            model(**batch).logits.float().numpy()

    return run


def rate(fn, n: int) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the forking parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kappa(records, labels, classes) -> float:
    from judge.metrics import agreement

    labelled = [(r.label, p) for r, p in zip(records, labels) if r.label]
    return agreement([t for t, _ in labelled], [p for _, p in labelled], classes, n_boot=0)["kappa"]


def variant_judges(judge, names: list[str]) -> dict:
    """The same judge with its model cast to fp32 or bf16 (those other than the judge's own default), or
    int8-quantized (torch dynamic quantization of an fp32 copy)."""
    import copy

    import torch

    casts = {"fp32": torch.float32, "bf16": torch.bfloat16}
    out = {}
    for name in names:
        variant = copy.copy(judge)
        if name == "int8":
            variant.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(judge.model).float(), {torch.nn.Linear},
                                                                   dtype=torch.qint8)
        elif name in casts:
            if casts[name] == judge.dtype:
                continue
            variant.model = copy.deepcopy(judge.model).to(casts[name])
        else:
            raise SystemExit(f"unknown variant {name!r}: fp32, bf16 or int8")
        out[name] = variant
    return out


def worker(args) -> None:
    """One judge in this process: `judge score`'s work, the plain loop and the variants, taking turns
    `--repeats` times (so a change in the machine's load hits all of them alike); prints one JSON line."""
    import torch

    from judge.model import Judge
    from judge.records import read_records
    from judge.score import score_records

    started = time.perf_counter()
    judge = Judge.load(args.worker)
    load_seconds = time.perf_counter() - started
    records = read_records(args.responses, prefer_scheme=judge.scheme).records
    size = args.batch_size or judge.batch_size
    n = len(records)
    rows, predictions = score_records(judge, records, batch_size=size)  # also the rows the Ray engine must match
    Path(args.rows_out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    peak_mib = peak_rss_mib()  # load + one full scoring pass, before anything else is loaded
    contenders = {"judge": lambda: score_records(judge, records, batch_size=size),  # what `judge score` runs
                  "plain": plain_loop(judge, records, size)}
    variants = {}
    if judge.meta["kind"] == "transformer":
        for extra in [int(b) for b in args.batch_sizes.split(",") if b]:
            contenders[f"batch {extra}"] = lambda extra=extra: score_records(judge, records, batch_size=extra)
        for name, variant in variant_judges(judge, [v for v in args.variants.split(",") if v]).items():
            labels = [p.label for p in score_records(variant, records, batch_size=size)[1]]
            variants[name] = {"kappa": kappa(records, labels, judge.classes_),
                              "same_labels": sum(a == p.label for a, p in zip(labels, predictions)) / n}
            contenders[name] = lambda variant=variant: score_records(variant, records, batch_size=size)
    contenders["plain"]()  # warm-up
    rates = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            rates[name].append(rate(fn, n))
    print(json.dumps({"judge": args.worker, "dtype": str(getattr(judge, "dtype", "-")).replace("torch.", ""),
                      "n": n, "batch_size": size, "load_s": load_seconds, "peak_mib": peak_mib,
                      "rates": rates, "threads": torch.get_num_threads(), "variants": variants,
                      "kappa": kappa(records, [p.label for p in predictions], judge.classes_)}))


def ray_engine(work: Path, responses: Path, judges: list[str], workers: int) -> None:
    import ray

    from judge.model import Judge
    from judge.records import read_records
    from judge.score import score_with_engine

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), logging_level="WARNING", log_to_driver=False)
    print(f"\n--engine ray, {workers} workers on a local cluster of {os.cpu_count()} CPUs "
          f"(ray.init {time.perf_counter() - started:.1f}s)")
    print(f"{'judge':<12} {'resp/s':>7} {'wall s':>7}  same as the local engine: labels, whole rows")
    for name in judges:
        described = Judge.without_model(work / name)
        records = read_records(responses, prefer_scheme=described.scheme).records
        started = time.perf_counter()
        rows, _ = score_with_engine(described, records, "ray", workers=workers)
        seconds = time.perf_counter() - started
        local = [json.loads(line) for line in (work / f"{name}.local.jsonl").read_text(encoding="utf-8").splitlines()]
        same_labels = [r["judge_label"] for r in rows] == [r["judge_label"] for r in local]
        print(f"{name:<12} {len(records) / seconds:>7.1f} {seconds:>7.1f}  {same_labels}, {rows == local}", flush=True)
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(JUDGES))
    parser.add_argument("--train", type=int, default=300, help="training rows")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs (more for a judge whose kappa means something)")
    parser.add_argument("--rows", type=int, default=400, help="responses scored (of XSTest's 989 GPT-4-labelled)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="default: the judge's own")
    parser.add_argument("--batch-sizes", default="", help="extra batch sizes to time the MiniLM judges at, e.g. 16,64")
    parser.add_argument("--variants", default="fp32,bf16", help="MiniLM variants to time and check: fp32, bf16 (the one "
                        "that is not the judge's default), int8")
    parser.add_argument("--ray-workers", type=int, default=2, help="0 skips the Ray engine")
    parser.add_argument("--work", type=Path, help="keep judges here between runs (default: a temp folder)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--responses", help=argparse.SUPPRESS)
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    work = args.work or Path(tempfile.mkdtemp(prefix="score-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    judges = args.only.split(",")
    responses = prepare(work, args.train, args.rows, judges, args.epochs)
    print(f"\n{args.rows} XSTest responses, 128 tokens, {os.cpu_count()} CPUs; best of {args.repeats} passes each")
    print(f"{'judge':<12} {'dtype':>8} {'batch':>5} {'judge/s':>8} {'plain/s':>8} {'ratio':>6} {'load s':>6} {'peak MiB':>8} "
          f"{'kappa':>6}  variants")
    for name in judges:
        command = [sys.executable, __file__, "--worker", str(work / name), "--responses", str(responses),
                   "--rows-out", str(work / f"{name}.local.jsonl"), "--repeats", str(args.repeats),
                   "--batch-sizes", args.batch_sizes, "--variants", args.variants]
        if args.batch_size:
            command += ["--batch-size", str(args.batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-3000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        best = {name: max(values) for name, values in r["rates"].items()}
        others = "; ".join(f"{k}: {best[k]:.1f}/s ({best[k] / best['judge']:.2f}x)"
                           + (f", kappa {r['variants'][k]['kappa']:.3f}, same labels {r['variants'][k]['same_labels']:.1%}"
                              if k in r["variants"] else "")
                           for k in best if k not in ("judge", "plain"))
        print(f"{name:<12} {r['dtype']:>8} {r['batch_size']:>5} {best['judge']:>8.1f} {best['plain']:>8.1f} {best['judge'] / best['plain']:>6.2f} "
              f"{r['load_s']:>6.1f} {r['peak_mib']:>8.0f} {r['kappa']:>6.3f}  {others}", flush=True)
        print(f"{'':<12} every pass, resp/s: " + "; ".join(f"{k} {', '.join(f'{x:.1f}' for x in v)}"
                                                          for k, v in r["rates"].items()), flush=True)
    if args.ray_workers:
        ray_engine(work, responses, judges, args.ray_workers)


if __name__ == "__main__":
    main()
