"""Shapes inside the taken branch of a constant If: no runtime probe sees them, and ONNX inference
can be wrong there (MaxPool with ceil_mode) or the branch can declare a stale shape. They come from
a run of the graph, with or without verification. Truth: explicit pairs through onnxruntime on the
file itself (default session options)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipaudit import audit


def _info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(then_nodes, then_output, else_nodes, else_output, length, out_shape, initializers=(), value_info=()):
    then_branch = helper.make_graph(then_nodes, "then", [], [then_output], value_info=list(value_info))
    else_branch = helper.make_graph(else_nodes, "else", [], [else_output])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "g",
        [_info("x", [1, 1, length])],
        [_info("y", out_shape)],
        [numpy_helper.from_array(np.array(True), "c"), *initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _pair_ratio(model, x0, x1) -> float:
    run = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    f0, f1 = (run.run(None, {"x": x})[0].astype(np.float64) for x in (x0, x1))
    return float(np.linalg.norm(f1 - f0) / np.linalg.norm((x1 - x0).astype(np.float64)))


def _ceil_mode_pool_then_mean():
    """MaxPool(kernel 1, stride 2, ceil_mode) on length 4: inference says 3 entries, the model has 2."""
    pool = helper.make_node("MaxPool", ["x"], ["u"], kernel_shape=[1], strides=[2], ceil_mode=1)
    mean = helper.make_node("ReduceMean", ["u"], ["r"], axes=[2], keepdims=1)
    other = helper.make_node("ReduceMax", ["x"], ["e"], axes=[2], keepdims=1)
    model = _model([pool, mean], _info("r", [1, 1, 1]), [other], _info("e", [1, 1, 1]), 4, [1, 1, 1])
    return model, np.zeros((1, 1, 4), np.float32), np.array([1, 0, 1, 0], np.float32).reshape(1, 1, 4)


def _stale_declaration_then_conv():
    """A Reshape inference cannot follow, declared [32, 1, 1] in the branch (really [1, 1, 32]), then a
    box filter: bounded on a length-1 signal it is 1, on the real one about 3."""
    n = 32
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Max", ["s", "one"], ["s2"]),
        helper.make_node("Reshape", ["x", "s2"], ["t"]),
        helper.make_node("Conv", ["t", "K"], ["u"], pads=[1, 1]),
        helper.make_node("Reshape", ["u", "s2"], ["u2"]),
    ]
    initializers = [
        numpy_helper.from_array(np.ones((1, 1, 3), np.float32), "K"),
        numpy_helper.from_array(np.ones(3, np.int64), "one"),
    ]
    model = _model(
        nodes,
        _info("u2", [1, 1, n]),
        [helper.make_node("Identity", ["x"], ["e"])],
        _info("e", [1, 1, n]),
        n,
        [1, 1, n],
        initializers,
        value_info=[_info("t", [n, 1, 1])],
    )
    bump = np.sin(np.pi * np.arange(1, n + 1) / (n + 1)).astype(np.float32).reshape(1, 1, n)
    return model, np.full((1, 1, n), 10, np.float32), (10 + bump).astype(np.float32)


@pytest.mark.parametrize("build", [_ceil_mode_pool_then_mean, _stale_declaration_then_conv])
@pytest.mark.parametrize("verify", [None, False])
def test_branch_shapes_come_from_a_run_of_the_graph(tmp_path, build, verify) -> None:
    model, x0, x1 = build()
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    truth = _pair_ratio(model, x0, x1)
    report = audit(str(path), verify=verify)
    assert report.network.certified
    assert report.upper_bound >= truth * (1 - 1e-6)
    assert report.upper_bound <= truth * 1.001  # the maps are exact: the figure is the truth


def test_a_model_onnxruntime_runs_only_optimised_is_still_verified(tmp_path) -> None:
    """Unoptimised, onnxruntime pre-allocates the branch output at inference's wrong shape and fails."""

    def pool(output):
        return helper.make_node("MaxPool", ["x"], [output], kernel_shape=[1], strides=[2], ceil_mode=1)

    model = _model([pool("u")], _info("u", [1, 1, 3]), [pool("e")], _info("e", [1, 1, 3]), 4, [1, 1, 3])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    report = audit(str(path))
    assert report.verification.checked, report.verification.reason
    assert report.upper_bound == pytest.approx(1.0, abs=1e-5)


def _main_graph(nodes, constants, out_shape):
    """x (1, 4) → y: the nodes over the named constants, at opset 17."""
    graph = helper.make_graph(
        nodes,
        "g",
        [_info("x", [1, 4])],
        [_info("y", out_shape)],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _expand_declared_stale(extra_nodes=(), extra_initializers=()):
    """A branch Expand (1, 4) → (3, 4) declared (1, 4), then Flatten and ReduceSum after the If: 3·Σx,
    Lipschitz 6. On the stale shape, a pass dropped the Expand as a copy to the same shape (2.0)."""
    then_branch = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["e"]), helper.make_node("Identity", ["e"], ["o"])],
        "then",
        [],
        [_info("o", [1, 4])],
        value_info=[_info("e", [1, 4])],
    )
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["o2"])], "else", [], [_info("o2", [1, 4])])
    nodes = [
        helper.make_node("If", ["c"], ["b"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Flatten", ["b"], ["flat"], axis=0),
        helper.make_node("ReduceSum", ["flat", "axis"], ["y"], keepdims=1),
        *extra_nodes,
    ]
    constants = {
        "c": np.array(True),
        "shape": np.array([3, 4], np.int64),
        "axis": np.array([1], np.int64),
        **dict(extra_initializers),
    }
    return _main_graph(nodes, constants, [1, 1])


@pytest.mark.parametrize(
    "probe",
    ["runs", "refused"],  # refused: an unused DFT keeps onnxruntime from running the model at all
)
@pytest.mark.parametrize("verify", [None, False])
def test_a_stale_branch_declaration_is_corrected_before_the_passes_read_it(tmp_path, probe, verify) -> None:
    extra = []
    if probe == "refused":
        extra = [helper.make_node("Unsqueeze", ["x", "last"], ["xu"]), helper.make_node("DFT", ["xu"], ["unused"])]
    model = _expand_declared_stale(extra, [("last", np.array([-1], np.int64))] if extra else [])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    report = audit(str(path), verify=verify)
    assert report.network.certified
    assert report.upper_bound >= 6.0 * (1 - 1e-6)
    assert report.upper_bound <= 6.0 * (1 + 1e-5)


def test_a_nested_constant_if_is_confirmed_whole(tmp_path) -> None:
    """After the inner If is inlined its name stays nowhere: the shapes it leaves are all confirmed."""
    inner = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["e"]), helper.make_node("ReduceSum", ["e", "first"], ["o"])],
        "then",
        [],
        [_info("o", [1, 4])],
    )
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["o2"])], "else", [], [_info("o2", [1, 4])])
    outer = helper.make_graph(
        [helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=other)], "outer", [], [_info("o", [1, 4])]
    )
    constants = {"c": np.array(True), "shape": np.array([3, 4], np.int64), "first": np.array([0], np.int64)}
    model = _main_graph([helper.make_node("If", ["c"], ["y"], then_branch=outer, else_branch=other)], constants, [1, 4])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    report = audit(str(path), verify=False)
    assert report.network.certified and report.upper_bound == pytest.approx(3.0, rel=1e-5)
