"""Every rule is right without verification (issue 18): verification is a safety net, not part of a rule.

Each model here is one node with attribute values the ONNX spec allows, audited with verification
off. The truth is independent of lipaudit: onnxruntime's Jacobian by central differences at random
points (a lower bound on the Lipschitz constant), or, for a step, an explicit pair of inputs whose
outputs jump. A figure below the truth, or a figure for a step, fails.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper, shape_inference

from tests.soundness._oracle import (
    FLOAT,
    assert_sound,
    max_fd_jacobian_norm,
    pair_ratio,
    run_audit,
    runtime_function,
)

FD_SLACK = 2e-3  # central differences of float32 outputs with steps of 1e-3


def _single_node(op: str, shape: list[int], attrs: dict, constants: dict, *, opset: int = 17, order=None):
    node = helper.make_node(op, order or ["x", *constants], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "single",
        [helper.make_tensor_value_info("x", FLOAT, shape)],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return shape_inference.infer_shapes(proto)


def _topk(k: int, axis: int, largest: int, ordered: int) -> onnx.ModelProto:
    node = helper.make_node("TopK", ["x", "k"], ["y", "indices"], axis=axis, largest=largest, sorted=ordered)
    graph = helper.make_graph(
        [node],
        "topk",
        [helper.make_tensor_value_info("x", FLOAT, [4, 6])],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        [numpy_helper.from_array(np.array([k], np.int64), "k")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return shape_inference.infer_shapes(proto)


def _steepest_crossing(f, axis: int, k: int, largest: int, trials: int = 40) -> float:
    """The largest ‖f(x) − f(y)‖/‖x − y‖ over pairs where the k-th and (k+1)-th selected entries trade
    places: x and y differ by 2e-4 in two entries."""
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(trials):
        x = rng.normal(size=(4, 6)).astype(np.float64)
        line = np.moveaxis(x, axis, -1)[0]
        order = np.argsort(-line if largest else line)
        inside, outside = order[k - 1], order[k]
        middle = (line[inside] + line[outside]) / 2
        pair = []
        for sign in (1, -1):
            y = x.copy()
            view = np.moveaxis(y, axis, -1)[0]
            view[inside], view[outside] = middle + sign * 1e-4, middle - sign * 1e-4
            pair.append(y)
        best = max(best, pair_ratio(f, *pair))
    return best


TOPK_CASES = list(itertools.product((1, 3), (0, 1, -1), (0, 1), (0, 1)))


@pytest.mark.parametrize("k, axis, largest, ordered", TOPK_CASES)
def test_topk_values_for_every_attribute(tmp_path: Path, k: int, axis: int, largest: int, ordered: int) -> None:
    proto = _topk(k, axis, largest, ordered)
    f = runtime_function(proto)
    outcome = run_audit(proto, tmp_path, verify=False)
    if ordered or k == 1:
        truth = max_fd_jacobian_norm(f, [4, 6], samples=4)
        assert truth == pytest.approx(1.0, rel=FD_SLACK)
        assert_sound(outcome, truth, slack=FD_SLACK)
        assert outcome.upper_bound == pytest.approx(1.0)
        return
    # sorted=0: onnxruntime returns the k values in heap order, so a swap at the k-th place moves the others
    assert _steepest_crossing(f, axis, k, largest) > 1e3
    assert_sound(outcome, math.inf, allow_error=False)
    assert outcome.network["unbounded"]


def test_topk_with_sorted_0_is_reported_not_lipschitz_with_verification_on(tmp_path: Path) -> None:
    outcome = run_audit(_topk(3, -1, 1, 0), tmp_path)
    assert_sound(outcome, math.inf, allow_error=False)
    assert any("sorted=0" in blocker["reason"] for blocker in outcome.network["unbounded"])


def _sweep() -> dict[str, tuple[onnx.ModelProto, list[int]]]:
    rng = np.random.default_rng(1)
    cases: dict[str, tuple[onnx.ModelProto, list[int]]] = {}
    for opset, op, axis in itertools.product((11, 13), ("Softmax", "LogSoftmax"), (0, 1, -1)):
        # before opset 13 the axis splits the input into 2-D: the softmax runs over all dims after it
        cases[f"{op}-{opset}-axis{axis}"] = (_single_node(op, [2, 3, 4], {"axis": axis}, {}, opset=opset), [2, 3, 4])
    for trans_a, trans_b, alpha in itertools.product((0, 1), (0, 1), (1.0, -2.5)):
        b = rng.standard_normal((4, 3) if trans_b else (3, 4)).astype(np.float32)
        shape = [3, 2] if trans_a else [2, 3]
        attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": 0.5}
        cases[f"Gemm-A-{trans_a}{trans_b}-{alpha}"] = (
            _single_node("Gemm", shape, attrs, {"B": b, "C": np.ones(4, np.float32)}),
            shape,
        )
        a = rng.standard_normal((3, 2) if trans_a else (2, 3)).astype(np.float32)
        shape = [4, 3] if trans_b else [3, 4]
        cases[f"Gemm-B-{trans_a}{trans_b}-{alpha}"] = (
            _single_node("Gemm", shape, attrs, {"A": a}, order=["A", "x"]),
            shape,
        )
    for include_pad, ceil in itertools.product((0, 1), (0, 1)):
        attrs = {
            "kernel_shape": [2, 2],
            "dilations": [2, 2],
            "pads": [1, 1, 1, 1],
            "count_include_pad": include_pad,
            "ceil_mode": ceil,
        }
        cases[f"AveragePool-dilated-{include_pad}{ceil}"] = (
            _single_node("AveragePool", [1, 1, 6, 6], attrs, {}, opset=19),
            [1, 1, 6, 6],
        )
    for mode in ("reflect", "edge", "wrap"):
        pads = np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64)
        cases[f"Pad-{mode}"] = (
            _single_node("Pad", [1, 1, 3, 3], {"mode": mode}, {"pads": pads}, opset=19),
            [1, 1, 3, 3],
        )
    for auto_pad, group in itertools.product(("SAME_UPPER", "SAME_LOWER", "VALID"), (1, 2)):
        weights = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
        attrs = {"auto_pad": auto_pad, "group": group, "strides": [2, 2], "output_padding": [1, 1]}
        cases[f"ConvTranspose-{auto_pad}-{group}"] = (
            _single_node("ConvTranspose", [1, 4, 3, 3], attrs, {"W": weights}),
            [1, 4, 3, 3],
        )
    for mode, transform in (("nearest", "align_corners"), ("linear", "asymmetric"), ("linear", "align_corners")):
        scales = np.array([1, 1, 2, 2], np.float32)
        attrs = {"mode": mode, "coordinate_transformation_mode": transform}
        cases[f"Resize-{mode}-{transform}"] = (
            _single_node("Resize", [1, 1, 4, 4], attrs, {"roi": np.zeros(0, np.float32), "scales": scales}, opset=18),
            [1, 1, 4, 4],
        )
    for op, attrs in (("Elu", {"alpha": -2.0}), ("LeakyRelu", {"alpha": -3.0}), ("HardSigmoid", {"alpha": -2.0})):
        cases[f"{op}-{attrs}"] = (_single_node(op, [2, 5], attrs, {}), [2, 5])
    return cases


SWEEP = _sweep()


@pytest.mark.parametrize("case", sorted(SWEEP))
def test_rule_against_the_runtime_with_verification_off(tmp_path: Path, case: str) -> None:
    proto, shape = SWEEP[case]
    truth = max_fd_jacobian_norm(runtime_function(proto), shape, samples=4)
    assert_sound(run_audit(proto, tmp_path, verify=False), truth, allow_error=False, slack=FD_SLACK)


NOOP_STEP_SLOPES = {  # the elementwise step that a reduction over no axes still takes, and its slope
    "ReduceSumSquare": lambda c: 2 * c,
    "ReduceLogSum": lambda c: 1 / c,
    "ReduceL1": np.sign,
    "ReduceL2": np.sign,
    "ReduceSum": np.ones_like,
}


@pytest.mark.parametrize("op", sorted(NOOP_STEP_SLOPES))
def test_a_reduction_over_no_axes_keeps_its_elementwise_step(tmp_path: Path, op: str) -> None:
    """noop_with_empty_axes skips the reduction, not the square, log or |·| (redteam17: read as the
    identity, ReduceSumSquare was certified 21.2 on a box where its Jacobian reaches 38.2)."""
    rng = np.random.default_rng(14)
    weight, bias = rng.standard_normal((5, 8)).astype(np.float32), np.full((1, 8), 3.0, np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["c0"]),
        helper.make_node("Add", ["c0", "b"], ["c"]),
        helper.make_node(op, ["c"], ["y"], noop_with_empty_axes=1),
    ]
    graph = helper.make_graph(
        nodes,
        "noop",
        [helper.make_tensor_value_info("x", FLOAT, [1, 5])],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    proto = shape_inference.infer_shapes(proto)
    truth = 0.0  # J(x) = diag(g'(c)) Wᵀ at c = xW + b, on points of the box
    for x in rng.uniform(-0.3, 0.3, (200, 1, 5)):
        c = (x.astype(np.float64) @ weight + bias)[0]
        truth = max(truth, float(np.linalg.norm(NOOP_STEP_SLOPES[op](c)[:, None] * weight.T, 2)))
    for verify in (False, True):
        outcome = run_audit(proto, tmp_path, verify=verify, input_range="-0.3:0.3")
        assert outcome.report is not None and outcome.upper_bound is not None
        assert_sound(outcome, truth, allow_error=False)
