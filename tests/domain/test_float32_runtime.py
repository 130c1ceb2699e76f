"""What a float32 runtime computes, not the real-number function the graph spells (redteam21): a
cast from float64 rounds, a product past float32's largest number is infinite (and inf·0 is NaN),
one below its smallest subnormal is 0, and constants fold to the runtime's values. Each model
below has a step that fires only because of that; lipaudit must not certify it as smooth."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from lipaudit import audit
from tests.builders import graph_model, save

F32 = lambda value: np.array(value, np.float32)  # noqa: E731


def _steps_inside(model: onnx.ModelProto, lo: float, hi: float, dtype=np.float32) -> float:
    """The largest jump ratio onnxruntime shows between neighbouring points of a fine grid on [lo, hi]."""
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    grid = np.linspace(lo, hi, 20001).astype(dtype)
    outputs = np.array([session.run(None, {"x": np.full(shape, v, dtype)})[0].ravel()[0] for v in grid])
    gaps = np.abs(np.diff(outputs)) / np.maximum(np.diff(grid.astype(np.float64)), 1e-300)
    return float(gaps.max())


def _where_jumps(condition_nodes: list, constants: dict) -> onnx.ModelProto:
    nodes = [
        *condition_nodes,
        helper.make_node("Add", ["x", "ten"], ["shifted"]),
        helper.make_node("Where", ["condition", "shifted", "x"], ["y"]),
    ]
    return graph_model(nodes, (1, 4), {**constants, "ten": F32(10.0)})


CASES = {
    # ((x·1e38)·10)·0 is 0 in real numbers; in float32 it overflows to inf above x ≈ 0.34, and inf·0 is NaN.
    "overflow-times-zero": (
        lambda: _where_jumps(
            [
                helper.make_node("Mul", ["x", "big"], ["b1"]),
                helper.make_node("Mul", ["b1", "ten"], ["b2"]),
                helper.make_node("Mul", ["b2", "zero"], ["z"]),
                helper.make_node("Greater", ["z", "minus_one"], ["condition"]),
            ],
            {"big": F32(1e38), "zero": F32(0.0), "minus_one": F32(-1.0)},
        ),
        (0.3, 0.4),
    ),
    # x·1e-30·1e-15 is positive in real numbers; in float32 it underflows to 0 below x ≈ 0.7.
    "underflow-to-zero": (
        lambda: _where_jumps(
            [
                helper.make_node("Mul", ["x", "a"], ["t1"]),
                helper.make_node("Mul", ["t1", "b"], ["t2"]),
                helper.make_node("Cast", ["t2"], ["condition"], to=TensorProto.BOOL),
            ],
            {"a": F32(1e-30), "b": F32(1e-15)},
        ),
        (0.5, 2.0),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_a_step_that_float32_fires_is_not_certified_smooth(tmp_path, name, verify) -> None:
    build, (lo, hi) = CASES[name]
    model = build()
    assert _steps_inside(model, lo, hi) > 1e3  # the runtime does jump inside the box
    network = audit(save(model, tmp_path), input_range=f"{lo}:{hi}", verify=verify).to_dict()["network"]
    assert network["upper_bound"] is None and not network["certified"], network


def test_a_cast_from_float64_rounds_before_a_floor(tmp_path) -> None:
    """Floor(float(x)) is 0 for real x in [0, 1), but float(0.99999999999) is 1.0."""
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("Floor", ["f"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "floor",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    hi = 0.99999999999
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.full((1, 4), hi)})[0].max() == 1.0
    network = audit(save(model, tmp_path), input_range=f"0:{hi}").to_dict()["network"]
    assert network["upper_bound"] is None and not network["certified"], network


def test_a_float_constant_folds_to_the_runtimes_value(tmp_path) -> None:
    """Range(0, 1, 0.1)[7] is 0.7 in onnx's reference evaluator and 0.70000005 in onnxruntime: the
    mask r > 0.7 picks the steep branch at entry 7 only in the runtime."""
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
        helper.make_node("Greater", ["r", "threshold"], ["above"]),
        helper.make_node("Less", ["r", "ceiling"], ["below"]),
        helper.make_node("And", ["above", "below"], ["mask"]),
        helper.make_node("Mul", ["x", "steep"], ["scaled"]),
        helper.make_node("Where", ["mask", "scaled", "x"], ["y"]),
    ]
    constants = {
        "start": F32(0.0),
        "limit": F32(1.0),
        "delta": F32(0.1),
        "threshold": F32(0.7),
        "ceiling": F32(0.75),
        "steep": F32(100.0),
    }
    model = graph_model(nodes, (10,), constants, opset=13)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.eye(10, dtype=np.float32)[7]})[0][7] == 100.0
    for verify in (True, False):
        network = audit(save(model, tmp_path), verify=verify).to_dict()["network"]
        assert network["upper_bound"] >= 100.0, network


def _cast_net(source: int) -> onnx.ModelProto:
    """y = float32(x)·2 with x of type ``source``."""
    nodes = [
        helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "two"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cast",
        [helper.make_tensor_value_info("x", source, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    "source,rounds",
    [
        (TensorProto.UINT8, False),
        (TensorProto.INT16, False),
        (TensorProto.FLOAT16, False),
        (TensorProto.INT32, True),  # 16777217 and 16777218 become 16777216 and 16777218
        (TensorProto.INT64, True),
        (TensorProto.DOUBLE, True),  # 1 + 2⁻²⁴ and the next double round to 1 and 1 + 2⁻²³
    ],
)
def test_a_cast_to_float32_is_the_identity_only_where_it_holds_every_value(tmp_path, source, rounds) -> None:
    network = audit(save(_cast_net(source), tmp_path), verify=False).to_dict()["network"]
    if rounds:
        assert network["upper_bound"] is None and not network["certified"], network
    else:
        assert network["certified"] and abs(network["upper_bound"] - 2.0) < 1e-5, network


def test_integers_within_float32s_exact_range_cast_exactly_on_a_box(tmp_path) -> None:
    path = save(_cast_net(TensorProto.INT32), tmp_path)
    inside = audit(path, input_range="-1000:1000", verify=False).to_dict()["network"]
    assert inside["certified"] and abs(inside["upper_bound"] - 2.0) < 1e-5, inside
    beyond = audit(path, input_range=f"0:{2**25}", verify=False).to_dict()["network"]
    assert beyond["upper_bound"] is None, beyond


def test_ranges_are_rounded_outwards_to_the_values_own_float_type() -> None:
    from lipaudit.intervals.interval import Interval, float_outward

    box = Interval(np.array([1e-8, -70000.0, 0.1]), np.array([1.0, 1.0, 0.1]))
    half = float_outward(box, np.float16)
    assert half.lo[0] == 0.0 and half.lo[1] == -np.inf  # below float16's subnormals; past its largest
    assert half.lo[2] <= 0.1 <= half.hi[2] and half.hi[2] - half.lo[2] < 1e-4
    single = float_outward(box)
    assert single.lo[0] < 1e-8 < single.hi[0] and single.lo[1] == -70000.0
    assert float_outward(box, None) is box  # a float64 value keeps its range


def test_an_op_whose_value_overflows_on_the_box_is_a_jump(tmp_path) -> None:
    """tanh(exp(100·x)·1e-40): smooth in real numbers (slope ≤ 45), but float32's exp overflows to
    inf past x ≈ 0.887 and the output jumps from 0.034 to 1 (redteam24: certified 268837.95)."""
    nodes = [
        helper.make_node("Mul", ["x", "hundred"], ["scaled"]),
        helper.make_node("Exp", ["scaled"], ["grown"]),
        helper.make_node("Mul", ["grown", "tiny"], ["small"]),
        helper.make_node("Tanh", ["small"], ["y"]),
    ]
    model = graph_model(nodes, (1, 4), {"hundred": F32(100.0), "tiny": F32(1e-40)})
    assert _steps_inside(model, 0.887, 0.888) > 1e6
    path = save(model, tmp_path)
    over = audit(path, input_range="0:1").to_dict()["network"]
    assert over["upper_bound"] is None and "past float32's largest number" in over["unbounded"][0]["reason"], over
    within = audit(path, input_range="0:0.8").to_dict()["network"]
    assert within["certified"] and within["upper_bound"] < 1e-3, within
