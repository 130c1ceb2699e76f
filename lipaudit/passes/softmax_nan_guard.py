"""The legacy ONNX exporter guards a masked softmax against rows that are masked whole:
Where(IsNaN(p), 0, p) for p = Softmax(scores + M).  Where every row of the constant mask M keeps a
finite entry (and has no +∞ or NaN), p has no NaN for finite scores, IsNaN(p) is false everywhere
and the Where is p itself: the guard goes, and the attention it hid can fuse.  As a guard the pair
reads as a step function of the input (IsNaN jumps), so without this the model had no figure on
the path where torch keeps one op.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite
from .matching import axis_of, known_shape, read_only_by


def _masked_softmax_never_nan(graph: Graph, softmax: Node) -> bool:
    adder = graph.producer(softmax.inputs[0])
    shape = known_shape(graph, softmax.inputs[0])
    if adder is None or adder.domain or adder.op_type != "Add" or shape is None:
        return False
    constants = [graph.const(name) for name in adder.inputs if name and graph.is_const(name)]
    if len(constants) != 1 or len(adder.inputs) != 2:
        return False
    mask = np.asarray(constants[0], np.float64)
    if np.any(np.isnan(mask)) or np.any(mask == np.inf):
        return False
    try:
        mask = np.broadcast_to(mask, shape)
    except ValueError:
        return False
    axis = axis_of(softmax.attr_int("axis", -1), len(shape))
    return bool(np.all(np.isfinite(mask).any(axis=axis)))


def _drop(graph: Graph, where: Node) -> bool:
    if len(where.inputs) != 3:
        return False
    condition, _, kept = where.inputs
    guard = graph.producer(condition)
    softmax = graph.producer(kept)
    if guard is None or guard.domain or guard.op_type != "IsNaN" or guard.inputs[0] != kept:
        return False
    if softmax is None or softmax.domain or softmax.op_type != "Softmax" or not read_only_by(graph, condition, [where]):
        return False
    if graph.is_graph_output(where.outputs[0]) or not _masked_softmax_never_nan(graph, softmax):
        return False
    graph.replace_uses(where.outputs[0], kept)
    graph.remove_node(where)
    graph.remove_node(guard)
    return True


class DropSoftmaxNanGuard(NodeRewrite):
    name = "drop-softmax-nan-guard"
    op_types = ("Where",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _drop(graph, node)
