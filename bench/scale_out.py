"""Many models and models larger than memory: serial check vs --workers vs --ray, in one run.

Not a test. Two parts, each `lipaudit check` run as a separate process, timed wall-clock, with
the memory of its whole process tree sampled every 20 ms: PSS summed over the tree, and for the
largest single process its peak RSS (VmHWM, exact) and its peak anonymous RSS (RssAnon, sampled):
the part that is not file pages the kernel can drop and read again.

  zoo    a model zoo: --zoo small ONNX models (MLPs and CNNs, verified against onnxruntime), checked
         serially (the plain run, then --workers 1: one single-threaded process), with --workers N
         (the models in N worker processes) and with --ray (a local cluster of N CPUs, started by the
         run: its start-up is in the time). The JSON reports of --workers 1, N and --ray must be
         identical (timings aside); the plain run's figures may differ from them in the last bits,
         since torch splits its kernels over all cores there.
  large  one model of --large-gib GiB of external data (a Conv, then Gemm layers of side --side,
         ReLU between them), generated once into --dir: checked serially and with --workers N, with
         --in-memory-limit below its size (--limit), so its weights are memory-mapped and each layer
         is read by the job that measures it: the peak memory should be the baseline of a lipaudit
         process plus a few times the largest layer, not the model. For a model of at most 1 GiB,
         also the same check read whole (--in-memory-limit above it: loaded, run, verified).

Usage:  python -m bench.scale_out [--zoo 20] [--large-gib 2] [--side 4096] [--large-method frobenius]
                                  [--workers 2] [--no-ray] [--skip-zoo] [--skip-large] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MiB = 2**20
GiB = 2**30


# ------------------------------------------------------------------------------------ measuring


@dataclass
class Measured:
    wall_s: float
    peak_tree_pss: int  # bytes, sampled
    peak_process_rss: int  # bytes, VmHWM of the largest process
    peak_process_anon: int  # bytes, RssAnon of the largest process, sampled
    returncode: int
    stderr: str


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return tree


def _field_kib(pid: int, filename: str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/{filename}") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    peak_pss, high_water, anonymous = 0, {}, {}
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True)
    reader.start()
    while process.poll() is None:
        tree, pids, frontier = _children(), [], [process.pid]
        while frontier:
            pid = frontier.pop()
            pids.append(pid)
            frontier.extend(tree.get(pid, []))
        peak_pss = max(peak_pss, sum(_field_kib(pid, "smaps_rollup", "Pss:") for pid in pids) * 1024)
        for pid in pids:
            high_water[pid] = max(high_water.get(pid, 0), _field_kib(pid, "status", "VmHWM:") * 1024)
            anonymous[pid] = max(anonymous.get(pid, 0), _field_kib(pid, "status", "RssAnon:") * 1024)
        time.sleep(0.02)
    wall = time.perf_counter() - started
    reader.join()
    return Measured(
        wall,
        peak_pss,
        max(high_water.values(), default=0),
        max(anonymous.values(), default=0),
        process.returncode,
        "".join(stderr_lines),
    )


def lipaudit(*args: str) -> list[str]:
    return [sys.executable, "-m", "lipaudit", "check", *args]


def comparable_reports(folder: Path) -> dict[str, dict]:
    reports = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        data.pop("timings", None)
        reports[path.name] = data
    return reports


def differing_layers(a: dict[str, dict], b: dict[str, dict]) -> int:
    count = 0
    for name in a:
        for left, right in zip(a[name]["layers"], b.get(name, {}).get("layers", [])):
            count += left != right
    return count


# ------------------------------------------------------------------------------------ models


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        array = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def gemm(self, x: str, name: str, n_in: int, n_out: int) -> str:
        return self.node("Gemm", [x, self._weight(f"{name}.w", (n_out, n_in), n_in)], name, transB=1)

    def conv(self, x: str, name: str, c_in: int, c_out: int, stride: int = 1) -> str:
        w = self._weight(f"{name}.w", (c_out, c_in, 3, 3), 9 * c_in)
        return self.node("Conv", [x, w], name, pads=[1, 1, 1, 1], strides=[stride, stride])

    def save(self, path: Path, input_shape: list[int], output: str, output_shape: list[int]) -> None:
        graph = helper.make_graph(
            self.nodes,
            path.stem,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            self.initializers,
        )
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(path))


def make_zoo(folder: Path, count: int) -> list[Path]:
    """Half MLPs (widths 256–1024), half small CNNs (16×16 inputs, two convs, a classifier)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        b = _Builder(seed=index)
        path = folder / f"zoo_{index:02d}.onnx"
        if index % 2 == 0:
            width = (256, 512, 768, 1024)[index // 2 % 4]
            h = b.node("Relu", [b.gemm("x", "fc1", 64, width)], "relu1")
            h = b.node("Relu", [b.gemm(h, "fc2", width, width)], "relu2")
            b.save(path, [1, 64], b.gemm(h, "fc3", width, 10), [1, 10])
        else:
            channels = (8, 12, 16)[index // 2 % 3]
            h = b.node("Relu", [b.conv("x", "conv1", 3, channels)], "relu1")
            h = b.node("Relu", [b.conv(h, "conv2", channels, 2 * channels, stride=2)], "relu2")
            h = b.node("Flatten", [b.node("GlobalAveragePool", [h], "gap")], "flatten")
            b.save(path, [1, 3, 16, 16], b.gemm(h, "fc", 2 * channels, 10), [1, 10])
        paths.append(path)
    return paths


def make_large(folder: Path, gib: float, side: int, seed: int = 0) -> tuple[Path, int, int]:
    """Conv (32×16×16 input) → Flatten → Gemm side×8192 → [ReLU → Gemm side×side]… → ReLU → Gemm 10×side,
    as many square layers as make ``gib`` GiB, streamed to one external data file. Returns the
    model's path, its bytes of weights and its largest layer's bytes; reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"large_{gib:g}GiB_{side}.onnx"
    data_name = path.stem + ".bin"
    layer_bytes = side * side * 4
    first_bytes = side * 8192 * 4
    squares = max(1, int((gib * GiB - first_bytes) // layer_bytes))
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    offset = 0
    exists = path.exists() and (folder / data_name).exists()
    handle = None if exists else (folder / data_name).open("wb")

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> str:
        nonlocal offset
        count = int(np.prod(shape))
        if handle is not None:
            for start in range(0, shape[0], max(1, shape[0] // 8)):  # a few MiB at a time
                rows = min(shape[0] - start, max(1, shape[0] // 8))
                block = rng.standard_normal((rows, *shape[1:]), dtype=np.float32)
                block *= np.float32(np.sqrt(2.0 / fan_in))
                handle.write(block.tobytes())
        tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(count * 4))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        initializers.append(tensor)
        offset += count * 4
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    h = node("Conv", ["x", weight("conv.w", (32, 32, 3, 3), 288)], "conv", pads=[1, 1, 1, 1])
    h = node("Flatten", [node("Relu", [h], "conv.relu")], "flatten")
    h = node("Gemm", [h, weight("fc0.w", (side, 8192), 8192)], "fc0", transB=1)
    for index in range(1, squares + 1):
        h = node(
            "Gemm",
            [node("Relu", [h], f"relu{index}"), weight(f"fc{index}.w", (side, side), side)],
            f"fc{index}",
            transB=1,
        )
    h = node("Gemm", [node("Relu", [h], "relu_out"), weight("out.w", (10, side), side)], "out", transB=1)
    if handle is not None:
        handle.close()
        graph = helper.make_graph(
            nodes,
            path.stem,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 16, 16])],
            [helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, 10])],
            initializers,
        )
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(path))
    return path, offset, max(layer_bytes, first_bytes)


# ------------------------------------------------------------------------------------ runs


def _row(label: str, result: Measured, base: float | None) -> str:
    ratio = f"{base / result.wall_s:5.2f}×" if base else "   —  "
    ok = "" if result.returncode in (0, 3) else f"  (exit {result.returncode}: {result.stderr.strip()[-200:]})"
    return (
        f"  {label:<26} {result.wall_s:7.1f} s  speed-up {ratio}  peak tree PSS "
        f"{result.peak_tree_pss / MiB:6.0f} MiB  largest process: RSS {result.peak_process_rss / MiB:6.0f} MiB, "
        f"anonymous {result.peak_process_anon / MiB:6.0f} MiB{ok}"
    )


def zoo_part(folder: Path, count: int, workers: int, use_ray: bool) -> None:
    models = [str(p) for p in make_zoo(folder / "zoo", count)]
    print(f"zoo: {count} models in {folder / 'zoo'}")
    runs = [
        ("serial (plain)", []),
        ("--workers 1", ["--workers", "1"]),
        (f"--workers {workers}", ["--workers", str(workers)]),
    ]
    if use_ray:
        runs.append((f"--ray (local, {workers} CPUs)", ["--ray", "--workers", str(workers)]))
    reports = {}
    base = None
    for label, flags in runs:
        out = folder / "reports" / label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        result = measure(lipaudit(*models, "-q", *flags, "-o", f"json:{out}/{{model}}.json"))
        base = base or result.wall_s
        print(_row(label, result, base))
        audits = sum(json.loads(path.read_text())["timings"]["total_s"] for path in out.glob("*.json"))
        # Audits running side by side: above 1, the runs overlapped; if each one also took longer
        # than in the serial run, the cores were not free for them.
        print(f"    the {len(models)} audits took {audits:.1f} s summed, {audits / result.wall_s:.2f}× the wall time")
        reports[label] = comparable_reports(out)
    reference = reports["--workers 1"]
    for label in reports:
        if label == "--workers 1":
            continue
        same = reports[label] == reference
        detail = "" if same else f" ({differing_layers(reference, reports[label])} layer entries differ)"
        print(f"  reports of {label} identical to --workers 1: {'yes' if same else 'no'}{detail}")


def large_part(folder: Path, gib: float, side: int, method: str, workers: int, limit: str) -> None:
    started = time.perf_counter()
    path, weights, largest = make_large(folder / "large", gib, side)
    print(
        f"large: {path} — {weights / GiB:.2f} GiB of external data, largest layer {largest / MiB:.0f} MiB "
        f"(ready in {time.perf_counter() - started:.0f} s)"
    )
    tiny = folder / "large" / "tiny.onnx"
    b = _Builder(seed=0)
    b.save(tiny, [1, 16], b.gemm("x", "fc", 16, 16), [1, 16])
    baseline = measure(lipaudit(str(tiny), "-q", "--no-verify"))
    print(
        f"  baseline: a lipaudit process checking a 1 KiB model peaks at RSS {baseline.peak_process_rss / MiB:.0f} "
        f"MiB, anonymous {baseline.peak_process_anon / MiB:.0f} MiB"
    )
    reports = {}
    base = None
    runs = [("serial (plain)", []), (f"--workers {workers}", ["--workers", str(workers)])]
    if weights <= GiB:
        runs.append(("serial, read whole", ["--in-memory-limit", "64GiB"]))
    for label, flags in runs:
        out = folder / "reports" / f"large_{label.split()[0].strip('-,')}_{len(flags)}"
        result = measure(
            lipaudit(
                str(path),
                "-q",
                "--method",
                method,
                "--in-memory-limit",
                limit,
                *flags,
                "-o",
                f"json:{out}/{{model}}.json",
            )
        )
        base = base or result.wall_s
        print(_row(label, result, base))
        above = result.peak_process_anon - baseline.peak_process_anon
        print(
            f"    anonymous memory above the baseline: {above / MiB:.0f} MiB = {above / largest:.1f}× the largest "
            f"layer, {above / weights:.1%} of the model's weights"
        )
        reports[label] = comparable_reports(out)
    labels = list(reports)
    same = reports[labels[0]] == reports[labels[1]]
    print(
        f"  reports of the two memory-mapped runs identical: {'yes' if same else 'no'}"
        + (
            ""
            if same
            else f" ({differing_layers(reports[labels[0]], reports[labels[1]])} layer entries differ: "
            "the plain run lets torch use every core, the workers one thread each)"
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=int, default=20, help="models in the zoo")
    parser.add_argument("--large-gib", type=float, default=2.0, help="GiB of weights of the large model")
    parser.add_argument("--side", type=int, default=4096, help="side of the large model's square Gemm layers")
    parser.add_argument("--large-method", default="frobenius", help="--method for the large model")
    parser.add_argument("--limit", default="256MiB", help="--in-memory-limit for the large model")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="leave out the --ray run")
    parser.add_argument("--skip-zoo", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "lipaudit-bench-scale-out",
        help="where the models and reports go (the large model is reused from there)",
    )
    args = parser.parse_args(argv)
    try:
        import ray  # noqa: F401

        use_ray = not args.no_ray
    except ImportError:
        use_ray = False
        print("(ray is not installed: no --ray run; pip install 'lipaudit[ray]')")
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the start"
        + ("  — other work is running: the times are not clean" if load[0] > 0.5 else "")
    )
    if not args.skip_zoo:
        zoo_part(args.dir, args.zoo, args.workers, use_ray)
    if not args.skip_large:
        large_part(args.dir, args.large_gib, args.side, args.large_method, args.workers, args.limit)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
