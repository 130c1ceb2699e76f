"""Class 2: rules that depend on a shape must use the shape the runtime produces.

ONNX shape inference disagrees with onnxruntime on MaxPool with ceil_mode and padding, and a
model's value_info can be stale (left by an editing tool).  Each test here builds such a model,
measures the runtime's function, and checks that the figure is not below it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import (
    FLOAT,
    assert_sound,
    max_fd_jacobian_norm,
    model,
    operator_norm,
    run_audit,
    runtime_function,
    session,
)

FD_SLACK = 1e-3  # finite differences of float32 outputs, steps of 1e-2 on piecewise-linear maps
FD_STEP = 1e-2


# (input size, kernel, stride, pad begin, pad end): inference and onnxruntime disagree on the output size.
CEIL_CASES = [(5, 2, 2, 1, 1), (4, 3, 2, 0, 2), (6, 3, 2, 2, 2), (5, 2, 3, 1, 0)]


def _ceil_pool(size: int, kernel: int, stride: int, begin: int, end: int):
    pool = helper.make_node(
        "MaxPool",
        ["x"],
        ["p"],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[begin, begin, end, end],
        ceil_mode=1,
    )
    return pool, [("x", FLOAT, [1, 1, size, size])]


@pytest.mark.parametrize("size, kernel, stride, begin, end", CEIL_CASES)
def test_maxpool_ceil_mode_then_global_average_pool(tmp_path: Path, size, kernel, stride, begin, end) -> None:
    pool, inputs = _ceil_pool(size, kernel, stride, begin, end)
    proto = model([pool, helper.make_node("GlobalAveragePool", ["p"], ["y"])], inputs, [("y", FLOAT, [1, 1, 1, 1])])
    truth = max_fd_jacobian_norm(runtime_function(proto), [1, 1, size, size], eps=FD_STEP)
    assert truth > 0
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=FD_SLACK)


def test_the_report_shows_the_runtime_shape_of_a_ceil_mode_maxpool(tmp_path: Path) -> None:
    """5×5, kernel 2, stride 2, pads 1, ceil_mode: inference says 4×4, onnxruntime produces 3×3."""
    pool, inputs = _ceil_pool(5, 2, 2, 1, 1)
    runtime_shape = list(
        session(model([pool], inputs, [("p", FLOAT, None)]))
        .run(None, {"x": np.zeros((1, 1, 5, 5), np.float32)})[0]
        .shape
    )
    proto = model([pool, helper.make_node("GlobalAveragePool", ["p"], ["y"])], inputs, [("y", FLOAT, [1, 1, 1, 1])])
    assert runtime_shape == [1, 1, 3, 3]
    outcome = run_audit(proto, tmp_path)
    assert outcome.error is None, outcome.describe()
    shapes = {layer["op"]: layer["output_shape"] for layer in outcome.report["layers"]}
    assert shapes.get("MaxPool") == runtime_shape, outcome.describe()


def test_shape_arithmetic_folds_the_runtime_shape(tmp_path: Path) -> None:
    """y = p / H with H read by Shape → Gather from a ceil_mode MaxPool: H is 3 at run time, not 4."""
    pool, inputs = _ceil_pool(5, 2, 2, 1, 1)
    nodes = [
        pool,
        helper.make_node("Shape", ["p"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["h_int"], axis=0),
        helper.make_node("Cast", ["h_int"], ["h"], to=FLOAT),
        helper.make_node("Div", ["p", "h"], ["y"]),
    ]
    proto = model(nodes, inputs, [("y", FLOAT, ["n", "c", "h", "w"])], {"two": np.array(2, np.int64)})
    truth = max_fd_jacobian_norm(runtime_function(proto), [1, 1, 5, 5], eps=FD_STEP)
    assert truth == pytest.approx(1 / 3, rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=FD_SLACK)


def test_stale_value_info_before_global_average_pool(tmp_path: Path) -> None:
    """value_info claims 8×8 for a 4×4 tensor: the mean is over 16 positions, not 64."""
    stale = helper.make_tensor_value_info("r", FLOAT, [1, 1, 8, 8])
    proto = model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["y"])],
        [("x", FLOAT, [1, 1, 4, 4])],
        [("y", FLOAT, [1, 1, 1, 1])],
        value_info=[stale],
    )
    f = runtime_function(proto)
    truth = max_fd_jacobian_norm(lambda x: f(np.abs(x) + 1), [1, 1, 4, 4], eps=FD_STEP)  # all-positive points
    assert truth == pytest.approx(0.25, rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=FD_SLACK)


def test_stale_value_info_before_reduce_sum(tmp_path: Path) -> None:
    """ReduceSum over a tensor that value_info says has 4 entries, while it has 16: √16, not √4."""
    stale = helper.make_tensor_value_info("r", FLOAT, [1, 4])
    proto = model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("ReduceSum", ["r"], ["y"], keepdims=1)],
        [("x", FLOAT, [1, 16])],
        [("y", FLOAT, [1, 1])],
        value_info=[stale],
    )
    f = runtime_function(proto)
    truth = max_fd_jacobian_norm(lambda x: f(np.abs(x) + 1), [1, 16], eps=FD_STEP)
    assert truth == pytest.approx(4.0, rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=FD_SLACK)


def test_stale_value_info_hides_a_broadcast(tmp_path: Path) -> None:
    """y = max(x) + x: max(x) is [1,1] and broadcasts to 4 copies; value_info claims [1,4]."""
    stale = helper.make_tensor_value_info("m", FLOAT, [1, 4])
    proto = model(
        [helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1), helper.make_node("Add", ["m", "x"], ["y"])],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        value_info=[stale],
    )
    truth = max_fd_jacobian_norm(runtime_function(proto), [1, 4], eps=FD_STEP)
    jacobian = np.eye(4) + np.outer(np.ones(4), np.eye(4)[0])  # J = I + 1·e_kᵀ at any point with argmax k
    assert truth == pytest.approx(np.linalg.svd(jacobian, compute_uv=False)[0], rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=FD_SLACK)


def test_stale_value_info_on_a_resize_output(tmp_path: Path) -> None:
    """Nearest ×4 upsampling of 2×2 to 8×8 copies each entry 16 times (factor 4); value_info says 2×2."""
    stale = helper.make_tensor_value_info("r", FLOAT, [1, 1, 2, 2])
    proto = model(
        [
            helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
            helper.make_node("Relu", ["r"], ["y"]),
        ],
        [("x", FLOAT, [1, 1, 2, 2])],
        [("y", FLOAT, [1, 1, 8, 8])],
        {"scales": np.array([1, 1, 4, 4], np.float32)},
        value_info=[stale],
    )
    f = runtime_function(proto)
    truth = max_fd_jacobian_norm(lambda x: f(np.abs(x) + 1), [1, 1, 2, 2], eps=FD_STEP)
    assert truth == pytest.approx(4.0, rel=1e-3)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=FD_SLACK)


def test_resize_to_sizes_read_from_a_stale_shape(tmp_path: Path) -> None:
    """Resize x to the shape of t = Resize(x, ×3), whose value_info still says 2×2: the sizes are 6×6
    at run time, so each entry of x is copied 9 times (factor 3), not once."""
    stale = helper.make_tensor_value_info("t", FLOAT, [1, 1, 2, 2])
    nodes = [
        helper.make_node("Resize", ["x", "", "three"], ["t"], mode="nearest"),
        helper.make_node("Shape", ["t"], ["sizes"]),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
    ]
    proto = model(
        nodes,
        [("x", FLOAT, [1, 1, 2, 2])],
        [("y", FLOAT, ["n", "c", "h", "w"])],
        {"three": np.array([1, 1, 3, 3], np.float32)},
        value_info=[stale],
    )
    truth = operator_norm(proto, [1, 1, 2, 2])
    assert truth == pytest.approx(3.0)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=1e-6)
