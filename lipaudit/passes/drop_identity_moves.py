"""A move that leaves every entry where it is (Identity, a Slice over the whole value, a Transpose by
the identity permutation, an Expand or Tile to the same shape, a Pad of nothing) is no node.

TorchScript keeps the full-range Slice that indexing such as ``g[:, :, None, None]`` records, where
the ONNX exporters and torch.export write none: kept, it is one more node between two that other
passes would meet, and its range's outward rounding moves the figure in its last digits.
Whether a node is such a move is read from the op's own description of its run
(``Op.linear_part``: a Reshape to its input's shape, or a Permutation that is the identity).
"""

from __future__ import annotations

from ..ir import Graph, Node
from ..linear_maps import Permutation, Reshape
from ..ops import RuleContext, resolve
from .manager import NodeRewrite

MOVES = ("Identity", "Slice", "Transpose", "Expand", "Tile", "Pad")


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
