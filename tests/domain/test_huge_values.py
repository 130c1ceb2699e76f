"""Finite values past ±1e300, where ±HUGE = 1e300 stands in for ±inf: they must never be clipped to
±HUGE as if they were infinite (redteam5 findings 1 and 1b: certified 1.0000029 where two inputs show
5, and 0.0 where they show 1). A figure is either certified at or above the ratio that explicit
onnxruntime input pairs show, or not certified / not given (exit code ≠ 0); never below it.

And the other way round: a genuine ±inf stood in by ±HUGE, times a factor below 1e-10, must not come
back as a finite bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.domain import value_ranges
from lipaudit.intervals.interval import HUGE, BeyondStandIn, Interval, add, product, stand_in
from lipaudit.load import load_model
from tests.builders import save, session


def _float64_model(nodes: list, initializers: dict[str, np.ndarray], width: int, out: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, out])],
        [numpy_helper.from_array(np.asarray(v, np.float64), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _pair_ratio(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, scale: float = 1.0) -> float:
    """‖f(x) − f(y)‖/‖x − y‖ by onnxruntime (both divided by ``scale`` first to stay finite)."""
    run = session(model)
    fx, fy = (np.asarray(run.run(None, {"x": v})[0], np.float64) for v in (x, y))
    return float(np.linalg.norm(fx / scale - fy / scale) / np.linalg.norm(x / scale - y / scale))


def _check(path: Path, *args: str) -> tuple[int, dict | None]:
    result = CliRunner().invoke(app, ["check", str(path), "-f", "json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    try:
        return result.exit_code, json.loads(result.stdout)["network"]
    except (ValueError, KeyError):
        return result.exit_code, None


def _assert_never_below(path: Path, truth: float, *args: str) -> None:
    code, network = _check(path, *args)
    if code == 0 and network is not None and network.get("certified"):
        assert network["upper_bound"] >= truth, (network["upper_bound"], truth)
    else:
        assert code != 0 or network is None or not network.get("certified")


def test_weight_past_huge_is_not_clipped(tmp_path: Path) -> None:
    """relu(x·diag(5e300, 1))·diag(1e-300, 1) on [−1, 1]²: slope 5 along x₀."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"]),
    ]
    model = _float64_model(nodes, {"W1": np.diag([5e300, 1.0]), "W2": np.diag([1e-300, 1.0])}, 2, 2)
    truth = _pair_ratio(model, np.array([[0.5, 0.5]]), np.array([[0.25, 0.5]]))
    assert truth == pytest.approx(5.0)
    _assert_never_below(save(model, tmp_path), truth, "--input-range", "-1:1")


def test_input_box_past_huge_is_not_clipped(tmp_path: Path) -> None:
    """relu(x·1e-300 − 5)·1e300 on [6e300, 1e301]: slope 1 (the box's values are finite, not ±inf)."""
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["a"]),
        helper.make_node("Sub", ["a", "five"], ["b"]),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Mul", ["r", "big"], ["y"]),
    ]
    model = _float64_model(nodes, {"s": [[1e-300]], "five": [[5.0]], "big": [[1e300]]}, 1, 1)
    truth = _pair_ratio(model, np.array([[8e300]]), np.array([[9e300]]), scale=1e300)
    assert truth == pytest.approx(1.0)
    path = save(model, tmp_path)
    _assert_never_below(path, truth, "--input-range", "6e300:1e301")
    np.save(tmp_path / "centre.npy", np.array([[8e300]]))
    _assert_never_below(path, truth, "--around", str(tmp_path / "centre.npy"), "--radius", "1e300")


