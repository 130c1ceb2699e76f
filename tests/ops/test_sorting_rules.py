"""The fused pair sorts' rules read their attributes strictly: a selection they cannot account for
makes the node unknown, never a factor of 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipaudit.compose import node_factors
from lipaudit.execute.executor import GraphInterpreter
from lipaudit.ir import Graph, Node, Value
from lipaudit.ops import RuleContext


def _max_min(first, second, shape=(1, 4), **extra) -> tuple[Graph, Node]:
    attrs = dict(axis=1, first=list(first), second=list(second), max_first=1, concat_axis=1, stack=0, **extra)
    node = Node("pair", "MaxMin", ["x"], ["y"], attrs, domain="lipaudit")
    out = (shape[0], 2 * len(first))
    graph = Graph([node], {"x": Value("x", shape), "y": Value("y", out)}, ["x"], ["y"], opset=17)
    return graph, node


@pytest.mark.parametrize(
    "first,second,expected",
    [
        ([0, 1], [2, 3], 1.0),
        ([0, 2], [1, 3], 1.0),
        ([0, 1, 2], [1, 2, 3], math.sqrt(2)),
        ([0, 0], [0, 1], math.sqrt(3)),
    ],
)
def test_max_min_counts_the_copies_of_each_entry(first, second, expected) -> None:
    graph, node = _max_min(first, second)
    (factor,) = node_factors(node, RuleContext(graph))
    assert factor.status == "bounded" and factor.value == pytest.approx(expected)


@pytest.mark.parametrize("first,second", [([0, 1], [2]), ([0, 4], [1, 2]), ([], [])])
def test_max_min_with_selections_it_cannot_pair_is_unknown(first, second) -> None:
    graph, node = _max_min(first, second)
    (factor,) = node_factors(node, RuleContext(graph))
    assert factor.status == "unknown"


def test_max_min_and_crelu_runs() -> None:
    x = torch.tensor([[3.0, -1.0, 2.0, 5.0]])
    graph, _ = _max_min([0, 1], [2, 3])
    assert GraphInterpreter(graph).run({"x": x})["y"].tolist() == [[3.0, 5.0, 2.0, -1.0]]
    crelu = Node("c", "CRelu", ["x"], ["y"], {"axis": 1, "negative_first": 1}, domain="lipaudit")
    graph = Graph([crelu], {"x": Value("x", (1, 4)), "y": Value("y", (1, 8))}, ["x"], ["y"], opset=17)
    got = GraphInterpreter(graph).run({"x": x})["y"]
    assert np.array_equal(got.numpy(), [[0, 1, 0, 0, 3, 0, 2, 5]])
    (factor,) = node_factors(crelu, RuleContext(graph))
    assert factor.value == 1.0
