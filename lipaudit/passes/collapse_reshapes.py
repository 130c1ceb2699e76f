"""Two reshapes in a row are one reshape, and a reshape back to the shape it started from is none.

Row-major reshapes never move an entry, so any chain of Reshape, Flatten, Squeeze and Unsqueeze is
the one Reshape to its last shape. Exporters differ in what they leave of ``nn.Flatten`` followed by
``nn.Unflatten`` (the dynamo exporter drops the pair, the legacy one and the torch loaders keep it).
Kept, the pair stands between two linear layers that MergeLinear would otherwise make one, and the
product bound differs from the other export's.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite

RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _is_reshape(node: Node | None) -> bool:
    return node is not None and not node.domain and node.op_type in RESHAPES


class CollapseReshapes(NodeRewrite):
    name = "collapse-reshapes"
    op_types = RESHAPES

    def rewrite(self, graph: Graph, node: Node) -> bool:
        out_shape = graph.shape(node.outputs[0])
        if out_shape is None or len(node.outputs) != 1:
            return False
        source, earlier = node.inputs[0], graph.producer(node.inputs[0])
        if earlier is not None and _is_reshape(earlier) and graph.sole_consumer(source) is node:
            source = earlier.inputs[0]
        elif graph.shape(source) != out_shape:
            return False
        if graph.shape(source) == out_shape:
            if graph.is_graph_output(node.outputs[0]):  # the output keeps its name and its node
                return False
            graph.replace_uses(node.outputs[0], source)
            graph.remove_node(node)
            return True
        assert earlier is not None
        target = graph.new_value(f"{node.name}_shape", const=np.asarray(out_shape, dtype=np.int64))
        graph.set_inputs(node, [source, target.name])
        node.op_type, node.attrs = "Reshape", {"allowzero": 0}
        node.notes.append(f"one reshape with {earlier.name} before it")
        return True
