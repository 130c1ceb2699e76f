"""Independent truth for the soundness tests, and the one verdict check they all share.

Nothing here reads lipaudit's internals: a model is built as an ONNX proto, the truth comes from
onnxruntime (or torch) evaluated at explicit points, and lipaudit is seen only through
``audit(...).to_dict()`` and ``LipauditError``.

Truths:
- ``operator_norm``: the model's Jacobian materialised column by column from basis vectors pushed
  through onnxruntime (f(e_i) − f(0), assembled in float64), then σ_max by a dense SVD.  For a
  linear model this is the runtime's own operator, float32 rounding included.
- ``pair_ratio`` / ``max_pair_ratio``: ‖f(x) − f(y)‖ / ‖x − y‖ at explicit points, evaluated by the
  runtime: any such ratio is a lower bound on the Lipschitz constant.
- ``fd_jacobian_norm``: central differences at a point (exact for piecewise-linear maps away from
  kinks), a lower bound up to the finite-difference error the caller allows for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lipaudit import audit
from lipaudit.errors import LipauditError

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL


# ----------------------------------------------------------------------------- building models


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple],
    outputs: Sequence[tuple],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    value_info: Sequence[onnx.ValueInfoProto] = (),
) -> onnx.ModelProto:
    """A model from (name, elem_type, shape) triples; shapes are written as given (no inference).

    onnx.checker wants every graph output to have a shape: give dim names where it is unknown.
    """
    graph = helper.make_graph(
        list(nodes),
        "soundness",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [const(k, v) for k, v in (initializers or {}).items()],
        value_info=list(value_info),
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8 if opset <= 18 else 9
    return proto


def save(proto: onnx.ModelProto, directory: Path, name: str = "model.onnx") -> Path:
    path = Path(directory) / name
    onnx.save(proto, str(path))
    return path


# ----------------------------------------------------------------------------- runtime truth


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def runtime_function(proto: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """x ↦ every graph output, flattened, cast to float64 and concatenated (lipaudit's network output)."""
    run = session(proto)
    name = run.get_inputs()[0].name

    def f(x: np.ndarray) -> np.ndarray:
        outs = run.run(None, {name: np.asarray(x, np.float32)})
        return np.concatenate([np.asarray(o).astype(np.float64).ravel() for o in outs])

    return f


def operator_norm(proto: onnx.ModelProto, input_shape: Sequence[int]) -> float:
    """σ_max of the runtime's (affine) map, materialised from basis vectors."""
    f = runtime_function(proto)
    n = int(np.prod(input_shape))
    offset = f(np.zeros(input_shape, np.float32))
    columns = []
    for i in range(n):
        basis = np.zeros(n, np.float32)
        basis[i] = 1.0
        columns.append(f(basis.reshape(input_shape)) - offset)
    return float(np.linalg.svd(np.stack(columns, axis=1), compute_uv=False)[0])


def pair_ratio(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """‖f(x) − f(y)‖ / ‖x − y‖, with the points as float32 (what the runtime actually receives)."""
    x32, y32 = np.asarray(x, np.float32), np.asarray(y, np.float32)
    dx = np.linalg.norm(x32.astype(np.float64) - y32.astype(np.float64))
    assert dx > 0, "the two points coincide in float32"
    return float(np.linalg.norm(f(x32) - f(y32)) / dx)


def max_pair_ratio(f: Callable[[np.ndarray], np.ndarray], pairs) -> float:
    return max(pair_ratio(f, x, y) for x, y in pairs)


def fd_jacobian_norm(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, eps: float = 1e-3) -> float:
    """σ_max of the central-difference Jacobian at x."""
    x = np.asarray(x, np.float64)
    columns = []
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = eps
        step = step.reshape(x.shape)
        plus, minus = np.asarray(x + step, np.float32), np.asarray(x - step, np.float32)
        width = float(np.linalg.norm(plus.astype(np.float64) - minus.astype(np.float64)))
        columns.append((f(plus) - f(minus)) / width)
    return float(np.linalg.svd(np.stack(columns, axis=1), compute_uv=False)[0])


def max_fd_jacobian_norm(
    f, shape: Sequence[int], *, samples: int = 6, seed: int = 0, scale: float = 2.0, eps: float = 1e-3
) -> float:
    rng = np.random.default_rng(seed)
    return max(fd_jacobian_norm(f, rng.normal(size=shape) * scale, eps) for _ in range(samples))


# ----------------------------------------------------------------------------- lipaudit, seen from outside


@dataclass
class Outcome:
    """What lipaudit answered: a report (its JSON dict) or a clean LipauditError."""

    report: dict[str, Any] | None = None
    error: LipauditError | None = None

    @property
    def network(self) -> dict[str, Any]:
        assert self.report is not None, f"expected a report, got {type(self.error).__name__}: {self.error}"
        return self.report["network"]

    @property
    def upper_bound(self) -> float | None:
        return self.network["upper_bound"]

    def describe(self) -> str:
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        n = self.report["network"]
        layers = [(layer["op"], layer["factor"], layer["status"]) for layer in self.report["layers"]]
        return (
            f"upper_bound={n['upper_bound']!r} certified={n['certified']} complete={n['complete']} "
            f"unsupported={n['unsupported']} unbounded={n['unbounded']} layers={layers} "
            f"verification={self.report['verification']}"
        )


def run_audit(target: onnx.ModelProto | Path | str, directory: Path, **settings) -> Outcome:
    """lipaudit.audit on a model (saved first) or a path.  Any exception that is not a
    LipauditError propagates: that is the "internal error" the CLI would print."""
    path = save(target, directory) if isinstance(target, onnx.ModelProto) else Path(target)
    settings.setdefault("lower_bound", False)
    try:
        report = audit(str(path), **settings)
    except LipauditError as error:
        assert str(error).strip(), "a LipauditError must say what is wrong"
        return Outcome(error=error)
    return Outcome(report=report.to_dict())


def assert_sound(outcome: Outcome, truth: float, *, allow_error: bool = True, slack: float = 0.0) -> None:
    """The shared verdict.

    Accepted: a report whose ``upper_bound`` is ≥ truth·(1 − slack); a report with no figure
    (``upper_bound`` None) that names at least one unsupported or unbounded node with a reason; a
    clean LipauditError when ``allow_error``.  ``truth = inf`` (a step function, a random op) only
    accepts the verdicts.  Rejected: a figure below the truth, 0 for a function that moves, a
    "certified" flag without a figure, and any other exception (it propagates from run_audit).
    """
    if outcome.error is not None:
        assert allow_error, f"a clean error where a report was expected: {outcome.describe()}"
        return
    network = outcome.network
    upper = network["upper_bound"]
    if upper is None:
        blockers = network["unsupported"] + network["unbounded"]
        assert blockers, f"no figure and no unsupported/unbounded node to say why: {outcome.describe()}"
        assert all(b.get("reason") for b in blockers), f"a blocker without a reason: {outcome.describe()}"
        assert not network["certified"], f"certified without a figure: {outcome.describe()}"
        return
    assert math.isfinite(truth), (
        f"the function is not Lipschitz (truth = inf), yet lipaudit reports {upper!r}: {outcome.describe()}"
    )
    if truth > 0:
        assert upper > 0, f"bound 0 for a function that moves (truth {truth:.6g}): {outcome.describe()}"
    assert upper >= truth * (1 - slack), (
        f"upper bound {upper!r} below the truth {truth!r} "
        f"(ratio {upper / truth if truth else float('nan'):.9f}): "
        f"{outcome.describe()}"
    )


def assert_no_certified_figure(outcome: Outcome) -> None:
    """For models whose function is undefined (the runtime refuses or returns NaN) or random: a
    verdict or a clean error, never a figure."""
    if outcome.error is not None:
        return
    upper = outcome.network["upper_bound"]
    assert upper is None, f"a figure ({upper!r}) for a function that is undefined or random: {outcome.describe()}"
    assert_sound(outcome, math.inf)
