"""Shape arithmetic folds away at the given input shape: exporters' dynamic pads and reshapes come out complete."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipaudit import audit
from tests.jacobians import max_jacobian_norm


class TfSamePadding(nn.Module):
    """TensorFlow's 'SAME' padding, computed from the input's shape as TF ports write it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        ih, iw = x.size()[-2:]
        pad_h = max((math.ceil(ih / 2) - 1) * 2 + 3 - ih, 0)
        pad_w = max((math.ceil(iw / 2) - 1) * 2 + 3 - iw, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return torch.relu(self.conv(x))


class WindowPartition(nn.Module):
    """Swin's window partition: a reshape and permute whose sizes come from the input's shape."""

    def __init__(self, window: int = 2) -> None:
        super().__init__()
        self.window = window
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        b, h, w, c = x.shape
        ws = self.window
        x = self.proj(x).view(b, h // ws, ws, w // ws, ws, c)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        x = self.conv(x).view(b, self.groups, c // self.groups, h, w).transpose(1, 2)
        return torch.tanh(x.reshape(b, c, h, w))


CASES = [(TfSamePadding, (1, 3, 7, 9)), (WindowPartition, (1, 4, 4, 4)), (ChannelShuffle, (1, 4, 3, 3))]


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    """Dynamic dimensions keep the Shape → Gather → … arithmetic in the file, as real exports do."""
    dynamic = {"x": {0: "batch", len(shape) - 2: "height", len(shape) - 1: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.randn(shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            dynamic_axes=dynamic,
        )


@pytest.mark.parametrize("net,shape", CASES, ids=[c[0].__name__ for c in CASES])
def test_exported_shape_arithmetic_folds_and_the_bound_is_complete(tmp_path, net, shape) -> None:
    torch.manual_seed(0)
    module = net()
    path = tmp_path / "model.onnx"
    _export(module, shape, path)
    report = audit(str(path), input_shape=["x=" + "x".join(map(str, shape))])
    assert report.network.complete and report.network.certified, report.network.unsupported
    assert not any(layer.op in ("Shape", "Gather", "Cast", "Ceil", "Div", "Concat") for layer in report.layers)
    assert report.verification.checked
    truth = max_jacobian_norm(module, shape, samples=4, seed=0)
    assert report.upper_bound >= truth * (1 - 1e-6)


def test_a_node_the_reference_evaluator_refuses_folds_through_onnxruntime(tmp_path) -> None:
    """CumSum's axis as a 1-element tensor, as the legacy exporter writes it: onnxruntime runs it,
    onnx's reference evaluator refuses it; the shape arithmetic must fold all the same."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lipaudit.load import load_model
    from lipaudit.passes.fold_constants import FoldConstants

    ones = numpy_helper.from_array(np.ones(4, np.int64), "ones")
    axis = numpy_helper.from_array(np.array([0], np.int64), "axis")
    nodes = [
        helper.make_node("CumSum", ["ones", "axis"], ["positions"]),
        helper.make_node("Cast", ["positions"], ["weights"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "weights"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    model = helper.make_model(
        helper.make_graph(nodes, "cumsum", [x], [y], [ones, axis]), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save(onnx.shape_inference.infer_shapes(model), str(tmp_path / "cumsum.onnx"))
    graph = load_model(str(tmp_path / "cumsum.onnx")).graph  # the loader folds what it can
    FoldConstants().run(graph)
    assert [node.op_type for node in graph.nodes] == ["Mul"]
    assert graph.const(graph.nodes[0].inputs[1]).tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("activations", [["Relu"], ["Sigmoid", "Tanh", "Affine"]])
def test_a_recurrent_op_of_constants_folds_as_the_runtime_runs_it(activations, tmp_path) -> None:
    """An RNN or LSTM of constants, its first output omitted (''): its folded outputs keep their
    positions, and non-default activations are the runtime's (onnx's reference evaluator ignores
    them). y = x·Y_h, so the figure is max|Y_h| as onnxruntime computes the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests.builders import operator_matrix, spectral_norm

    rng = np.random.default_rng(1)
    op, gates = ("RNN", 1) if activations == ["Relu"] else ("LSTM", 4)
    weights = {
        "X": rng.normal(size=(3, 1, 2)),
        "W": rng.normal(size=(1, gates * 4, 2)),
        "R": rng.normal(size=(1, gates * 4, 4)),
    }
    extra = {"activation_alpha": [10.0], "activation_beta": [0.0]} if "Affine" in activations else {}
    outputs = ["", "Yh"] if op == "RNN" else ["", "Yh", "Yc"]
    nodes = [
        helper.make_node(op, ["X", "W", "R"], outputs, hidden_size=4, activations=activations, **extra),
        helper.make_node("Reshape", ["Yh", "shape"], ["h"]),
        helper.make_node("Mul", ["x", "h"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1, 4], np.int64), "shape"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(
        helper.make_graph(nodes, "rnn", [x], [y], initializers), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    path = tmp_path / "rnn.onnx"
    onnx.save(model, str(path))
    truth = spectral_norm(operator_matrix(model, [1, 4]))
    for verify in (True, False):
        report = audit(str(path), verify=verify)
        assert report.exit_code() == 0 and report.network.certified
        assert truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + 1e-5)


def test_a_constant_loop_whose_body_reads_outer_weights_folds(tmp_path: Path) -> None:
    """Loop(3 steps, s ← s·W) on constants only, added to x: the runtime's copy of the node needs the
    W the body reads from outside, or nothing folds and the recursion meets a value no node makes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def info(name, shape, kind=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, kind, shape)

    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "W"], ["s_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [info("i", [], TensorProto.INT64), info("c_in", [], TensorProto.BOOL), info("s_in", [1, 4])],
        [info("c_out", [], TensorProto.BOOL), info("s_out", [1, 4])],
    )
    constants = {
        "M": np.array(3, np.int64),
        "cond": np.array(True),
        "W": np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32),
        "s0": np.ones((1, 4), np.float32),
    }
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "s0"], ["L"], body=body), helper.make_node("Add", ["x", "L"], ["y"])],
        "g",
        [info("x", [1, 4])],
        [info("y", [1, 4])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "loop.onnx"
    onnx.save(model, str(path))
    report = audit(str(path))
    assert report.verification.checked, report.verification.reason
    assert not [notice for notice in report.notices if "recursion failed" in notice]
    assert report.upper_bound == pytest.approx(1.0, rel=1e-5)
