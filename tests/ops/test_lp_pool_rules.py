"""LpPool and GlobalLpPool: the executor computes what onnxruntime computes, and the factor is above
the runtime's own Jacobian everywhere and reached where the rule says it is.

Truth: central differences of onnxruntime's outputs (float32 runtime, float64 assembly) at random
points and at "spikes" — one large entry over a faint background, where every window holding the
entry moves with it at slope 1 (p ≥ 2) — and, for p = 1, at an all-positive point, where each
window's output is its plain sum.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.builders import single_node_model
from tests.ops._truth import run_audit
from tests.soundness._oracle import fd_jacobian_norm, runtime_function

FD_SLACK = 1e-3  # central differences of float32 outputs


def _spikes(shape) -> list[np.ndarray]:
    points = []
    for flat in range(int(np.prod(shape[2:]))):
        x = np.full(shape, 1e-3)
        x.reshape(shape[0], shape[1], -1)[0, 0, flat] = 1.0
        points.append(x)
    return points


def _truth(model, shape, p: float) -> float:
    """The norms are homogeneous, so the points are scaled up (×10) to keep float32 rounding of the
    outputs small beside the difference step, without changing the Jacobian."""
    f = runtime_function(model)
    rng = np.random.default_rng(0)
    points = [rng.normal(size=shape) for _ in range(3)] + _spikes(shape)
    if p < 2:
        points.append(np.abs(rng.normal(size=shape)) + 1.0)
    return max(fd_jacobian_norm(f, 10 * x, eps=1e-2) for x in points)


GEOMETRIES = [
    # (input shape, attributes, opset, expected factor)
    ((1, 1, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2], p=2), 17, 1.0),
    ((1, 2, 5, 5), dict(kernel_shape=[3, 3], strides=[1, 1], p=2), 17, 3.0),
    ((1, 1, 5, 6), dict(kernel_shape=[2, 3], strides=[2, 3], pads=[1, 0, 0, 0], p=2), 17, 1.0),
    ((1, 1, 7), dict(kernel_shape=[3], strides=[2], p=2), 17, math.sqrt(2)),
    ((1, 1, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2], p=1), 17, 2.0),
    ((1, 1, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2], p=3), 17, 1.0),
    ((1, 1, 7, 7), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, p=2), 18, 1.0),
    ((1, 1, 7, 7), dict(kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 2], p=2), 18, 2.0),
]


@pytest.mark.parametrize(
    "shape,attrs,opset,expected",
    GEOMETRIES,
    ids=[f"{len(g[0]) - 2}d-k{g[1]['kernel_shape']}-p{g[1]['p']}-o{g[2]}" for g in GEOMETRIES],
)
def test_lp_pool_factor_is_reached_by_the_runtime(tmp_path: Path, shape, attrs, opset, expected) -> None:
    model = single_node_model("LpPool", shape, opset=opset, **attrs)
    report = run_audit(model, tmp_path)
    assert report.verification.checked, report.verification.reason  # our run is onnxruntime's function
    layer = report.layers[0]
    assert layer.op == "LpPool" and layer.certified
    assert layer.factor == pytest.approx(expected, rel=1e-5)
    truth = _truth(model, shape, attrs["p"])
    assert layer.factor >= truth * (1 - FD_SLACK)
    assert truth >= expected * (1 - FD_SLACK)  # the figure is the truth: no looser


@pytest.mark.parametrize("p,expected", [(2, 1.0), (3, 1.0), (1, math.sqrt(20))])
def test_global_lp_pool(tmp_path: Path, p: int, expected: float) -> None:
    shape = (1, 2, 4, 5)
    model = single_node_model("GlobalLpPool", shape, p=p)
    report = run_audit(model, tmp_path)
    assert report.verification.checked, report.verification.reason
    layer = report.layers[0]
    assert layer.factor == pytest.approx(expected, rel=1e-5)
    truth = _truth(model, shape, p)
    assert layer.factor >= truth * (1 - FD_SLACK)
    assert truth >= expected * (1 - FD_SLACK)
