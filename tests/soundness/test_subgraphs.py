"""Class 1: If / Loop / Scan whose subgraphs read the outer scope.

A subgraph that reads a value of the enclosing graph depends on it, even when none of the node's
declared inputs does.  Such a node must never count as a constant (bound 0) or as 1.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import (
    BOOL,
    FLOAT,
    INT64,
    assert_sound,
    const,
    max_pair_ratio,
    model,
    operator_norm,
    run_audit,
    runtime_function,
)


def _branch(name: str, nodes, out: str, shape, initializers=()):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, FLOAT, shape)], list(initializers))


def _scale_branch(name: str, factor: float, shape=(1, 4)):
    """A branch computing factor·x, reading x from the outer scope."""
    return _branch(
        name,
        [helper.make_node("Mul", ["x", f"{name}_c"], [f"{name}_out"])],
        f"{name}_out",
        list(shape),
        [const(f"{name}_c", np.full(shape, factor, np.float32))],
    )


def _constant_if_model(condition: bool):
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=const("v", np.array(condition))),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=_scale_branch("then", 3.0), else_branch=_scale_branch("else", 0.5)
        ),
    ]
    return model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])])


@pytest.mark.parametrize("condition, truth", [(True, 3.0), (False, 0.5)])
def test_if_with_a_constant_condition_depends_on_the_outer_scope(tmp_path: Path, condition: bool, truth: float) -> None:
    proto = _constant_if_model(condition)
    assert operator_norm(proto, [1, 4]) == pytest.approx(truth)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def test_if_with_a_constant_condition_is_inlined(tmp_path: Path) -> None:
    """The issue asks for the taken branch to be inlined, so the usual rules give a tight figure."""
    outcome = run_audit(_constant_if_model(True), tmp_path)
    assert outcome.error is None, outcome.describe()
    assert outcome.network["certified"], outcome.describe()
    assert 3.0 <= outcome.upper_bound <= 3.0 * (1 + 1e-5), outcome.describe()


def test_nested_if_reads_two_levels_up(tmp_path: Path) -> None:
    inner = helper.make_node(
        "If", ["cond"], ["inner_out"], then_branch=_scale_branch("deep", 3.0), else_branch=_scale_branch("shallow", 0.5)
    )
    outer_then = _branch("outer_then", [inner], "inner_out", [1, 4])
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=const("v", np.array(True))),
        helper.make_node("If", ["cond"], ["y"], then_branch=outer_then, else_branch=_scale_branch("outer_else", 0.5)),
    ]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])])
    truth = operator_norm(proto, [1, 4])
    assert truth == pytest.approx(3.0)
    assert_sound(run_audit(proto, tmp_path, verify=False), truth)


def test_if_with_a_variable_condition_is_reported_not_guessed(tmp_path: Path) -> None:
    """y = 3x if Σx > 0 else 0.5x jumps where Σx crosses 0: no Lipschitz constant exists."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=_scale_branch("then", 3.0), else_branch=_scale_branch("else", 0.5)
        ),
    ]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])], {"zero": np.array(0, np.float32)})
    f = runtime_function(proto)
    jump = max_pair_ratio(f, [(np.full((1, 4), 1e-3), np.full((1, 4), -1e-3))])
    assert jump > 1.5  # ‖3·1e-3 + 0.5·1e-3‖ over ‖2e-3‖: far from the local slopes 3 and 0.5
    assert_sound(run_audit(proto, tmp_path, verify=False), math.inf)


def _loop_body(extra_nodes=()):
    """v_out = v_in + x, with x read from the outer scope."""
    return helper.make_graph(
        [
            helper.make_node("Add", ["v_in", "x"], ["v_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            *extra_nodes,
        ],
        "body",
        [
            helper.make_tensor_value_info("i", INT64, []),
            helper.make_tensor_value_info("cond_in", BOOL, []),
            helper.make_tensor_value_info("v_in", FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("cond_out", BOOL, []), helper.make_tensor_value_info("v_out", FLOAT, [1, 4])],
    )


def test_loop_with_constant_inputs_reads_the_outer_scope(tmp_path: Path) -> None:
    """Three trips of v += x from v = 0: y = 3x, although every declared input of the Loop is constant."""
    proto = model(
        [helper.make_node("Loop", ["trips", "", "v0"], ["y"], body=_loop_body())],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"trips": np.array(3, np.int64), "v0": np.zeros((1, 4), np.float32)},
    )
    truth = operator_norm(proto, [1, 4])
    assert truth == pytest.approx(3.0)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def test_loop_with_a_variable_state_and_an_outer_read(tmp_path: Path) -> None:
    """v = x, then two trips of v += x: y = 3x."""
    proto = model(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=_loop_body())],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"trips": np.array(2, np.int64)},
    )
    truth = operator_norm(proto, [1, 4])
    assert truth == pytest.approx(3.0)
    assert_sound(run_audit(proto, tmp_path, verify=False), truth)


def test_scan_with_constant_inputs_reads_the_outer_scope(tmp_path: Path) -> None:
    """A scan over three constant rows whose body adds x from the outer scope: state = 3x."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x"], ["s_sum"]),
            helper.make_node("Mul", ["s_sum", "row"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["scan_out"]),
        ],
        "scan_body",
        [helper.make_tensor_value_info("s_in", FLOAT, [1, 4]), helper.make_tensor_value_info("row", FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("s_out", FLOAT, [1, 4]),
            helper.make_tensor_value_info("scan_out", FLOAT, [1, 4]),
        ],
    )
    proto = model(
        [helper.make_node("Scan", ["s0", "rows"], ["y", "trace"], body=body, num_scan_inputs=1)],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4]), ("trace", FLOAT, [3, 1, 4])],
        {"s0": np.zeros((1, 4), np.float32), "rows": np.ones((3, 1, 4), np.float32)},
    )
    truth = operator_norm(proto, [1, 4])
    assert truth == pytest.approx(math.sqrt(9 + 1 + 4 + 9))  # y = 3x, trace = (x, 2x, 3x)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def test_torch_export_of_a_scripted_shape_test(tmp_path: Path) -> None:
    """torch.onnx.export of scripted code that tests a shape: an If whose condition folds once the
    input shape is fixed, with branches that read the Gemm output from the outer scope."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class ShapeTest(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            h = self.lin(x)
            if h.shape[1] > 2:
                return h * 3.0
            return h

    torch.manual_seed(0)
    module = ShapeTest().eval()
    path = tmp_path / "scripted_if.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.jit.script(module),
            (torch.randn(1, 4),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    import onnx

    proto = onnx.load(str(path))
    assert "If" in [n.op_type for n in proto.graph.node]
    weight = module.lin.weight.detach().double().numpy()
    truth = 3 * float(np.linalg.svd(weight, compute_uv=False)[0])
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, input_shape=["x=1x4"], verify=verify), truth)


def test_torchscript_control_flow_is_bounded_soundly(tmp_path: Path) -> None:
    """The same shape test and a loop, saved with torch.jit.save: J = 3W + 2I at every point."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class ControlFlow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            h = self.lin(x)
            if h.shape[1] > 2:
                h = h * 3.0
            for _ in range(2):
                h = h + x
            return h

    torch.manual_seed(0)
    module = ControlFlow().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    weight = module.lin.weight.detach().double().numpy()
    truth = float(np.linalg.svd(3 * weight + 2 * np.eye(4), compute_uv=False)[0])
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, input_shape=["1x4"], verify=verify), truth)
