"""Class 5: side inputs that broadcast the data into copies, and side inputs that are the data.

When a side input makes the output larger than the data input, each data entry lands in several
output positions and the factor needs √(copies).  A side input that *is* the data tensor
(aliasing) is a second data input, not a constant.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import (
    FLOAT,
    assert_sound,
    fd_jacobian_norm,
    max_fd_jacobian_norm,
    model,
    operator_norm,
    run_audit,
    runtime_function,
)

WIDE = [1, 4]
NARROW = [1, 1]


def test_pow_exponent_broadcasts_the_base(tmp_path: Path) -> None:
    """x^1 with an exponent of shape [1,4]: x is copied 4 times, slope 2."""
    proto = model(
        [helper.make_node("Pow", ["x", "exponent"], ["y"])],
        [("x", FLOAT, NARROW)],
        [("y", FLOAT, WIDE)],
        {"exponent": np.ones(WIDE, np.float32)},
    )
    truth = operator_norm(proto, NARROW)
    assert truth == pytest.approx(2.0)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def test_pow_zero_exponent_of_a_larger_shape_is_constant(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("Pow", ["x", "exponent"], ["y"])],
        [("x", FLOAT, NARROW)],
        [("y", FLOAT, WIDE)],
        {"exponent": np.zeros(WIDE, np.float32)},
    )
    assert operator_norm(proto, NARROW) == 0.0
    assert_sound(run_audit(proto, tmp_path), 0.0)


def test_prelu_slope_broadcasts_the_data(tmp_path: Path) -> None:
    """onnxruntime broadcasts x [1,1] against a slope [1,4]: for x > 0, y = (x, x, x, x)."""
    proto = model(
        [helper.make_node("PRelu", ["x", "slope"], ["y"])],
        [("x", FLOAT, NARROW)],
        [("y", FLOAT, WIDE)],
        {"slope": np.full(WIDE, 0.5, np.float32)},
    )
    assert runtime_function(proto)(np.full(NARROW, 2.0)).shape == (4,)
    truth = fd_jacobian_norm(runtime_function(proto), np.full(NARROW, 1.0))
    assert truth == pytest.approx(2.0, rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=1e-3)


def test_a_variable_clip_bound_is_copied_to_every_entry(tmp_path: Path) -> None:
    """min = max(x): y = max(x, max(x)) = max(x) in all 4 entries, slope 2."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0), helper.make_node("Clip", ["x", "m"], ["y"])]
    proto = model(nodes, [("x", FLOAT, WIDE)], [("y", FLOAT, WIDE)])
    truth = max_fd_jacobian_norm(runtime_function(proto), WIDE)
    assert truth == pytest.approx(2.0, rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=1e-3)


def test_clip_whose_bounds_are_the_data(tmp_path: Path) -> None:
    proto = model([helper.make_node("Clip", ["x", "x", "x"], ["y"])], [("x", FLOAT, [])], [("y", FLOAT, [])])
    truth = operator_norm(proto, [])
    assert truth == pytest.approx(1.0)
    assert_sound(run_audit(proto, tmp_path), truth)


def test_pad_whose_fill_value_is_the_data(tmp_path: Path) -> None:
    """Pad([x], 3 each side, fill = x): seven copies of x, slope √7, not 1 + 1."""
    proto = model(
        [helper.make_node("Pad", ["x", "pads", "x"], ["y"], mode="constant")],
        [("x", FLOAT, [1])],
        [("y", FLOAT, [7])],
        {"pads": np.array([3, 3], np.int64)},
    )
    truth = operator_norm(proto, [1])
    assert truth == pytest.approx(math.sqrt(7))
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def test_pad_with_a_variable_fill_value(tmp_path: Path) -> None:
    """Fill = max(x), copied into 6 padded positions: J = [I; six rows e_kᵀ], norm √7."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["fill"], keepdims=0),
        helper.make_node("Pad", ["x", "pads", "fill"], ["y"], mode="constant"),
    ]
    proto = model(nodes, [("x", FLOAT, [4])], [("y", FLOAT, [10])], {"pads": np.array([3, 3], np.int64)})
    truth = max_fd_jacobian_norm(runtime_function(proto), [4])
    assert truth == pytest.approx(math.sqrt(7), rel=1e-3)
    assert_sound(run_audit(proto, tmp_path), truth, slack=1e-3)


@pytest.mark.parametrize("branch", ["then", "else"])
def test_where_branch_broadcasts_the_data(tmp_path: Path, branch: str) -> None:
    """Where(c, x, 0) with x [1,1] and c [1,4] holding three trues: x lands in 3 entries, slope √3."""
    condition = np.array([[True, True, True, False]])
    inputs = ["cond", "x", "zeros"] if branch == "then" else ["cond", "zeros", "x"]
    proto = model(
        [helper.make_node("Where", inputs, ["y"])],
        [("x", FLOAT, NARROW)],
        [("y", FLOAT, WIDE)],
        {"cond": condition if branch == "then" else ~condition, "zeros": np.zeros(WIDE, np.float32)},
    )
    truth = operator_norm(proto, NARROW)
    assert truth == pytest.approx(math.sqrt(3))
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


@pytest.mark.parametrize(
    "op, constant",
    [("Add", -10.0), ("Sub", 3.0), ("Mul", 0.5), ("Div", 2.0), ("Max", -10.0), ("Min", 10.0), ("Sum", 1.0)],
)
def test_binary_ops_broadcast_by_a_constant(tmp_path: Path, op: str, constant: float) -> None:
    proto = model(
        [helper.make_node(op, ["x", "c"], ["y"])],
        [("x", FLOAT, NARROW)],
        [("y", FLOAT, WIDE)],
        {"c": np.full(WIDE, constant, np.float32)},
    )
    truth = operator_norm(proto, NARROW)
    assert truth > 0
    assert_sound(run_audit(proto, tmp_path), truth)


@pytest.mark.parametrize("op, truth", [("Add", 2.0), ("Sub", 0.0), ("Max", 1.0), ("Concat", math.sqrt(2))])
def test_the_same_tensor_twice(tmp_path: Path, op: str, truth: float) -> None:
    attrs = {"axis": 1} if op == "Concat" else {}
    out = [1, 8] if op == "Concat" else WIDE
    proto = model([helper.make_node(op, ["x", "x"], ["y"], **attrs)], [("x", FLOAT, WIDE)], [("y", FLOAT, out)])
    assert operator_norm(proto, WIDE) == pytest.approx(truth)
    assert_sound(run_audit(proto, tmp_path), truth)


def test_matmul_with_a_batched_constant_copies_the_input(tmp_path: Path) -> None:
    weights = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    proto = model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", FLOAT, WIDE)], [("y", FLOAT, [3, 1, 2])], {"w": weights}
    )
    truth = operator_norm(proto, WIDE)
    assert truth == pytest.approx(
        np.linalg.svd(np.concatenate([w.T for w in weights.astype(np.float64)]), compute_uv=False)[0], rel=1e-6
    )
    assert_sound(run_audit(proto, tmp_path), truth)
