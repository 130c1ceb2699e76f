"""Attention is not globally Lipschitz: every form of it is reported unbounded, with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.builders import graph_model
from tests.ops._truth import run_audit


def _attention_inputs():
    rng = np.random.default_rng(3)
    return {name: rng.normal(size=(8, 8)).astype(np.float32) for name in ("wq", "wk", "wv")}


def test_spelled_out_self_attention_is_unbounded(tmp_path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    report = run_audit(graph_model(nodes, [4, 8], _attention_inputs()), tmp_path)
    assert report.upper_bound is None and not report.network.certified
    assert any("not globally Lipschitz" in b.reason for b in report.network.unbounded)


def test_the_onnx_attention_op_is_unbounded_and_still_verified(tmp_path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=2, kv_num_heads=2),
    ]
    model = graph_model(nodes, [1, 4, 8], _attention_inputs(), opset=23)
    report = run_audit(model, tmp_path)
    assert report.upper_bound is None
    assert [b.op for b in report.network.unbounded] == ["Attention"]
    assert "Kim et al." in report.network.unbounded[0].reason
    assert report.verification.checked, report.verification.reason


@pytest.mark.parametrize("op", ["Attention", "MultiHeadAttention"])
def test_contrib_attention_is_unbounded(tmp_path, op) -> None:
    rng = np.random.default_rng(4)
    if op == "Attention":
        nodes = [helper.make_node(op, ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2)]
        inits = {"w": rng.normal(size=(8, 24)).astype(np.float32), "b": np.zeros(24, np.float32)}
    else:
        nodes = [helper.make_node(op, ["x", "x", "x"], ["y"], domain="com.microsoft", num_heads=2)]
        inits = {}
    model = graph_model(nodes, [1, 4, 8], inits)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # Inference knows no contrib op: declare the output as an exporter would.
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", 1, [1, 4, 8]))
    report = run_audit(model, tmp_path)
    assert report.upper_bound is None and [b.op for b in report.network.unbounded] == [op]
