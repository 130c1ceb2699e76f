"""On a box, a node after a nonlinearity whose variable input it broadcasts (an Add of a summed
context, an Add of a tiled copy) carries each entry √(copies) times: the deviation step reads the
node's factor with that count, as the product does (compose.factors), never the op's bare rule.
The truth is exact: the Jacobian at a point of the box, in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import lipaudit
from tests.builders import graph_model, save


def _model(tmp_path, nodes, initializers, width: int):
    return save(graph_model(nodes, [1, width], initializers), tmp_path, "broadcast.onnx")


@pytest.mark.parametrize("box", ["-1:1", "-0.01:0.01"])
def test_a_summed_context_added_back_counts_every_copy(tmp_path, box):
    """y = tanh(x) + Σ tanh(x) (keepdims), x of 16 entries: J(0) = I + 11ᵀ, of norm 17."""
    nodes = [
        helper.make_node("Tanh", ["x"], ["h"]),
        helper.make_node("ReduceSum", ["h", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["h", "s"], ["y"]),
    ]
    path = _model(tmp_path, nodes, {"axes": np.array([1], np.int64)}, 16)
    report = lipaudit.audit(str(path), input_range=box)
    assert report.network.certified
    assert report.upper_bound >= 17.0


@pytest.mark.parametrize("box", ["0.1:1", "-1:1"])
def test_a_tiled_copy_added_back_counts_every_copy(tmp_path, box):
    """y = h + Tile(h, 8) with h = LeakyRelu(x, 0.3), one input entry: dy/dx = (1 + 1)·h' in 8
    entries, of norm 2·√8 where x > 0."""
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["h"], alpha=0.3),
        helper.make_node("Tile", ["h", "repeats"], ["k"]),
        helper.make_node("Add", ["h", "k"], ["y"]),
    ]
    path = _model(tmp_path, nodes, {"repeats": np.array([1, 8], np.int64)}, 1)
    report = lipaudit.audit(str(path), input_range=box)
    assert report.network.certified
    assert report.upper_bound >= 2 * np.sqrt(8)
