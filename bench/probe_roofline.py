"""Is the probe's pass at this machine's compute bound? Its rate against plain matmuls', in one run.

The probe student costs one forward pass of the frozen backbone over every labelled row
(`judge.backends.probe.Encoder.features`, the backbone cut after the deepest layer the probe reads),
and on a CPU that pass is most of `judge distill`'s time. This prints the rate of the same pass's
linear layers run as bare matmuls (same shapes, dtype, device and threads), the pass's own rate over
rows that fill `--max-length` tokens, and their ratio. Both count the linear layers' FLOPs only
(2 per weight per token); attention's own work is left out of the pass's count, so the ratio is a
lower bound (on SmolLM2-135M at 256 tokens attention adds 4-8%, causal or not).

    nice -n 5 .venv/bin/python bench/probe_roofline.py [--backbone smollm2-135m] [--rows 64] [--max-length 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.gpu_check import long_records  # noqa: E402
from judge.backbones import local_backbone, resolve_backbone  # noqa: E402
from judge.backends.probe import Encoder, backbone_layers, searched_layers  # noqa: E402
from judge.backends.transformer import CPU_BATCH_SIZE, encode  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(shapes: list[tuple[int, int]], tokens: int, device: torch.device, dtype: torch.dtype,
                repeats: int = 5) -> float:
    """GFLOP/s of (tokens x in) @ (in x out) for every linear layer's (out, in), timed together (best of `repeats`)."""
    pairs = [(torch.randn(tokens, n_in, device=device, dtype=dtype), torch.randn(n_in, n_out, device=device, dtype=dtype))
             for n_out, n_in in shapes]
    flops = sum(2 * tokens * n_in * n_out for n_out, n_in in shapes)
    best = float("inf")
    for _ in range(repeats + 1):  # the first round warms up
        synchronize(device)
        started = time.perf_counter()
        for x, w in pairs:
            x @ w
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=CPU_BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    ref = local_backbone(resolve_backbone(args.backbone))
    layers = searched_layers(backbone_layers(ref))
    encoder = Encoder(ref, max(layers), layers, args.max_length)
    linears = [m.weight.shape for m in encoder.model.modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(out * n_in for out, n_in in linears)
    records = long_records(args.rows)
    tokens = int(encode(encoder.tokenizer, records, "question", args.max_length)["attention_mask"].sum())

    encoder.features(records[:args.batch_size], "question", batch_size=args.batch_size)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        synchronize(encoder.device)
        started = time.perf_counter()
        encoder.features(records, "question", batch_size=args.batch_size)
        synchronize(encoder.device)
        best = min(best, time.perf_counter() - started)
    pass_rate = 2 * weights * tokens / best / 1e9
    bound = matmul_rate([tuple(s) for s in linears], args.batch_size * args.max_length, encoder.device, encoder.dtype)

    print(f"{args.backbone}: {max(layers)} layers loaded, {len(linears)} linear layers, {weights / 1e6:.1f}M weights; "
          f"{encoder.device.type}, {str(encoder.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads")
    print(f"pass: {args.rows} rows x {args.max_length} tokens ({tokens} real), batch {args.batch_size}: "
          f"{best:.2f} s (best of {args.repeats}), {args.rows / best:.2f} rows/s, {pass_rate:.1f} GFLOP/s in its linear layers")
    print(f"the same linear layers as bare matmuls ({args.batch_size * args.max_length} tokens at once): {bound:.1f} GFLOP/s")
    print(f"ratio: {pass_rate / bound:.2f} of the matmul rate (a lower bound: attention's own work is not counted)")


if __name__ == "__main__":
    main()
