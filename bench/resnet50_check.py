"""`lipaudit check` on a whole ResNet-50 at 224×224, end to end: wall time, verdict, peak memory.

Not a test.  Builds the benchmark ResNet-50 (bench/_models.py: Kaiming weights, calibrated
BatchNorm), exports it to ONNX (torch.onnx.export, dynamo=False) in a temporary directory and runs
`.venv/bin/lipaudit check model.onnx -f json` in a subprocess under `/usr/bin/time -v` (falling back
to getrusage of the children), then reports the wall time, whether the bound is complete and
certified, the bound, the slowest layers and the peak resident memory of the check.

Usage:  python bench/resnet50_check.py [--method auto] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import resnet50  # noqa: E402


def export(directory: Path) -> Path:
    path = directory / "resnet50.onnx"
    model = resnet50()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, on purpose
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 224, 224),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
    )
    return path


def run_check(model: Path, method: str) -> tuple[dict, float, float | None, str]:
    """(report, wall seconds, peak RSS in MiB or None, stderr) of one `lipaudit check` run."""
    lipaudit = ROOT / ".venv" / "bin" / "lipaudit"
    command = [str(lipaudit) if lipaudit.exists() else "lipaudit", "check", str(model), "-f", "json", "-m", method]
    timer = shutil.which("time") and Path("/usr/bin/time").exists()
    if timer:
        command = ["/usr/bin/time", "-v", *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    peak = None
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if match:
        peak = int(match.group(1)) / 1024
    else:
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        peak = after / 1024 if after > before else None
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"lipaudit check failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout), wall, peak, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="auto", help="--method passed to lipaudit check")
    parser.add_argument("--keep", type=Path, help="keep the exported model in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = args.keep or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        model = export(directory)
        print(f"exported {model.name} ({model.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s")
        report, wall, peak, _ = run_check(model, args.method)
    network = report.get("network", {})
    layers = report.get("layers", [])
    print(
        f"lipaudit check -m {args.method}: {wall:.1f} s wall, peak RSS "
        + (f"{peak:.0f} MiB" if peak is not None else "unknown")
    )
    print(
        f"complete: {network.get('complete')}  certified: {network.get('certified')}  "
        f"upper bound: {network.get('upper_bound')}"
    )
    methods: dict[str, int] = {}
    for layer in layers:
        methods[layer.get("method", "?")] = methods.get(layer.get("method", "?"), 0) + 1
    print("methods: " + ", ".join(f"{k} ×{v}" for k, v in sorted(methods.items(), key=lambda kv: -kv[1])))
    timings = report.get("timings") or {}
    if timings:
        print(
            "timings: "
            + ", ".join(f"{k} {v:.2f} s" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in timings.items())
        )
    ok = bool(network.get("complete")) and bool(network.get("certified")) and (peak is None or peak < 3 * 1024)
    print("targets (complete, certified, peak < 3 GiB): " + ("met" if ok else "MISSED"))


if __name__ == "__main__":
    main()
