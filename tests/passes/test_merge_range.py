"""merge_linear merges only products float64 holds: a merged map that underflowed to 0 (or
overflowed to inf) would be measured as the wrong operator (redteam5 finding 2)."""

import itertools
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from lipaudit.ir import Node
from lipaudit.passes.merge_linear import merge_linear
from tests.builders import graph_model, scaled_residual_chain

from .test_merge_linear import graph_of

RNG = np.random.default_rng(5)
A, B, C = RNG.normal(size=(4, 4)), RNG.normal(size=(4, 5)), RNG.normal(size=(5, 4))


def _chain(first, second):
    nodes = [Node("m1", "MatMul", ["x", "w1"], ["h"]), Node("m2", "MatMul", ["h", "w2"], ["y"])]
    return graph_of(nodes, {"w1": first, "w2": second}, (1, first.shape[0]))


@pytest.mark.parametrize("s1, s2", [(1e-170, 1e-170), (1e160, 1e160), (1e-310, 1.0)])
def test_a_product_out_of_float64s_range_is_not_merged(s1, s2):
    graph = _chain(A * s1, B * s2)
    assert merge_linear(graph) == 0 and [n.name for n in graph.nodes] == ["m1", "m2"]


def test_an_ordinary_product_is_merged_as_before():
    graph = _chain(A, B)
    assert merge_linear(graph) == 1
    assert np.array_equal(graph.const(graph.nodes[0].inputs[1]), A @ B)


def test_gemm_alpha_and_bias_that_would_underflow_block_the_merge():
    nodes = [
        Node("g1", "Gemm", ["x", "w1", "c1"], ["h"], {"alpha": 1e-200, "beta": 1.0}),
        Node("g2", "Gemm", ["h", "w2"], ["y"], {}),
    ]
    graph = graph_of(nodes, {"w1": A * 1e-200, "c1": np.ones(4), "w2": B}, (2, 4))
    assert merge_linear(graph) == 0
    nodes = [Node("g1", "Gemm", ["x", "w1", "c1"], ["h"], {}), Node("g2", "Gemm", ["h", "w2"], ["y"], {})]
    graph = graph_of(nodes, {"w1": A, "c1": np.full(4, 1e-200), "w2": B * 1e-200}, (2, 4))
    assert merge_linear(graph) == 0


def test_a_scalar_gemm_bias_is_carried_through_the_merge():
    nodes = [Node("g1", "Gemm", ["x", "w1", "c1"], ["h"], {}), Node("g2", "Gemm", ["h", "w2"], ["y"], {})]
    graph = graph_of(nodes, {"w1": A, "c1": np.array(2.0), "w2": B}, (2, 4))
    assert merge_linear(graph) == 1
    np.testing.assert_allclose(graph.const(graph.nodes[0].inputs[2]), np.full(4, 2.0) @ B, rtol=1e-15)


def test_tiny_convolutions_are_not_merged():
    w1, w2 = RNG.normal(size=(3, 2, 3)) * 1e-170, RNG.normal(size=(2, 3, 3)) * 1e-170
    nodes = [Node("c1", "Conv", ["x", "w1"], ["h"], {}), Node("c2", "Conv", ["h", "w2"], ["y"], {})]
    graph = graph_of(nodes, {"w1": w1, "w2": w2}, (1, 2, 9))
    assert merge_linear(graph) == 0
    nodes = [Node("c1", "Conv", ["x", "w1"], ["h"], {}), Node("c2", "Conv", ["h", "w2"], ["y"], {})]
    graph = graph_of(nodes, {"w1": w1 * 1e170, "w2": w2 * 1e170}, (1, 2, 9))
    assert merge_linear(graph) == 1


def _model(path, weights):
    """A float64 model of x (1, 4) through x·W0·W1 → ReLU → ·W2."""
    names = [f"W{i}" for i in range(len(weights))]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["a"]), helper.make_node("MatMul", ["a", "W1"], ["b"])]
    nodes += [helper.make_node("Relu", ["b"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["y"])]
    proto = graph_model(nodes, [1, 4], dict(zip(names, weights)), elem_type=TensorProto.DOUBLE)
    onnx.save(proto, str(path))
    return str(path)


def test_the_red_team_chain_gets_a_figure_above_its_true_constant(tmp_path):
    from lipaudit import audit

    # x·(1e-170·A)·(1e-170·B) → Relu → ·(1e300·C): the constant is 1e-40 times that of the unscaled
    # chain, the max over ReLU patterns (all reached: the first two maps are onto).
    unscaled = max(np.linalg.norm((A @ B * np.array(d)) @ C, 2) for d in itertools.product([0, 1], repeat=5))
    truth = unscaled * 1e-40
    path = _model(tmp_path / "m.onnx", [A * 1e-170, B * 1e-170, C * 1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bound in ("recursion", "product"):
            network = audit(path, bound=bound, verify=False).to_dict()["network"]
            assert network["certified"] and network["upper_bound"] >= truth, (bound, network)


def test_the_product_rule_never_rounds_a_nonzero_product_to_zero():
    from lipaudit.linear_maps import Dense
    from lipaudit.spectral.scaling import product_up

    assert product_up(1e-170, 1e-170) > 0 and product_up(0.0, 1e-170) == 0.0
    assert product_up(3.0, 0.5) == 1.5
    assert Dense(torch.eye(2, dtype=torch.float64) * 1e-170).rule([1e-170]) > 0


@pytest.mark.parametrize("s", [1e-100, 1e-170])
def test_a_residual_chain_of_tiny_then_huge_maps_gets_a_figure_above_its_constant(tmp_path, s):
    """x + (x·(sA)·(sB) → ReLU → ·(C/s)·(E/s)) (redteam5 underflow_chain.py): at s = 1e-170 the
    products W1·W2 and W3·W4 leave float64 (1e-340, 1e340), so neither the merge nor the
    recursion's explicit chain maps may form them; at 1e-100 the SDP's Gram matrices would
    (1e400).  The scales cancel, so the unscaled chain is the truth."""
    from lipaudit import audit

    model, truth = scaled_residual_chain(s)
    path = str(tmp_path / "chain.onnx")
    onnx.save(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bound in ("recursion", "product"):
            network = audit(path, bound=bound, verify=False).to_dict()["network"]
            assert network["certified"] and network["upper_bound"] >= truth, (bound, network, truth)
