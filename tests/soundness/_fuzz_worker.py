"""The fuzz test's worker process: runs ``lipaudit check`` in-process (typer's CliRunner) and
onnxruntime slope measurements, one request per stdin line, one reply per stdout line.

A mutant can crash native code (onnx shape inference segfaults on some), loop, or ask for
gigabytes.  Here that takes down this worker, which the test restarts, not the test session.
Replies start with MARK: native libraries sometimes print to stdout too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MARK = "@@fuzz-reply@@ "


def measured_slope(data: bytes, seed: int, pairs: int = 12, step: float = 0.1) -> float | None:
    """max ‖f(x) − f(y)‖ / ‖x − y‖ over random nearby pairs, by onnxruntime; None when it cannot say.

    Pairs whose outputs are not finite or exceed 1e6 are skipped: float32 rounding there could
    pass for a slope.
    """
    import numpy as np
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        run = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception:
        return None
    inputs = run.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)":
        return None
    shape = inputs[0].shape
    if not all(isinstance(d, int) and d > 0 for d in shape) or int(np.prod(shape)) > 4096:
        return None
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(pairs):
        x = rng.normal(size=shape).astype(np.float32)
        y = (x + step * rng.normal(size=shape)).astype(np.float32)
        try:
            fx = np.concatenate([np.asarray(o, np.float64).ravel() for o in run.run(None, {inputs[0].name: x})])
            fy = np.concatenate([np.asarray(o, np.float64).ravel() for o in run.run(None, {inputs[0].name: y})])
        except Exception:
            return None
        if not (np.all(np.isfinite(fx)) and np.all(np.isfinite(fy))):
            continue
        if max(np.abs(fx).max(initial=0), np.abs(fy).max(initial=0)) > 1e6:
            continue
        ratio = float(np.linalg.norm(fx - fy) / np.linalg.norm(x.astype(np.float64) - y.astype(np.float64)))
        best = ratio if best is None else max(best, ratio)
    return best


def main() -> None:
    import torch

    torch.set_num_threads(1)  # as tests/conftest.py does
    from typer.testing import CliRunner

    from lipaudit.cli.app import app

    runner = CliRunner()
    sys.stdout.write(MARK + json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["kind"] == "check":
                result = runner.invoke(app, request["args"], env={"LIPAUDIT_DEBUG": "0"})
                error = result.exception
                escaped = (
                    None
                    if error is None or isinstance(error, SystemExit)
                    else f"{type(error).__name__}: {str(error)[:300]}"
                )
                reply = {
                    "exit_code": result.exit_code,
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                    "exception": escaped,
                }
            else:
                reply = {"slope": measured_slope(Path(request["path"]).read_bytes(), request["seed"])}
        except BaseException as error:  # noqa: BLE001 - the harness must answer whatever happens
            reply = {"harness_error": f"{type(error).__name__}: {str(error)[:300]}"}
        sys.stdout.write(MARK + json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
