"""A Concat of slices of one value along one axis is one Gather of that value.

torch.roll, a channel shuffle by chunk-and-cat, and reorderings by split-and-cat are written by
every exporter as Slices (or a Split) then a Concat. Bounded op by op, the Concat adds up its
pieces (√2 for two halves of one tensor) though the whole is a permutation. As one Gather with
constant indices its factor is √(most picks of one entry): 1 for a permutation.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite
from .matching import axis_of, selection


def _picks(graph: Graph, name: str, axis: int) -> tuple[str, list[int]] | None:
    """(source, entries along ``axis``) when ``name`` takes entries of ``source`` along that axis
    alone (a Slice in either form, with attributes before opset 10, a Split output, a Gather)."""
    found = selection(graph, name)
    if found is None or found.axis != axis:
        return None
    return found.source, list(found.indices)


class ConcatSlices(NodeRewrite):
    name = "concat-slices"
    op_types = ("Concat",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        out_shape = graph.shape(node.outputs[0])
        if out_shape is None or len(node.inputs) < 2:
            return False
        axis = axis_of(node.attr_int("axis"), len(out_shape))
        if axis is None:
            return False
        source, picks = None, []
        for name in node.inputs:
            found = _picks(graph, name, axis)
            if found is None or (source is not None and found[0] != source):
                return False
            source = found[0]
            picks += found[1]
        assert source is not None
        indices = graph.new_value(f"{node.name}_indices", const=np.asarray(picks, dtype=np.int64))
        graph.set_inputs(node, [source, indices.name])
        node.op_type, node.attrs = "Gather", {"axis": axis}
        node.notes.append("a Concat of slices of one value: one Gather")
        return True
