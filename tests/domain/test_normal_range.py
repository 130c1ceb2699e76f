"""The box analysis below float64's normal range.

Float64 weights of 1e-110 in three layers, then 1e+110 in three more, compute exactly the same
function as the unscaled net (ReLU is positively homogeneous), and onnxruntime computes it in range
(1e-110·1e-110 is normal).  The box analysis multiplied a third factor and got an exact 0 with no
margin: a certified 0.0 on a net whose Jacobians reach 148 in the box.  Weights below the floor
(1e-170) leave the box to the global bound, with a notice."""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.domain.normal_range import flushed, raised, tiny_entries
from lipaudit.intervals.interval import CEIL, FLOOR, Interval, outward
from lipaudit.intervals.jacobian import Jac
from tests.builders import graph_model, save, scaled_residual_chain

_RNG = np.random.default_rng(3)
_MATS = [_RNG.normal(size=shape) for shape in [(4, 6), (6, 6), (6, 6), (6, 6), (6, 6), (6, 3)]]


def _relu_chain(scales: list[float]) -> onnx.ModelProto:
    nodes, weights, current = [], {}, "x"
    for i, (matrix, scale) in enumerate(zip(_MATS, scales)):
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"a{i}"]))
        weights[f"W{i}"] = matrix * scale
        current = f"a{i}"
        if i < len(_MATS) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    return graph_model(nodes, [1, 4], weights, outputs=(current,), elem_type=TensorProto.DOUBLE)


def _largest_jacobian_in_box(samples: int = 4000) -> float:
    """max ‖J(x)‖₂ of the unscaled chain over random points of [−1, 1]⁴: a lower bound on its constant there."""
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(samples):
        z, jac = rng.uniform(-1, 1, 4), np.eye(4)
        for i, matrix in enumerate(_MATS):
            z, jac = z @ matrix, jac @ matrix
            if i < len(_MATS) - 1:
                on = (z > 0).astype(float)
                z, jac = z * on, jac * on
        best = max(best, float(np.linalg.norm(jac, 2)))
    return best


def _network(path, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["check", str(path), "-f", "json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    report = json.loads(result.stdout)
    return result.exit_code, report


def test_weights_that_underflow_in_a_product_of_three_never_give_a_box_figure_below_the_truth(tmp_path):
    lower = _largest_jacobian_in_box()
    assert lower > 100
    path = save(_relu_chain([1e-110] * 3 + [1e110] * 3), tmp_path, "scaled.onnx")
    code, report = _network(path, "--input-range", "-1:1")
    network = report["network"]
    assert code == 0 and network["certified"]
    assert network["upper_bound"] >= lower  # it was a certified 0.0


def test_float64_weights_below_the_floor_leave_the_box_to_the_global_bound(tmp_path):
    model, truth = scaled_residual_chain(1e-170)  # x + relu(x·AB)·CE with A, B ×1e-170 and C, E ×1e170
    code, report = _network(save(model, tmp_path, "tiny.onnx"), "--input-range", "-1:1")
    network = report["network"]
    assert network["upper_bound"] >= truth  # it was a certified 1.0000
    assert network["scope"] == "global"
    assert any("input box was not used" in notice for notice in report["notices"])


def test_outward_moves_tiny_bounds_away_from_the_values_only():
    lo = np.array([-1e-200, 1e-200, -1.0, 0.0, -1e-130])
    hi = np.array([1e-200, 2e-200, 1.0, 0.0, -1e-131])
    moved = outward(Interval(lo, hi))
    assert np.all(moved.lo <= lo) and np.all(moved.hi >= hi)
    assert moved.lo.tolist() == [-FLOOR, 0.0, -1.0, 0.0, -FLOOR]
    assert moved.hi.tolist() == [FLOOR, FLOOR, 1.0, 0.0, 0.0]
    assert tiny_entries(torch.tensor([0.0, 1e-130], dtype=torch.float64))
    assert not tiny_entries(torch.tensor([0.0, 1e-100], dtype=torch.float64))
    assert raised(1e-200) == FLOOR and raised(0.0) == 0.0 and raised(2.0) == 2.0


def test_flushed_enclosures_hold_what_they_held():
    centre = torch.tensor([[1e-320, 0.5, -1e-200, 0.0]], dtype=torch.float64)
    radius = torch.tensor([[0.0, 1e-300, 1.0, 0.0]], dtype=torch.float64)
    kept = flushed(Jac(centre, radius, 1e-250))
    assert kept.centre.tolist() == [[0.0, 0.5, 0.0, 0.0]]
    assert torch.all(kept.centre - kept.radius <= centre - radius) and torch.all(
        kept.centre + kept.radius >= centre + radius
    )
    assert kept.radius[0, 0] == FLOOR and kept.radius[0, 1] == FLOOR and kept.radius[0, 3] == 0
    assert kept.deviation >= 1e-250 + 1e-200  # the centre moved by up to 1e-200
    assert flushed(Jac(centre.abs() + 1, radius + 1, 1.0)).deviation == 1.0


def test_constants_above_the_ceiling_leave_the_box_to_the_global_bound(tmp_path):
    """y = 1e200·(1/(1e200·x)) is 1/x: on [0.8, 1.2] its constant is 1/0.64. The reciprocal's slope
    1/m² overflowed m² to inf and came out 0: a certified 0.0 (redteam7). Now the box is not used
    (1/x has no global constant: no figure), and ranges past CEIL widen to it or to infinity."""
    nodes = [
        helper.make_node("Mul", ["x", "big"], ["scaled"]),
        helper.make_node("Reciprocal", ["scaled"], ["inverse"]),
        helper.make_node("Mul", ["inverse", "big"], ["y"]),
    ]
    model = graph_model(nodes, [1, 1], {"big": np.array(1e200)}, elem_type=TensorProto.DOUBLE)
    code, report = _network(save(model, tmp_path, "reciprocal.onnx"), "--input-range", "0.8:1.2")
    network = report["network"]
    assert not (network["certified"] and network["upper_bound"] is not None and network["upper_bound"] < 1 / 0.64)
    assert any("input box was not used" in notice for notice in report["notices"])
    wide = outward(Interval(np.array([1e200, -1e200, 3.0]), np.array([2e200, -1e150, 4.0])))
    assert wide.lo.tolist() == [CEIL, -np.inf, 3.0] and wide.hi.tolist() == [np.inf, -CEIL, 4.0]
