"""A layer measured on a graph of its node alone gets the factors it gets in the whole graph: for
every op that is measured by jobs, in the forms whose rules read the most of the graph."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from lipaudit.compose import compose, node_factors
from lipaudit.load import load_model
from lipaudit.ops import RuleContext
from lipaudit.parallel.jobs import InlineExecutor
from lipaudit.parallel.layers import MEASURED_OPS, measure_layers, measured_nodes
from lipaudit.parallel.local import ProcessExecutor
from lipaudit.passes import run_passes
from tests.builders import graph_model, save


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["ct"], name="deconv", strides=[2, 2]),
        helper.make_node(
            "AveragePool", ["ct"], ["ap"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        ),
        helper.make_node("Conv", ["ap", "wc"], ["c"], name="conv", strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("MatMul", ["c", "batched"], ["mm"], name="matmul"),
        helper.make_node("Flatten", ["mm"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w1"], ["g1"], name="fc1", transB=1, alpha=0.5),
        # A variable bias: the rule gives one weight per variable input.
        helper.make_node("Gemm", ["f", "w2", "g1"], ["y"], name="fc2", transB=1, beta=2.0),
    ]
    weights = {
        "wt": rng.standard_normal((4, 3, 3, 3)),
        "wc": rng.standard_normal((5, 3, 3, 3)),
        "batched": rng.standard_normal((5, 6, 4)),
        "w1": rng.standard_normal((6, 5 * 6 * 4)),
        "w2": rng.standard_normal((6, 5 * 6 * 4)),
    }
    model = graph_model(nodes, [1, 4, 6, 6], {k: v.astype(np.float32) for k, v in weights.items()})
    path = save(model, tmp_path_factory.mktemp("layers"))
    return run_passes(load_model(path).graph)


def test_every_measured_op_is_in_the_graph(graph) -> None:
    assert {node.op_type for node in measured_nodes(graph)} == MEASURED_OPS


@pytest.mark.parametrize("executor_kind", ["inline", "processes"])
def test_factors_on_one_node_graphs_are_the_whole_graphs(graph, executor_kind: str) -> None:
    ctx = RuleContext(graph)
    executor = InlineExecutor() if executor_kind == "inline" else ProcessExecutor(2)
    with executor:
        measured, failures = measure_layers(graph, ctx, executor)
    assert failures == []
    assert set(measured) == set(measured_nodes(graph))
    for node, factors in measured.items():
        assert factors == node_factors(node, ctx), node.name
        assert all(f.status == "bounded" for f in factors), node.name
    assert measured[graph.producer("y")][0].input_weights is not None
    assert compose(graph, ctx, precomputed=measured) == compose(graph, ctx)
