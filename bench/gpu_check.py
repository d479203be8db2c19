"""The CUDA paths end to end on one GPU, on models built here; prints what it measured (under 8 minutes).

1. QLoRA: a tiny random Llama (tests/tiny.py) distilled with ``--quant 4bit`` (NF4, double
   quantization, bf16 compute, paged 8-bit AdamW, gradient checkpointing), then loaded for scoring:
   on CUDA the adapter must sit on a 4-bit base (bitsandbytes Linear4bit layers) on the GPU.
2. bf16 scoring: a MiniLM LoRA judge (1 epoch on synthetic rows: speed does not depend on
   quality) scored in bf16 and in fp32 on responses long enough to fill 128 and 256 tokens, at the
   default batch size and a few others: responses/s, peak GPU memory, labels bf16 and fp32 share.
3. With Ray installed: `--engine ray` with one actor per GPU on the same responses, rows compared
   with the local engine's.

``--cpu`` runs the same steps on the CPU with tiny sizes: a dry run that checks the script, not a
GPU. Without CUDA (and without ``--cpu``) it says so and exits 0.

    .venv/bin/python bench/gpu_check.py          # on a GPU machine
    nice -n 10 .venv/bin/python bench/gpu_check.py --cpu
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tests.tiny import WORDS, make_tiny_llama, synthetic_rows, write_jsonl  # noqa: E402


def log(message: str) -> None:
    print(message, flush=True)


def train(rows_file: Path, out: Path, **overrides) -> float:
    from judge.records import read_records
    from judge.training.config import TrainConfig
    from judge.training.distill import distill

    started = time.perf_counter()
    config = TrainConfig.resolve(overrides={"student": "transformer", "early_stopping_patience": 10, **overrides})
    distill(read_records(rows_file), out, config, progress=False)
    return time.perf_counter() - started


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device == "cuda" else "-"


def timed_predict(judge, records, batch_size: int | None = None) -> tuple[float, list[str]]:
    judge.predict(records[:64], batch_size=batch_size)  # warm-up: kernels, allocator
    if judge.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    labels = [p.label for p in judge.predict(records, batch_size=batch_size)]
    return len(records) / (time.perf_counter() - started), labels


def check_qlora(work: Path, device: str, sizes: dict) -> None:
    import bitsandbytes as bnb

    from judge.model import Judge

    llama = make_tiny_llama(work / "tiny-llama")
    rows = write_jsonl(work / "llama-rows.jsonl", synthetic_rows(sizes["llama_rows"], seed=1))
    seconds = train(rows, work / "qlora", backbone=str(llama), quant="4bit", gradient_checkpointing=True,
                    epochs=sizes["llama_epochs"], lr=1e-3, max_length=64, batch_size=16)
    judge = Judge.load(work / "qlora")
    training = judge.meta["training"]
    four_bit = sum(isinstance(m, bnb.nn.Linear4bit) for m in judge.model.modules())
    on = {p.device.type for p in judge.model.parameters()}
    from judge.records import read_records

    records = read_records(rows).records
    rate, _ = timed_predict(judge, records)
    log(f"QLoRA tiny Llama: trained in {seconds:.1f}s (quant={training['quant']}, {training['train_examples_per_second']} ex/s), test kappa {judge.meta['metrics']['test']['kappa']:.3f}; "
        f"scoring: {four_bit} Linear4bit layers, weights on {sorted(on)}, {rate:.0f} resp/s")
    assert training["quant"] == "4bit"
    if device == "cuda":
        assert four_bit == 14 and on == {"cuda"}, "the QLoRA judge should score on its 4-bit base on the GPU"


def long_records(n: int, seed: int = 0):
    """Responses of ~400 words, so every one fills 128 and 256 tokens: the rate is per full-length input."""
    from judge.records import record_from_row

    rng = random.Random(seed)
    return [record_from_row({"id": f"long{i}", "question": "How do I do this?",
                             "response": " ".join(rng.choice(WORDS) for _ in range(400))}, source="gpu_check", line=i)
            for i in range(n)]


def minilm_judge(work: Path, sizes: dict) -> Path:
    """A MiniLM LoRA judge (trained once per run; the bf16 and Ray steps share it)."""
    if not (work / "minilm" / "judge.json").is_file():
        rows = write_jsonl(work / "minilm-rows.jsonl", synthetic_rows(sizes["minilm_rows"], seed=2))
        seconds = train(rows, work / "minilm", backbone="minilm", epochs=1, max_length=128, batch_size=32)
        log(f"MiniLM LoRA judge trained in {seconds:.1f}s on {sizes['minilm_rows']} synthetic rows")
    return work / "minilm"


def check_bf16(work: Path, device: str, sizes: dict) -> None:
    from judge.model import Judge

    path = minilm_judge(work, sizes)
    records = long_records(sizes["score_rows"])
    log(f"{'tokens':>6} {'dtype':>8} {'batch':>5} {'resp/s':>9} {'peak MiB':>9}  labels shared with fp32")
    for tokens in (128, 256):
        reference = None
        for dtype in ("float32", "bfloat16"):
            judge = Judge.load(path, device=device, dtype=dtype)
            judge.max_length = tokens
            default = judge.default_batch_size({**judge.meta, "max_length": tokens}, device)
            for batch in sorted({default, *sizes["batch_sizes"]}):
                reset_peak(device)
                rate, labels = timed_predict(judge, records, batch)
                reference = labels if reference is None else reference
                shared = sum(a == b for a, b in zip(labels, reference)) / len(labels)
                mark = " (default)" if batch == default else ""
                log(f"{tokens:>6} {dtype:>8} {batch:>5} {rate:>9.0f} {peak_mib(device):>9}  {shared:.1%}{mark}")
            del judge
            if device == "cuda":
                torch.cuda.empty_cache()


def check_ray(work: Path, device: str, sizes: dict) -> None:
    try:
        import ray
    except ImportError:
        log("Ray engine: ray is not installed (pip install -e '.[ray]'), skipped")
        return
    from judge.model import Judge
    from judge.score import score_records, score_with_engine

    path = minilm_judge(work, sizes)
    records = long_records(sizes["score_rows"], seed=7)
    local_rows, _ = score_records(Judge.load(path), records)
    ray.init(num_cpus=os.cpu_count(), logging_level="WARNING", log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    started = time.perf_counter()
    rows, _ = score_with_engine(Judge.without_model(path), records, "ray", workers=max(1, gpus))
    seconds = time.perf_counter() - started
    ray.shutdown()
    log(f"Ray engine: {max(1, gpus)} actor(s), {gpus} GPU(s) in the cluster: {len(records) / seconds:.1f} resp/s "
        f"over the whole call (actor start-up included); rows equal to the local engine's: {rows == local_rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU with tiny sizes")
    parser.add_argument("--skip", default="", help="comma list of steps to skip: qlora, bf16, ray")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        log("no CUDA device here: nothing to check (bench/gpu_check.py --cpu runs the same steps on the CPU)")
        return
    device = "cpu" if args.cpu else "cuda"
    sizes = ({"llama_rows": 48, "llama_epochs": 1, "minilm_rows": 40, "score_rows": 48, "batch_sizes": []} if args.cpu
             else {"llama_rows": 240, "llama_epochs": 3, "minilm_rows": 400, "score_rows": 8192,
                   "batch_sizes": [64, 1024]})
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        log(f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no (fp16 instead)'}")
    else:
        log(f"dry run on the CPU ({torch.get_num_threads()} threads), tiny sizes: checks the script, measures no GPU")
    started = time.perf_counter()
    steps = {"qlora": check_qlora, "bf16": check_bf16, "ray": check_ray}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, step in steps.items():
            if name in args.skip.split(","):
                continue
            step_started = time.perf_counter()
            step(Path(tmp), device, sizes)
            log(f"[{name} done in {time.perf_counter() - step_started:.0f}s]")
    log(f"all checks passed in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
