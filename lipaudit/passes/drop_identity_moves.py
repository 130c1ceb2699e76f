"""A move that leaves every entry where it is (Identity, a Slice over the whole value, a Transpose by
the identity permutation, an Expand or Tile to the same shape, a Pad of nothing) is no node.

TorchScript keeps the full-range Slice that indexing such as ``g[:, :, None, None]`` records, where
the ONNX exporters and torch.export write none: kept, it is one more node between two that other
passes would meet, and its range's outward rounding moves the figure in its last digits.
Whether a node is such a move is read from its attributes where they show it (``_keeps_every_entry``),
else from the op's own description of its run (``Op.linear_part``: a Reshape to its input's shape,
or a Permutation that is the identity).
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node
from ..linear_maps import Permutation, Reshape
from ..ops import RuleContext, resolve
from .manager import NodeRewrite

MOVES = ("Identity", "Slice", "Transpose", "Expand", "Tile", "Pad")
# Above this many entries a move is only dropped when its attributes show it is the identity.
DESCRIBED_LIMIT = 2**16


class DropIdentityMoves(NodeRewrite):
    name = "drop-identity-moves"
    op_types = MOVES

    def rewrite(self, graph: Graph, node: Node) -> bool:
        if len(node.outputs) != 1 or graph.is_graph_output(node.outputs[0]) or not node.inputs:
            return False
        source = node.inputs[0]
        shape = graph.shape(source)
        if shape is None or graph.shape(node.outputs[0]) != shape or graph.variable_inputs(node) != [source]:
            return False
        if not _keeps_every_entry(graph, node, tuple(shape)):
            return False
        graph.replace_uses(node.outputs[0], source)
        graph.remove_node(node)
        return True


def _keeps_every_entry(graph: Graph, node: Node, shape: tuple[int, ...]) -> bool:
    """With the output's shape the input's: Identity, Expand and Tile copy nothing then, and a
    Transpose by 0, 1, … or a Slice of unit steps keeps every entry in place; anything else (a Pad
    that shifts, a reversal) is read from the op's description of its run, on values small enough
    that running it on their entries costs little."""
    if node.op_type in ("Identity", "Expand", "Tile"):
        return True
    if node.op_type == "Transpose":
        return list(node.attr_ints("perm", list(reversed(range(len(shape)))))) == list(range(len(shape)))
    if node.op_type == "Slice" and len(node.inputs) > 4 and node.inputs[4]:
        steps = graph.const(node.inputs[4])
        if steps is not None and bool(np.all(np.asarray(steps) == 1)):
            return True
    elif node.op_type == "Slice":
        return True  # no steps: every step 1
    if math.prod(shape) > DESCRIBED_LIMIT:
        return False
    op = resolve(node, graph.opset_of(node))
    if op is None:
        return False
    try:
        found = op.linear_part(node, RuleContext(graph))
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError):
        return False
    part = found[0] if isinstance(found, tuple) and len(found) == 1 else found
    if isinstance(part, Reshape):
        return tuple(part.out_shape([shape])) == shape
    return isinstance(part, Permutation) and part.is_identity and tuple(part.shape) == shape
