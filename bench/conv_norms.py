"""Convolution and dense norms: exact FFT + SVD, power iteration, and lipaudit's 'auto', side by side.

Not a test.  One run over the 53 convolutions of a ResNet-50 at 224×224 (random Kaiming weights,
calibrated BatchNorm folded in; bench/_models.py) and the dense layers of a 4096-wide classifier:

  exact   the classical certified bound: stride-1 circulant embedding (period H + 2·pad), rfft2 of
          the kernel, batched float32 svdvals over every frequency block (Sedghi et al. 2019);
  power   power iteration on the true strided, padded operator, 100 iterations (AutoLip), float32,
          the final ‖A v‖ evaluated in float64 (a float32 norm of a large output can overshoot the
          true norm by ~1e-5): an estimate from below;
  auto    lipaudit.spectral.conv_norm(method='auto'): certified, stride kept (polyphase), branch
          and bound over the blocks.

Usage:  python bench/conv_norms.py [--skip-exact] [--layers NAME ...] [--no-dense] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _models import ConvLayer, folded_convs, resnet50, wide_mlp  # noqa: E402

from lipaudit.spectral import conv_norm, dense_norm  # noqa: E402

SVD_CHUNK_BYTES = 256 * 2**20


def exact_fft(layer: ConvLayer) -> float:
    """max over the stride-1 circulant's frequency blocks of σ_max, float32 svdvals (the reference)."""
    w = layer.weight.float()
    periods = [h + b + e for h, b, e in zip(layer.spatial, layer.pads[:2], layer.pads[2:])]
    c_out, c_in_g = w.shape[:2]
    g = layer.groups
    spectrum = torch.fft.rfft2(w, s=periods)  # (C_out, C_in/g, N1, N2//2+1)
    blocks = spectrum.reshape(g, c_out // g, c_in_g, -1).permute(3, 0, 1, 2).reshape(-1, c_out // g, c_in_g)
    step = max(1, SVD_CHUNK_BYTES // (blocks[0].numel() * 8 * 4))
    best = 0.0
    for start in range(0, blocks.shape[0], step):
        best = max(best, float(torch.linalg.svdvals(blocks[start : start + step].contiguous())[:, 0].max()))
    return best


def power_100(layer: ConvLayer, iterations: int = 100) -> float:
    """Power iteration on the true operator (conv2d and its adjoint conv_transpose2d), float32."""
    w = layer.weight.float()
    pad = layer.pads[:2]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, w.shape[1] * layer.groups, *layer.spatial, generator=generator)
    x = x / x.norm()
    for _ in range(iterations):
        y = F.conv2d(x, w, stride=layer.stride, padding=pad, dilation=layer.dilation, groups=layer.groups)
        extra = [
            h - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for h, o, s, p, d, k in zip(layer.spatial, y.shape[2:], layer.stride, pad, layer.dilation, w.shape[2:])
        ]
        x = F.conv_transpose2d(
            y, w, stride=layer.stride, padding=pad, output_padding=extra, dilation=layer.dilation, groups=layer.groups
        )
        x = x / x.norm()
    x = x.double() / x.double().norm()
    y = F.conv2d(
        x, layer.weight.double(), stride=layer.stride, padding=pad, dilation=layer.dilation, groups=layer.groups
    )
    return float(y.norm())


def timed(function, *args, **kwargs):
    """(result, wall seconds, process CPU seconds).

    Other jobs on a shared machine inflate wall times unevenly; CPU time is steadier, so the
    summary reports both."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start, time.process_time() - cpu


def warm_up() -> None:
    """One small call of each method first, so that no timed call pays one-time initialisation."""
    layer = ConvLayer("warm-up", torch.randn(8, 8, 3, 3), (16, 16), (2, 2), (1, 1, 1, 1), (1, 1), 1)
    exact_fft(layer)
    power_100(layer, 2)
    conv_norm(
        layer.weight,
        layer.spatial,
        strides=layer.stride,
        pads=layer.pads,
        dilations=layer.dilation,
        materialize_limit=0,
    )


def conv_bench(layers: list[ConvLayer], skip_exact: bool) -> dict:
    warm_up()
    rows = []
    header = (
        f"{'layer':24} {'kernel':>16} {'input':>8} {'s':>2} | {'exact':>8} {'t':>6} | {'power':>8} {'t':>6} | "
        f"{'auto':>8} {'t':>6} {'method':>14} | {'/exact':>7} {'/power':>7} {'gap':>7}"
    )
    print(header)
    print("-" * len(header))
    for layer in layers:
        exact, t_exact, c_exact = (None, 0.0, 0.0) if skip_exact else timed(exact_fft, layer)
        power, t_power, c_power = timed(power_100, layer)
        ours, t_ours, c_ours = timed(
            conv_norm,
            layer.weight,
            layer.spatial,
            strides=layer.stride,
            pads=layer.pads,
            dilations=layer.dilation,
            groups=layer.groups,
            method="auto",
        )
        row = dict(
            name=layer.name,
            kernel=list(layer.weight.shape),
            input=list(layer.spatial),
            stride=list(layer.stride),
            exact=exact,
            t_exact=t_exact,
            power=power,
            t_power=t_power,
            auto=ours.value,
            t_auto=t_ours,
            method=ours.method,
            estimate=ours.estimate,
            gap=ours.gap,
            certified=ours.certified,
            notes=ours.notes,
            cpu_exact=c_exact,
            cpu_power=c_power,
            cpu_auto=c_ours,
        )
        rows.append(row)
        kernel = "x".join(map(str, layer.weight.shape))
        ratio_exact = f"{ours.value / exact:7.4f}" if exact else "      -"
        exact_text = f"{exact:8.4f} {t_exact:6.2f}" if exact else f"{'-':>8} {'-':>6}"
        print(
            f"{layer.name:24} {kernel:>16} {layer.spatial[0]:>4}x{layer.spatial[1]:<3} {layer.stride[0]:>2} | "
            f"{exact_text} | {power:8.4f} {t_power:6.2f} | {ours.value:8.4f} {t_ours:6.2f} {ours.method:>14} | "
            f"{ratio_exact} {ours.value / power:7.4f} {ours.gap if ours.gap is not None else float('nan'):7.4f}",
            flush=True,
        )
    return summarise_convs(rows, skip_exact)


def summarise_convs(rows: list[dict], skip_exact: bool) -> dict:
    to_power = [r["auto"] / r["power"] for r in rows]
    strided = [r["auto"] / r["power"] for r in rows if max(r["stride"]) > 1]
    summary = dict(
        layers=len(rows),
        certified=all(r["certified"] for r in rows),
        below_power=sum(1 for x in to_power if x < 1.0),
        ratio_to_power=dict(
            min=min(to_power),
            median=statistics.median(to_power),
            max=max(to_power),
            above_1_02=sum(1 for x in to_power if x > 1.02),
            strided_max=max(strided) if strided else None,
        ),
        time=dict(
            exact=sum(r["t_exact"] for r in rows) if not skip_exact else None,
            power=sum(r["t_power"] for r in rows),
            auto=sum(r["t_auto"] for r in rows),
        ),
        cpu=dict(
            exact=sum(r["cpu_exact"] for r in rows) if not skip_exact else None,
            power=sum(r["cpu_power"] for r in rows),
            auto=sum(r["cpu_auto"] for r in rows),
        ),
    )
    if not skip_exact:
        to_exact = [r["auto"] / r["exact"] for r in rows]
        power_to_exact = [r["power"] / r["exact"] for r in rows if max(r["stride"]) > 1]
        summary["ratio_to_exact"] = dict(
            min=min(to_exact),
            median=statistics.median(to_exact),
            max=max(to_exact),
            above_1_005=sum(1 for x in to_exact if x > 1.005),
        )
        summary["power_to_exact_strided"] = (
            dict(min=min(power_to_exact), max=max(power_to_exact)) if power_to_exact else None
        )
        summary["speedup_vs_exact"] = summary["time"]["exact"] / summary["time"]["auto"]
    summary["speedup_vs_power"] = summary["time"]["power"] / summary["time"]["auto"]
    print()
    print(
        f"conv layers: {summary['layers']}, all certified: {summary['certified']}, "
        f"auto below power (must be 0): {summary['below_power']}"
    )
    r = summary["ratio_to_power"]
    print(
        f"auto / power-100: min {r['min']:.4f}  median {r['median']:.4f}  max {r['max']:.4f}  "
        f"(strided max {r['strided_max']:.4f}; layers above 1.02: {r['above_1_02']})"
    )
    if not skip_exact:
        r = summary["ratio_to_exact"]
        print(
            f"auto / exact stride-1 FFT: min {r['min']:.4f}  median {r['median']:.4f}  max {r['max']:.4f}  "
            f"(layers above 1.005: {r['above_1_005']})"
        )
        if summary["power_to_exact_strided"]:
            p = summary["power_to_exact_strided"]
            print(f"power / exact FFT on strided layers: {p['min']:.3f} .. {p['max']:.3f}")
    for label, t in (("wall", summary["time"]), ("CPU", summary["cpu"])):
        exact_time = f"{t['exact']:.1f} s" if t["exact"] is not None else "skipped"
        print(
            f"total {label} time: exact FFT+SVD {exact_time}, power-100 {t['power']:.1f} s, auto {t['auto']:.1f} s"
            + (
                f"  (speed-up {t['exact'] / t['auto']:.1f}x vs exact, {t['power'] / t['auto']:.2f}x vs power)"
                if t["exact"] is not None
                else f"  (speed-up {t['power'] / t['auto']:.2f}x vs power)"
            )
        )
    return dict(rows=rows, summary=summary)


def dense_bench() -> dict:
    rows = []
    print()
    header = (
        f"{'layer':8} {'shape':>11} | {'svd f32':>9} {'t':>6} | {'svd f64':>9} {'t':>6} | "
        f"{'power':>9} {'t':>6} | "
        f"{'auto':>9} {'t':>6} {'method':>16} | {'/svd64':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, weight in wide_mlp():
        svd32, t32, _ = timed(lambda: float(torch.linalg.matrix_norm(weight, ord=2)))
        w64 = weight.double()
        svd64, t64, _ = timed(lambda: float(torch.linalg.matrix_norm(w64, ord=2)))
        power, t_power, _ = timed(dense_norm, weight, "power")
        ours, t_ours, _ = timed(dense_norm, weight, "auto")
        rows.append(
            dict(
                name=name,
                shape=list(weight.shape),
                svd32=svd32,
                t_svd32=t32,
                svd64=svd64,
                t_svd64=t64,
                power=power.value,
                t_power=t_power,
                auto=ours.value,
                t_auto=t_ours,
                method=ours.method,
                certified=ours.certified,
            )
        )
        shape = "x".join(map(str, weight.shape))
        print(
            f"{name:8} {shape:>11} | {svd32:9.5f} {t32:6.2f} | {svd64:9.5f} {t64:6.2f} | {power.value:9.5f} "
            f"{t_power:6.2f} | {ours.value:9.5f} {t_ours:6.2f} {ours.method:>16} | {ours.value / svd64:8.6f}",
            flush=True,
        )
    totals = {k: sum(r[k] for r in rows) for k in ("t_svd32", "t_svd64", "t_power", "t_auto")}
    print(
        f"total time: svd f32 {totals['t_svd32']:.1f} s, svd f64 {totals['t_svd64']:.1f} s, "
        f"power-100 {totals['t_power']:.1f} s, auto {totals['t_auto']:.1f} s; auto certified: "
        f"{all(r['certified'] for r in rows)}; max auto/svd64 {max(r['auto'] / r['svd64'] for r in rows):.7f}"
    )
    return dict(rows=rows, totals=totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-exact", action="store_true", help="skip the (slow) exact FFT + SVD reference")
    parser.add_argument("--layers", nargs="*", help="only these conv layers (names as in the table)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense layers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    layers = folded_convs(resnet50())
    print(f"ResNet-50 built and calibrated in {time.perf_counter() - start:.1f} s; {len(layers)} conv layers\n")
    if args.layers:
        layers = [layer for layer in layers if layer.name in args.layers]
    results = dict(conv=conv_bench(layers, args.skip_exact))
    if not args.no_dense:
        results["dense"] = dense_bench()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
