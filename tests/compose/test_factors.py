"""The checks every rule gets from the composer: copies, side inputs, outputs without a rule, float32 margin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from lipaudit import audit
from lipaudit.compose import FLOAT32_MARGIN, compose, node_factors
from lipaudit.ir import Graph, Node, Value, fill_default_attributes
from lipaudit.ops import Factor, Op, RuleContext, register, unregister
from tests.builders import graph_model, operator_matrix, save, spectral_norm


def _graph(nodes: list[Node], values: dict[str, Value], outputs: list[str]) -> Graph:
    graph = Graph(nodes, values, ["x"], outputs, opset=17, opset_imports={"": 17, "lipaudit.test": 1})
    fill_default_attributes(graph)
    return graph


class Tile3(Op):
    """A toy op whose output has three copies of its input, and whose rule forgets it."""

    family = "toy"
    summary = "1 (forgets the copies)"
    domain = "lipaudit.test"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(1.0, "closed-form")


@pytest.fixture
def forgetful_op():
    register(Tile3)
    yield
    unregister(Tile3)


def test_an_op_whose_output_outgrows_its_input_without_saying_so_is_unknown(forgetful_op) -> None:
    graph = _graph(
        [Node("t", "Tile3", ("x",), ("y",), domain="lipaudit.test")],
        {"x": Value("x", (1, 4)), "y": Value("y", (3, 4))},
        ["y"],
    )
    (factor,) = node_factors(graph.nodes[0], RuleContext(graph))
    assert factor.status == "unknown" and "does not account for the copies" in factor.reason


def test_elementwise_ops_get_the_square_root_of_the_copies() -> None:
    # Relu(x) broadcast against nothing: same size, factor 1; Add(x, c) with c larger: √3 on x.
    graph = _graph(
        [Node("a", "Add", ("x", "c"), ("y",))],
        {"x": Value("x", (1, 4)), "c": Value("c", (3, 4), np.zeros((3, 4), np.float32)), "y": Value("y", (3, 4))},
        ["y"],
    )
    (factor,) = node_factors(graph.nodes[0], RuleContext(graph))
    assert factor.input_weights == [pytest.approx(math.sqrt(3) * (1 + FLOAT32_MARGIN))]


def test_an_output_without_a_rule_never_inherits_the_first_outputs_factor() -> None:
    graph = _graph(
        [
            Node("p", "MaxPool", ("x",), ("y", "i"), {"kernel_shape": [2, 2], "strides": [2, 2]}),
            Node("c", "Cast", ("i",), ("f",), {"to": 1}),
        ],
        {
            "x": Value("x", (1, 1, 4, 4)),
            "y": Value("y", (1, 1, 2, 2)),
            "i": Value("i", (1, 1, 2, 2)),
            "f": Value("f", (1, 1, 2, 2)),
        },
        ["y", "f"],
    )
    network = compose(graph, RuleContext(graph))
    assert network.upper_bound is None
    assert [b.reason for b in network.unbounded] == [
        "output 1 ('i'): MaxPool's Indices output is a step function of the input (it jumps)"
    ]


def test_an_unused_second_output_does_not_block_the_bound() -> None:
    graph = _graph(
        [Node("p", "MaxPool", ("x",), ("y", "i"), {"kernel_shape": [2, 2], "strides": [2, 2]})],
        {"x": Value("x", (1, 1, 4, 4)), "y": Value("y", (1, 1, 2, 2)), "i": Value("i", (1, 1, 2, 2))},
        ["y"],
    )
    assert compose(graph, RuleContext(graph)).upper_bound == 1.0


def test_a_pad_whose_fill_value_is_the_data_itself_counts_the_copies(tmp_path) -> None:
    # Pad(x, [2, 3], x[0]) with x of one entry: x is the data and the fill value, six copies in all.
    nodes = [
        helper.make_node("Reshape", ["v", "scalar_shape"], ["s"]),
        helper.make_node("Pad", ["v", "pads", "s"], ["y"], mode="constant"),
    ]
    model = graph_model(
        nodes, [1], {"scalar_shape": np.zeros(0, np.int64), "pads": np.array([2, 3], np.int64)}, input_name="v"
    )
    truth = spectral_norm(operator_matrix(model, [1]))
    assert truth == pytest.approx(math.sqrt(6))
    assert audit(str(save(model, tmp_path))).upper_bound >= truth * (1 - 1e-7)
