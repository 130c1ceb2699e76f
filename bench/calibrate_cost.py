"""Calibrate lipaudit's convolution cost model (lipaudit/spectral/cost.py) on this machine.

Not a test.  Two parts:

1. Primitive rates, each the best of a few repeats (other jobs on a shared machine only ever make
   a run slower): float64 batched GEMM, float64 Cholesky, float64 symmetric eigensolver, float32
   convolution passes, and the Gram scatter of conv_gram.py.  These are the constants of
   cost.DeviceCosts; the script prints a table to paste into CPU_COSTS (or CUDA_COSTS).
2. The whole methods on a grid of layer geometries (channels 16–512, inputs 1×1 to 32×32,
   strides 1 and 2, depthwise): predicted seconds next to measured ones for the embedding's
   branch and bound and for the materialised operator, and whether 'auto' picked the faster one.

Usage:  python bench/calibrate_cost.py [--device cpu|cuda] [--skip-grid] [--threads N] [--cpu-time]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lipaudit.spectral import conv_norm  # noqa: E402
from lipaudit.spectral.conv import _Layer  # noqa: E402
from lipaudit.spectral.conv_gram import ConvGram  # noqa: E402
from lipaudit.spectral.cost import device_costs, embedding_seconds, materialized_seconds  # noqa: E402

CLOCK = time.perf_counter


def best_of(function, repeats: int = 3) -> float:
    """The best of a few runs, on CLOCK: wall time, or with --cpu-time this process's CPU time
    (robust when other jobs share the cores: it only counts while we run)."""
    best = math.inf
    for _ in range(repeats):
        start = CLOCK()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, CLOCK() - start)
    return best


def primitives(device: torch.device) -> dict[str, float]:
    f64 = dict(dtype=torch.float64, device=device)
    rates = {}
    a = torch.randn(16, 256, 256, **f64)
    rates["gemm_s"] = best_of(lambda: a @ a) / (16 * 2 * 256**3)
    cholesky = []
    for n in (2048, 4096):
        x = torch.randn(n, n, **f64)
        spd = x @ x.T + n * torch.eye(n, **f64)
        cholesky.append(best_of(lambda: torch.linalg.cholesky_ex(spd)) / (n**3 / 3))
    rates["cholesky_s"] = max(cholesky)
    eigen = []
    for n in (256, 512, 1024):
        x = torch.randn(n, n, **f64)
        sym = x @ x.T
        eigen.append(best_of(lambda: torch.linalg.eigvalsh(sym)) / n**3)
    rates["eigen_s"] = max(eigen)
    conv = []
    for c, h in ((64, 32), (256, 8)):
        w = torch.randn(c, c, 3, 3, device=device)
        x = torch.randn(1, c, h, h, device=device)
        conv.append(
            best_of(lambda: F.conv_transpose2d(F.conv2d(x, w, padding=1), w, padding=1)) / (2 * 2 * c * c * 9 * h * h)
        )
    rates["conv_s"] = max(conv)
    w = torch.randn(128, 128, 3, 3, **f64)
    gram = ConvGram.build(w, (8, 8), (1, 1, 1, 1), (1, 1), (1, 1), 1)
    groups = torch.arange(1, device=device)
    total = best_of(lambda: gram.gram(groups))
    products = best_of(lambda: gram._pair_products(groups))
    rates["scatter_s"] = max(total - products, 1e-12) / (gram.scatters * gram.channels**2)
    return rates


# (channels out, channels in per group, groups, kernel, input, stride)
GRID = [
    (16, 16, 1, 3, 32, 1),
    (64, 64, 1, 3, 16, 1),
    (64, 64, 1, 3, 8, 1),
    (64, 64, 1, 3, 4, 1),
    (128, 128, 1, 3, 8, 1),
    (128, 128, 1, 3, 4, 1),
    (128, 128, 1, 3, 2, 1),
    (128, 64, 1, 3, 8, 2),
    (256, 256, 1, 3, 4, 1),
    (256, 256, 1, 3, 2, 1),
    (256, 128, 1, 3, 4, 2),
    (512, 512, 1, 3, 2, 1),
    (512, 512, 1, 3, 1, 1),
    (512, 256, 1, 3, 2, 2),
    (256, 256, 1, 1, 8, 1),
    (96, 1, 96, 3, 16, 2),
    (192, 1, 192, 3, 8, 1),
    (384, 1, 384, 3, 4, 1),
    (320, 1, 320, 7, 8, 1),
    (64, 64, 1, 3, 32, 1),
]


def grid(device: torch.device, costs) -> None:
    header = (
        f"{'layer':>28} | {'emb pred':>8} {'emb s':>7} {'ratio':>6} | {'mat pred':>8} {'mat s':>7} "
        f"{'ratio':>6} | {'auto':>14} {'auto s':>7}"
    )
    print(header)
    print("-" * len(header))
    for c_out, c_in_g, groups, k, size, stride in GRID:
        torch.manual_seed(0)
        weight = torch.randn(c_out, c_in_g, k, k, dtype=torch.float64, device=device) * math.sqrt(2 / (c_in_g * k * k))
        kwargs = dict(strides=(stride, stride), pads=(k // 2,) * 4, dilations=(1, 1), groups=groups, device=device)
        layer = _Layer(weight, (size, size), (stride, stride), (k // 2,) * 4, (1, 1), groups)
        predicted_embedding = embedding_seconds(layer.shape, layer.polyphase, costs, estimate=True)
        predicted_materialized = materialized_seconds(layer.shape, costs)
        embedding = best_of(lambda: conv_norm(weight, (size, size), **kwargs, materialize_limit=0, costs=costs), 2)
        materialized = math.nan
        if predicted_materialized is not None and predicted_materialized < 20:
            materialized = best_of(
                lambda: conv_norm(weight, (size, size), **kwargs, materialize_limit=10**9, costs=costs), 2
            )
        auto = conv_norm(weight, (size, size), **kwargs, costs=costs)
        auto_s = best_of(lambda: conv_norm(weight, (size, size), **kwargs, costs=costs), 2)
        name = f"{c_out}x{c_in_g}x{k}x{k} g{groups} @{size} s{stride}"
        mp = f"{predicted_materialized:8.3f}" if predicted_materialized is not None else f"{'-':>8}"
        ratio = materialized / predicted_materialized if predicted_materialized else math.nan
        print(
            f"{name:>28} | {predicted_embedding:8.3f} {embedding:7.3f} {embedding / predicted_embedding:6.2f} | "
            f"{mp} {materialized:7.3f} {ratio:6.2f} | {auto.method:>14} {auto_s:7.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of wall time (use with --threads 1 on a "
        "shared machine; divide the rates by the core count's speed-up for the table)",
    )
    args = parser.parse_args()
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK = time.process_time
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    rates = primitives(device)
    current = device_costs(device)
    print("\nprimitive rates (best of 3):")
    for key, value in rates.items():
        print(f"  {key:12} {value:.2e}   (table: {getattr(current, key):.2e})")
    print("\nas a table:  " + ", ".join(f"{k}={v:.1e}" for k, v in rates.items()))
    if not args.skip_grid:
        print()
        print("predictions with the measured rates (the table's other constants unchanged):")
        grid(device, replace(current, **rates))


if __name__ == "__main__":
    main()
