"""The attention ops and products of two variable matrices on a box: sound against ascent inside it,
and their output ranges contain what the ops compute."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from lipaudit.compose import compose
from lipaudit.domain import value_ranges
from lipaudit.domain.lower import box_lower_bound
from lipaudit.load import load_model
from lipaudit.ops import RuleContext
from tests.builders import graph_model, save
from tests.domain._containment import assert_ranges_contain_seen

BOX = (-1.0, 1.0)


def _weights(seed: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape) / math.sqrt(shape[0])).astype(np.float32) for shape in shapes]


def _check(model, tmp_path, *, samples: int = 2, steps: int = 25):
    graph = load_model(save(model, tmp_path)).graph
    ranges = value_ranges(graph, {"x": BOX})
    assert_ranges_contain_seen(graph, ranges, BOX, samples=8, targets=6, steps=10)
    local = compose(graph, RuleContext(graph, ranges=ranges))
    assert local.upper_bound is not None and math.isfinite(local.upper_bound), (local.unbounded, local.unsupported)
    assert any(layer.factor.method == "domain" for layer in local.layers)
    lower = box_lower_bound(graph, {"x": BOX}, samples=samples, steps=steps)
    assert local.upper_bound >= lower.value > 0
    assert compose(graph, RuleContext(graph)).upper_bound is None  # not globally Lipschitz
    return local, lower


def test_gemm_of_two_variable_matrices(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "x"], ["y"], alpha=0.5, transB=1)]
    _check(graph_model(nodes, [3, 4], {}), tmp_path)


@pytest.mark.parametrize("three_d", [False, True])
def test_the_onnx_attention_op_with_grouped_heads_and_a_mask(tmp_path, three_d):
    wq, wk, wv = _weights(5, (6, 8), (6, 4), (6, 4))
    mask = np.tril(np.ones((3, 3), dtype=bool))
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
    ]
    inits = {"wq": wq, "wk": wk, "wv": wv, "mask": mask}
    if three_d:
        nodes.append(helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"], q_num_heads=4, kv_num_heads=2))
    else:
        nodes += [
            helper.make_node("Reshape", ["q", "q_shape"], ["q4"]),
            helper.make_node("Reshape", ["k", "kv_shape"], ["k4"]),
            helper.make_node("Reshape", ["v", "kv_shape"], ["v4"]),
            helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", ["k4"], ["kh"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
            helper.make_node("Attention", ["qh", "kh", "vh", "mask"], ["y"]),
        ]
        inits.update(q_shape=np.array([1, 3, 4, 2]), kv_shape=np.array([1, 3, 2, 2]))
    _check(graph_model(nodes, [1, 3, 6], inits, opset=23), tmp_path)


@pytest.mark.parametrize("op", ["Attention", "MultiHeadAttention"])
def test_contrib_attention(tmp_path, op):
    (w,) = _weights(6, (6, 18))
    if op == "Attention":
        nodes = [helper.make_node(op, ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2)]
        inits = {"w": w, "b": np.linspace(-0.2, 0.2, 18).astype(np.float32)}
    else:
        nodes = [helper.make_node(op, ["x", "x", "x", "bias"], ["y"], domain="com.microsoft", num_heads=2)]
        inits = {"bias": np.linspace(-0.2, 0.2, 18).astype(np.float32)}
    model = graph_model(nodes, [1, 3, 6], inits)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", 1, [1, 3, 6]))
    local, _ = _check(model, tmp_path)
    layer = next(layer for layer in local.layers if layer.node.op_type == op)
    assert any("Kim et al." in note for note in layer.factor.notes)  # its assumptions, stated
