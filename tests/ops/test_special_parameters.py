"""Ops at parameter values where they become another, well-behaved op, and forms that were refused
or crashed for no reason of their own (redteam22). Truth: onnxruntime's operator matrix."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from lipaudit import audit
from lipaudit.load import load_model
from tests.builders import operator_matrix, save, single_node_model, spectral_norm


@pytest.mark.parametrize(
    "op,attrs,figure",
    [
        ("ThresholdedRelu", {"alpha": 0.0}, 1.0),  # a ReLU
        ("Shrink", {"lambd": -1.0, "bias": 0.0}, 1.0),  # the identity
        ("Shrink", {"lambd": -1.0, "bias": -1.0}, None),  # x − 1 below 1, x + 1 from 1: jumps by 2
    ],
)
def test_an_activation_at_a_special_parameter_gets_that_functions_verdict(tmp_path, op, attrs, figure) -> None:
    model = single_node_model(op, [1, 6], {}, **attrs)
    for verify in (True, False):
        network = audit(save(model, tmp_path), verify=verify).to_dict()["network"]
        if figure is None:
            assert network["upper_bound"] is None and "jumps by 2" in network["unbounded"][0]["reason"], network
        else:
            assert network["certified"] and abs(network["upper_bound"] - figure) < 1e-5, network


@pytest.mark.parametrize("const_on_right", [True, False])
def test_a_vector_times_a_batch_of_matrices_is_the_stacked_matrix(tmp_path, const_on_right) -> None:
    """x[4] @ W[2, 4, 3] is [x·W₁; x·W₂] (2×3); W[2, 3, 4] @ x[4] likewise."""
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((2, 4, 3) if const_on_right else (2, 3, 4)).astype(np.float32)
    inputs = ["x", "w"] if const_on_right else ["w", "x"]
    model = single_node_model("MatMul", [4], {"w": weight}, inputs=inputs)
    truth = spectral_norm(operator_matrix(model, [4]))
    network = audit(save(model, tmp_path)).to_dict()["network"]
    assert network["certified"] and truth <= network["upper_bound"] <= truth * (1 + 1e-5), (truth, network)


def test_a_model_the_runtime_would_crash_on_is_not_run(tmp_path) -> None:
    """onnxruntime segfaults on a DFT with its optional inputs empty: the process died, no report."""
    node = helper.make_node("DFT", ["x", "", ""], ["y"], onesided=0)
    graph = helper.make_graph(
        [node],
        "dft",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    loaded = load_model(save(model, tmp_path))
    assert loaded.probe is None and "can crash on DFT" in (loaded.probe_missing or "")


def test_a_runtime_value_that_is_not_finite_leaves_the_model_unverified_not_misread(tmp_path) -> None:
    """BatchNormalization with var = ε = 0 divides by 0: its runtime output is inf/NaN, so the model
    is unbounded (exit 3), not 'lipaudit misread it' (exit 2)."""
    zeros, ones = np.zeros(2, np.float32), np.ones(2, np.float32)
    constants = {"scale": ones, "bias": zeros, "mean": zeros, "var": zeros}
    model = single_node_model(
        "BatchNormalization", [1, 2, 3, 3], constants, inputs=["x", "scale", "bias", "mean", "var"], epsilon=0.0
    )
    report = audit(save(model, tmp_path)).to_dict()
    assert report["network"]["upper_bound"] is None and report["network"]["unbounded"], report["network"]
    assert any("inf or NaN" in notice for notice in report["notices"]), report["notices"]
