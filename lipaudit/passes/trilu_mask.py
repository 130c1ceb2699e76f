"""Trilu with a constant diagonal offset is a product with a constant 0/1 mask over the last two
axes: entries off the triangle become 0, the others stay. As a Mul by a constant its factor is 1
and the recursion sees a diagonal map (both ONNX exporters and the aten converter write
torch.tril/triu as Trilu)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite


class TriluMask(NodeRewrite):
    name = "trilu-mask"
    op_types = ("Trilu",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        shape = graph.shape(node.inputs[0])
        offset = graph.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else np.zeros(())
        if shape is None or len(shape) < 2 or offset is None:
            return False
        rows, columns = shape[-2:]
        k = int(np.asarray(offset).reshape(-1)[0])
        gap = np.arange(columns)[None, :] - np.arange(rows)[:, None]  # column − row
        keep = gap >= k if node.attr_int("upper", 1) else gap <= k
        mask = graph.new_value(f"{node.name}_mask", const=keep.astype(np.float32))
        graph.set_inputs(node, [node.inputs[0], mask.name])
        node.op_type, node.attrs = "Mul", {}
        node.notes.append(f"Trilu (k = {k}) as a product with its 0/1 mask")
        return True
