"""nn.GroupNorm, which both ONNX exporters spell out through InstanceNormalization, is one
GroupNormalization again: the ONNX and TorchScript forms of one model get the same figure, on the
whole space and on a box, and that figure bounds torch's own Jacobians."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import lipaudit
from lipaudit.load import load_model
from lipaudit.passes import FuseGroupNorm
from tests.passes._export import export, jacobian_norms


def _model(groups: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3), torch.nn.GroupNorm(groups, 6), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1.0, 1.0)
    return model.double()


@pytest.mark.slow  # 10 s of recursion on the torch form
@pytest.mark.parametrize("groups", [3])
def test_the_onnx_and_torchscript_forms_of_group_norm_get_one_figure(tmp_path, groups):
    model = _model(groups)
    figures = {}
    for kind in ("onnx", "torchscript"):
        folder = tmp_path / kind
        folder.mkdir()
        path, shape = export(model.float(), (1, 4, 6, 6), folder, kind)
        for scope, box in (("global", None), ("box", "-1:1")):
            report = lipaudit.audit(str(path), input_shape=shape or None, input_range=box)
            assert [layer.op for layer in report.layers] == ["Conv", "GroupNormalization", "Relu"]
            figures[kind, scope] = report.upper_bound
    for scope in ("global", "box"):
        assert figures["onnx", scope] == pytest.approx(figures["torchscript", scope], rel=1e-12)
    points = [torch.empty(1, 4, 6, 6, dtype=torch.float64).uniform_(-1, 1) for _ in range(4)]
    assert jacobian_norms(model.double(), points) <= figures["onnx", "box"] <= figures["onnx", "global"]


def _spelled_out(tmp_path, unit_scale: float = 1.0):
    """x (1, 4, 2, 2) → Reshape (1, 2, 8) → InstanceNormalization → Reshape back → ·γ + β."""
    gamma = np.arange(1, 5, dtype=np.float32).reshape(4, 1, 1)
    nodes = [
        helper.make_node("Reshape", ["x", "split"], ["grouped"]),
        helper.make_node("InstanceNormalization", ["grouped", "unit", "zero"], ["normalised"], epsilon=1e-3),
        helper.make_node("Reshape", ["normalised", "back"], ["restored"]),
        helper.make_node("Mul", ["restored", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 2, -1], np.int64), "split"),
        numpy_helper.from_array(np.array([1, 4, 2, 2], np.int64), "back"),
        numpy_helper.from_array(np.full(2, unit_scale, np.float32), "unit"),
        numpy_helper.from_array(np.zeros(2, np.float32), "zero"),
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(-gamma, "beta"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])
    model = helper.make_model(
        helper.make_graph(nodes, "group_norm", [x], [y], initializers), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    path = tmp_path / "group_norm.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def test_the_pattern_becomes_one_group_normalization_with_per_channel_affine(tmp_path):
    graph = load_model(str(_spelled_out(tmp_path))).graph
    assert FuseGroupNorm().run(graph)
    assert [node.op_type for node in graph.nodes] == ["GroupNormalization"]
    (node,) = graph.nodes
    assert node.attrs == {"num_groups": 2, "epsilon": pytest.approx(1e-3)}
    np.testing.assert_array_equal(graph.const(node.inputs[1]), [1, 2, 3, 4])
    np.testing.assert_array_equal(graph.const(node.inputs[2]), [-1, -2, -3, -4])


def test_an_instance_norm_with_its_own_scale_is_not_fused(tmp_path):
    graph = load_model(str(_spelled_out(tmp_path, unit_scale=2.0))).graph
    assert "InstanceNormalization" in [node.op_type for node in graph.nodes]
    assert not FuseGroupNorm().run(graph)