def test_mlp_with_huge_first_layer(tmp_path: Path) -> None:
    """relu(relu(x·1e300 A)·1e-300 B)·C on [−1, 1]⁴: the same function as with A, B unscaled."""
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(4, 5)), rng.normal(size=(5, 5)), rng.normal(size=(5, 3))
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "B"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "C"], ["y"]),
    ]
    model = _float64_model(nodes, {"A": a * 1e300, "B": b * 1e-300, "C": c}, 4, 3)
    truth = 0.0
    for _ in range(200):  # pairs along each point's own top singular direction, inside the box
        x = rng.uniform(-0.9, 0.9, (1, 4))
        d1 = (x @ a > 0).astype(float)
        d2 = (np.maximum(x @ a, 0) @ b > 0).astype(float)
        direction = np.linalg.svd((a * d1) @ (b * d2) @ c)[0][:, 0]
        truth = max(truth, _pair_ratio(model, x, x + 1e-6 * direction[None, :]))
    assert truth > 12.5  # above what the 1e300 clip certified for this net and its rescalings (9.3 to 12.3)
    _assert_never_below(save(model, tmp_path), truth, "--input-range", "-1:1")


def test_stand_in_refuses_finite_values_past_huge() -> None:
    assert np.array_equal(stand_in(np.array([-np.inf, 1.0, np.inf])), [-HUGE, 1.0, HUGE])
    with pytest.raises(BeyondStandIn):
        stand_in(np.array([5e300]))
    with pytest.raises(ArithmeticError):  # what the domain engines read as "the rule says nothing"
        Interval(np.array([6e300]), np.array([1e301])).finite_proxy()


def test_unbounded_times_tiny_stays_unbounded() -> None:
    tiny = Interval.exact(np.array([1e-300, -1e-300, 0.0]))
    scaled = product(Interval.full((3,)), tiny)
    assert np.all(np.isinf(scaled.lo[:2])) and np.all(np.isinf(scaled.hi[:2]))
    assert scaled.lo[2] <= 0.0 <= scaled.hi[2] and np.isfinite(scaled.hi[2])
    summed = add(Interval(np.array([-np.inf]), np.array([np.inf])), Interval.exact(np.array([-1e300])))
    assert summed.lo[0] == -np.inf and summed.hi[0] == np.inf


def test_prelu_with_tiny_slope_on_an_unbounded_input(tmp_path: Path) -> None:
    """PRelu(x) with slope 1e-300 on x unbounded below: −1 (what −HUGE·1e-300 gives) is not its lowest
    value (x = −1e301 gives −10); it was certified before."""
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    graph = load_model(save(_float64_model([node], {"s": [[1e-300]]}, 1, 1), tmp_path), probe=False).graph
    ranges = value_ranges(graph, {"x": (-np.inf, 1.0)})
    assert ranges["y"].lo.min() == -np.inf
    assert ranges["y"].hi.max() >= 1.0
    bounded = value_ranges(graph, {"x": (-3.0, 1.0)})["y"]
    assert bounded.lo.min() <= -3e-300 and 1.0 <= bounded.hi.max() < 1.01


@pytest.mark.parametrize("activation, centre", [("Tanh", 360.0), ("Tanh", 380.0), ("Sigmoid", 720.0)])
def test_a_saturated_slope_is_tiny_but_never_zero(tmp_path: Path, activation: str, centre: float) -> None:
    """3e38·(f(x + c) − f(c)) on [−1, 1]²: far out on the flat tail the slope is below 1e-300 but
    positive, and 1/cosh² (or σ·σ) rounded it to 0 (redteam19: certified 0 where a pair shows 0.16).
    The truth, sup 3e38·f'(c − 1), comes from mpmath."""
    import mpmath

    from lipaudit import audit

    derivative = mpmath.sech(centre - 1) ** 2 if activation == "Tanh" else mpmath.exp(-(centre - 1))
    truth = float(3e38 * derivative)  # σ'(m) = e^{−m}/(1 + e^{−m})², within 1e-300 of e^{−m} here
    nodes = [
        helper.make_node("Add", ["x", "c"], ["z"]),
        helper.make_node(activation, ["z"], ["t"]),
        helper.make_node("Mul", ["t", "w"], ["y"]),
    ]
    model = _float64_model(nodes, {"c": np.full(2, centre), "w": np.full(2, 3e38)}, 2, 2)
    figure = audit(save(model, tmp_path), input_range="-1:1", verify=False).upper_bound
    assert figure is not None and figure >= truth * (1 - 1e-9)
