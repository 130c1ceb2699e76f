"""Opset-6 broadcasting along an ``axis``: a per-channel (C,) operand lines up with axis 1, not with
the last axis as numpy would (redteam17: a square map read the numpy way was certified below the truth)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from lipaudit import audit
from lipaudit.errors import ModelLoadError
from lipaudit.load import load_model
from tests.builders import graph_model, operator_matrix, save, spectral_norm

SHAPE = (1, 3, 3, 3)  # W == C: both alignments are possible, and they differ
SCALE = np.array([5.0, 0.1, 0.2], np.float32)
KERNEL = np.random.default_rng(5).standard_normal((2, 3, 3, 3)).astype(np.float32)


def _scaled_conv(op_type: str, opset: int) -> onnx.ModelProto:
    legacy = opset < 7
    nodes = [
        helper.make_node(op_type, ["x", "s"], ["m"], **({"broadcast": 1, "axis": 1} if legacy else {})),
        helper.make_node("Conv", ["m", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["y"]),
    ]
    scale = SCALE if op_type == "Mul" else (1 / SCALE).astype(np.float32)
    return graph_model(nodes, SHAPE, {"s": scale if legacy else scale.reshape(3, 1, 1), "w": KERNEL}, opset=opset)


@pytest.mark.parametrize("op_type", ["Mul", "Div"])
def test_a_per_channel_scale_at_opset_six_is_per_channel(tmp_path, op_type) -> None:
    truth = spectral_norm(operator_matrix(_scaled_conv(op_type, 13), SHAPE))
    legacy = audit(save(_scaled_conv(op_type, 6), tmp_path, "legacy.onnx"), verify=False)
    modern = audit(save(_scaled_conv(op_type, 13), tmp_path, "modern.onnx"))
    assert legacy.upper_bound == modern.upper_bound
    assert truth <= legacy.upper_bound <= truth * (1 + 1e-5)


def test_a_variable_operand_is_unsqueezed_to_its_axis(tmp_path) -> None:
    """Add(x, b) with b an input of shape (3,) and axis=1: b[c] is added to channel c."""
    nodes = [helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1)]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(SHAPE))
    b = helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(SHAPE))
    model = helper.make_model(helper.make_graph(nodes, "net", [x, b], [y]), opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 8
    graph = load_model(save(model, tmp_path)).graph
    unsqueeze = graph.producer(graph.nodes[-1].inputs[1])
    assert unsqueeze is not None and unsqueeze.op_type == "Unsqueeze"
    assert graph.values[graph.nodes[-1].inputs[1]].shape == (3, 1, 1)


def test_an_axis_that_does_not_fit_is_a_load_error(tmp_path) -> None:
    nodes = [helper.make_node("Mul", ["x", "s"], ["y"], broadcast=1, axis=3)]
    model = graph_model(nodes, SHAPE, {"s": np.ones((3, 3), np.float32)}, opset=6)
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(save(model, tmp_path))
