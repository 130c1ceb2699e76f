"""The IR graph keeps its producer and consumer maps through its own mutators."""

from __future__ import annotations

import numpy as np
import pytest

from lipaudit.ir import Graph, Node, Value


def _chain() -> Graph:
    nodes = [Node("a", "Relu", ("x",), ("h",)), Node("b", "Neg", ("h",), ("g",)), Node("c", "Add", ("h", "g"), ("y",))]
    return Graph(nodes, {"x": Value("x", (2,))}, ["x"], ["y"], opset=17)


def test_values_know_their_producer_and_consumers() -> None:
    graph = _chain()
    a, b, c = graph.nodes
    assert graph.producer("h") is a and graph.producer("x") is None
    assert graph.consumers("h") == [b, c]
    assert graph.sole_consumer("g") is c and graph.sole_consumer("h") is None
    graph.check_links()


def test_looking_a_value_up_never_creates_it() -> None:
    graph = _chain()
    assert graph.get("nowhere") is None and graph.shape("nowhere") is None and graph.const("nowhere") is None
    with pytest.raises(KeyError):
        graph.value("nowhere")
    assert "nowhere" not in graph.values
    fresh = graph.new_value("h", const=np.ones(2))
    assert fresh.name != "h" and fresh.shape == (2,) and graph.value(fresh.name) is fresh


def test_mutators_keep_the_maps_in_step() -> None:
    graph = _chain()
    a, b, c = graph.nodes
    graph.set_inputs(c, ["g", "g"])
    assert graph.consumers("h") == [b]
    graph.replace_uses("g", "h")
    assert graph.consumers("g") == [] and graph.consumers("h") == [b, c]
    graph.remove_unused()  # b's output is read by no one now
    assert graph.nodes == [a, c]
    inserted = Node("d", "Abs", ("h",), ("k",))
    graph.insert_nodes(c, [inserted])
    graph.set_outputs(inserted, ["k2"])
    assert graph.nodes == [a, inserted, c] and graph.producer("k2") is inserted and graph.producer("k") is None
    graph.check_links()


def test_outer_scope_reads_keep_their_producers_alive() -> None:
    nodes = [Node("p", "Relu", ("x",), ("h",)), Node("if", "If", ("cond",), ("y",), implicit_inputs=("h",))]
    graph = Graph(nodes, {"x": Value("x", (2,)), "cond": Value("cond", (), np.array(True))}, ["x"], ["y"])
    assert not graph.remove_unused()
    assert graph.consumers("h") == [nodes[1]] and graph.variable_inputs(nodes[1]) == ["h"]
