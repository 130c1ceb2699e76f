"""The recursion's default work budget on the README's backbones: its time against the product's.

Not a test.  The recursion spends a budget of work counted in its cost model's operations, never
seconds (issue 18), so its figure is the same on every machine.  This measures what that costs:
each backbone (bench/_zoo.py, random weights, at the README's sizes) is exported to ONNX and
audited end to end with ``lipaudit.audit`` three ways in one run:

  product   ``bound='product'``: load, verify, the layers' factors (the product's time);
  default   the default recursion budget (tight/graph_bound.py DEFAULT_RECURSION_BUDGET);
  again     the default once more, under a busy thread and one torch thread: the figure must be
            the same to 1e-9 relative (``--skip-repeat`` leaves it out; the thread count moves the
            last bits of BLAS reductions, about 1e-16);
  full      with ``--full``: every chain norm measured (``recursion_budget='inf'``), the figure the
            default approaches, and its time.

Times are CPU seconds of this process (process_time: other load on the machine does not count) and
wall seconds.  ``--threads N`` sets torch's thread count first: on a machine shared with other
jobs, torch's idle threads spin and their CPU seconds count too, so one thread measures the work.
The table: figures, the ratio default/product of CPU seconds (the target: at most
3×), and whether the repeat gave the same figure.

Usage:  python bench/recursion_budget.py [--models NAME@SIZE ...] [--budget X|inf] [--threads N] [--skip-repeat]
                                         [--full] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from _zoo import MODELS  # noqa: E402

import lipaudit  # noqa: E402
from lipaudit.tight.graph_bound import DEFAULT_RECURSION_BUDGET  # noqa: E402

RUNS = [
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


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    return value, time.process_time() - cpu, time.perf_counter() - wall


class Busy:
    """Another thread multiplying matrices while the audit runs (a loaded machine)."""

    def __enter__(self):
        self.stop = threading.Event()

        def burn() -> None:
            x = torch.randn(256, 256)
            while not self.stop.is_set():
                x = torch.tanh(x @ x.T / 256.0)

        self.thread = threading.Thread(target=burn, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()


def run(name: str, size: int, directory: Path, budget: float | str, repeat: bool, full: bool = False) -> dict:
    model = MODELS[name](size)
    path = directory / f"{name}_{size}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17, input_names=["input"]
        )
    shape = [f"input=1x3x{size}x{size}"]
    product, product_cpu, product_wall = timed(lipaudit.audit, str(path), input_shape=shape, bound="product")
    default, default_cpu, default_wall = timed(lipaudit.audit, str(path), input_shape=shape, recursion_budget=budget)
    every, every_cpu = None, None
    if full:
        every, every_cpu, _ = timed(lipaudit.audit, str(path), input_shape=shape, recursion_budget="inf")
    same = None
    if repeat:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with Busy():
                again = lipaudit.audit(str(path), input_shape=shape, recursion_budget=budget)
        finally:
            torch.set_num_threads(threads)
        same = abs(again.upper_bound - default.upper_bound) <= 1e-9 * abs(default.upper_bound)
    return dict(
        model=f"{name} @ {size}×{size}",
        product=product.upper_bound,
        bound=default.upper_bound,
        method=default.network.method,
        product_cpu=product_cpu,
        product_wall=product_wall,
        default_cpu=default_cpu,
        default_wall=default_wall,
        tighten_s=default.timings.get("tighten_s"),
        same=same,
        full=None if every is None else every.upper_bound,
        full_cpu=every_cpu,
    )


def table(rows: list[dict]) -> None:
    full = any(r.get("full") is not None for r in rows)
    print(
        "| model @ input | product | bound | product / bound | cpu product | cpu default | cpu default / product "
        "| same figure loaded, 1 thread |" + (" every chain norm | its cpu / product |" if full else "")
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|---:|" if full else ""))
    for r in rows:
        extra = ""
        if full:
            extra = (
                " – | – |" if r.get("full") is None else f" {r['full']:.3g} | {r['full_cpu'] / r['product_cpu']:.1f}× |"
            )
        print(
            f"| {r['model']} | {r['product']:.3g} | {r['bound']:.3g} | {r['product'] / r['bound']:,.3g}× "
            f"| {r['product_cpu']:.1f} s | {r['default_cpu']:.1f} s | {r['default_cpu'] / r['product_cpu']:.2f}× "
            f"| {'–' if r['same'] is None else 'yes' if r['same'] else 'NO'} |" + extra
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=RUNS, help="NAME@SIZE (default: the README's)")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_RECURSION_BUDGET, help="a number, or inf (every chain norm)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--skip-repeat", action="store_true")
    parser.add_argument("--full", action="store_true", help="also measure every chain norm (budget inf)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, budget {args.budget}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for spec in args.models:
            name, size = spec.split("@")
            budget = "inf" if args.budget == float("inf") else args.budget
            rows.append(run(name, int(size), Path(directory), budget, not args.skip_repeat, args.full))
            r = rows[-1]
            print(
                f"{r['model']}: product {r['product']:.4g} in {r['product_cpu']:.1f} s cpu "
                f"({r['product_wall']:.1f} s wall); default {r['bound']:.4g} ({r['method']}) in "
                f"{r['default_cpu']:.1f} s cpu ({r['default_wall']:.1f} s wall, recursion {r['tighten_s']} s); "
                f"same figure again: {r['same']}"
                + ("" if r["full"] is None else f"; every chain norm {r['full']:.4g} in {r['full_cpu']:.1f} s cpu"),
                flush=True,
            )
    print()
    table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
