"""Convolution norms of whole backbones: lipaudit's 'auto' next to power iteration and the exact FFT.

Not a test.  Models from bench/_zoo.py (random Kaiming weights, calibrated BatchNorm folded in as
lipaudit's fold pass does), each at the input sizes users train them at:

  resnet18, mobilenet_v2, regnetx_200mf, convnext_atto   at 32×32 and 64×64
  yolov8n                                                  at 640×640
  resnet50                                                 at 224×224

Mode ``norms`` (default): for every convolution, the time and value of
  auto    lipaudit.spectral.conv_norm(method='auto'): certified, the cost model's choice per layer;
  power   power iteration on the true operator, 100 iterations, float32 (an estimate from below);
  fft     the classical certified bound: stride-1 circulant of period H + 2·pad, every frequency
          block through float32 svdvals (Sedghi et al. 2019; bench/conv_norms.py);
then per model: total seconds of each, time ratios, value ratios (auto/power ≥ 1 always: auto is
certified, power an estimate; auto/fft is how much tighter the cost model's figure is than the
classical bound), the methods 'auto' chose, and how many layers stayed above the 0.5 % target.

Mode ``audit``: exports each model to ONNX (torch.onnx.export, dynamo=False, opset 17) and times
the public ``lipaudit.audit(path, input_shape=[...])`` end to end.

``--lipaudit-root DIR`` imports lipaudit from another checkout (e.g. the code before a change), so
the same script measures before and after.  Times are wall seconds; on a shared machine also look
at the CPU seconds printed next to them.

Usage:  python bench/model_norms.py [--mode norms|audit] [--models NAME[@SIZE] ...] [--skip-fft] [--skip-power]
                                    [--layers] [--json FILE] [--lipaudit-root DIR] [--threads N]
                                    [--from-json FILE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RUNS = [
    "resnet18@32",
    "resnet18@64",
    "mobilenet_v2@32",
    "mobilenet_v2@64",
    "regnetx_200mf@32",
    "regnetx_200mf@64",
    "convnext_atto@32",
    "convnext_atto@64",
    "yolov8n@640",
    "resnet50@224",
]
TARGET = 0.005


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("norms", "audit"), default="norms")
    parser.add_argument("--models", nargs="*", default=DEFAULT_RUNS, help="NAME@SIZE (default: all)")
    parser.add_argument("--skip-fft", action="store_true")
    parser.add_argument("--skip-power", action="store_true")
    parser.add_argument("--layers", action="store_true", help="print every layer")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--lipaudit-root", type=Path, help="import lipaudit from this checkout")
    parser.add_argument("--from-json", nargs="*", type=Path, help="print the table of earlier --json files instead")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (on a shared machine, 1 thread and the CPU seconds are the steadier figure)",
    )
    return parser.parse_args()


ARGS = parse_args()
sys.path.insert(0, str(HERE))
sys.path.insert(0, str((ARGS.lipaudit_root or HERE.parent).resolve()))

import torch  # noqa: E402
from _models import folded_convs  # noqa: E402
from _zoo import MODELS  # noqa: E402
from conv_norms import exact_fft, power_100, timed, warm_up  # noqa: E402

import lipaudit  # noqa: E402  (first: bench/conv_norms.py puts this checkout on the path too)
from lipaudit.spectral import conv_norm  # noqa: E402


def run_norms(name: str, size: int) -> dict:
    model = MODELS[name](size)
    layers = folded_convs(model, size)
    rows = []
    for layer in layers:
        ours, t_auto, c_auto = timed(
            conv_norm,
            layer.weight,
            layer.spatial,
            strides=layer.stride,
            pads=layer.pads,
            dilations=layer.dilation,
            groups=layer.groups,
            method="auto",
        )
        power, t_power, c_power = (None, 0.0, 0.0) if ARGS.skip_power else timed(power_100, layer)
        fft, t_fft, c_fft = (None, 0.0, 0.0) if ARGS.skip_fft else timed(exact_fft, layer)
        row = dict(
            name=layer.name,
            kernel=list(layer.weight.shape),
            input=list(layer.spatial),
            stride=layer.stride[0],
            groups=layer.groups,
            auto=ours.value,
            method=ours.method,
            certified=ours.certified,
            gap=ours.gap,
            estimate=ours.estimate,
            t_auto=t_auto,
            cpu_auto=c_auto,
            power=power,
            t_power=t_power,
            cpu_power=c_power,
            fft=fft,
            t_fft=t_fft,
            cpu_fft=c_fft,
            notes=getattr(ours, "notes", []),
        )
        rows.append(row)
        if ARGS.layers:
            kernel = "x".join(map(str, layer.weight.shape))
            print(
                f"  {layer.name:28} {kernel:>14} g{layer.groups:<4} {layer.spatial[0]:>4}² s{layer.stride[0]} | "
                f"auto {ours.value:9.4f} {t_auto:6.2f}s {ours.method:>15} gap {_fmt(ours.gap, '.2%')} | "
                f"power {_fmt(power, '9.4f')} {t_power:6.2f}s | fft {_fmt(fft, '9.4f')} {t_fft:6.2f}s",
                flush=True,
            )
    return summarise(name, size, rows)


def summarise(name: str, size: int, rows: list[dict]) -> dict:
    methods: dict[str, int] = {}
    for row in rows:
        methods[row["method"]] = methods.get(row["method"], 0) + 1
    loose = [r for r in rows if r["gap"] is not None and r["gap"] > TARGET]
    summary = dict(
        model=name,
        size=size,
        layers=len(rows),
        certified=all(r["certified"] for r in rows),
        t_auto=sum(r["t_auto"] for r in rows),
        cpu_auto=sum(r["cpu_auto"] for r in rows),
        t_power=sum(r["t_power"] for r in rows),
        t_fft=sum(r["t_fft"] for r in rows),
        cpu_power=sum(r["cpu_power"] for r in rows),
        cpu_fft=sum(r["cpu_fft"] for r in rows),
        methods=methods,
        above_target=len(loose),
        max_gap=max((r["gap"] or 0.0) for r in rows),
        slowest=sorted(((r["t_auto"], r["name"], r["method"]) for r in rows), reverse=True)[:3],
    )
    if not ARGS.skip_power:
        ratios = [r["auto"] / r["power"] for r in rows if r["power"]]
        summary["auto_over_power"] = dict(median=statistics.median(ratios), max=max(ratios), min=min(ratios))
    if not ARGS.skip_fft:
        ratios = [r["auto"] / r["fft"] for r in rows if r["fft"]]
        summary["auto_over_fft"] = dict(median=statistics.median(ratios), max=max(ratios), min=min(ratios))
    return dict(summary=summary, rows=rows)


def print_table(summaries: list[dict]) -> None:
    header = (
        f"{'model':>20} | {'convs':>5} | {'wall s: auto':>12} {'power':>7} {'fft':>7} | {'cpu s: auto':>11} "
        f"{'power':>7} {'fft':>7} | {'auto/power (min med max)':>25} | {'auto/fft (min med max)':>23} | "
        f"{'>0.5%':>5} {'max gap':>8} | methods"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        p, f = s.get("auto_over_power"), s.get("auto_over_fft")
        ratio_p = f"{p['min']:.4f} {p['median']:.4f} {p['max']:.4f}" if p else "-"
        ratio_f = f"{f['min']:.4f} {f['median']:.4f} {f['max']:.4f}" if f else "-"
        methods = ", ".join(f"{k} {v}" for k, v in sorted(s["methods"].items(), key=lambda kv: -kv[1]))
        print(
            f"{s['model'] + '@' + str(s['size']):>20} | {s['layers']:>5} | {s['t_auto']:12.2f} {s['t_power']:7.2f} "
            f"{s['t_fft']:7.2f} | {s['cpu_auto']:11.2f} {s['cpu_power']:7.2f} {s['cpu_fft']:7.2f} | {ratio_p:>25} | "
            f"{ratio_f:>23} | {s['above_target']:>5} {s['max_gap']:8.2%} | {methods}",
            flush=True,
        )


def run_audit(name: str, size: int, directory: Path) -> dict:
    model = MODELS[name](size)
    path = directory / f"{name}_{size}.onnx"
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, on purpose
    torch.onnx.export(
        model, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17, input_names=["input"]
    )
    report, seconds, cpu = timed(lipaudit.audit, str(path), input_shape=[f"input=1x3x{size}x{size}"])
    network = report.network
    return dict(
        model=name,
        size=size,
        seconds=seconds,
        cpu=cpu,
        upper_bound=network.upper_bound,
        product_bound=network.product_bound,
        method=network.method,
        certified=network.certified,
        complete=network.complete,
        timings=report.timings,
    )


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; lipaudit from "
        f"{Path(lipaudit.__file__).resolve().parent}"
    )
    runs = [(spec.split("@")[0], int(spec.split("@")[1])) for spec in ARGS.models]
    results = []
    if ARGS.from_json:  # the table again, from earlier --json files of the norms mode
        print_table(
            [
                summarise(r["summary"]["model"], r["summary"]["size"], r["rows"])["summary"]
                for path in ARGS.from_json
                for r in json.loads(path.read_text())
            ]
        )
        return
    if ARGS.mode == "norms":
        warm_up()
        for name, size in runs:
            if ARGS.layers:
                print(f"{name}@{size}:")
            results.append(run_norms(name, size))
            print_table([results[-1]["summary"]])
        print()
        print_table([r["summary"] for r in results])
    else:
        with tempfile.TemporaryDirectory() as directory:
            for name, size in runs:
                result = run_audit(name, size, Path(directory))
                results.append(result)
                timings = ", ".join(
                    f"{k} {v:.1f}" for k, v in (result["timings"] or {}).items() if isinstance(v, (int, float))
                )
                bound = "none" if result["upper_bound"] is None else f"{result['upper_bound']:.4g}"
                product = "none" if result["product_bound"] is None else f"{result['product_bound']:.4g}"
                print(
                    f"{name + '@' + str(size):>20}: audit {result['seconds']:7.1f} s (cpu {result['cpu']:.1f} s), "
                    f"bound {bound} ({result['method']}; product {product}), certified {result['certified']}, "
                    f"complete {result['complete']}; "
                    f"timings: {timings}",
                    flush=True,
                )
    if ARGS.json:
        ARGS.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
