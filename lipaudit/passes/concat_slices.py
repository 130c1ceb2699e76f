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


def _axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def _slice_picks(graph: Graph, node: Node, axis: int) -> list[int] | None:
    """The entries of ``node``'s input, along ``axis``, that a Slice on that axis alone keeps."""
    shape = graph.shape(node.inputs[0])
    parts = [graph.const(name) if name else None for name in node.inputs[1:5]]
    if shape is None or any(part is None for part in parts[:2]):
        return None
    starts, ends = (np.asarray(part).reshape(-1) for part in parts[:2])
    axes = np.asarray(parts[2]).reshape(-1) if len(parts) > 2 and parts[2] is not None else np.arange(len(starts))
    steps = np.asarray(parts[3]).reshape(-1) if len(parts) > 3 and parts[3] is not None else np.ones_like(starts)
    if len(starts) != 1 or len(ends) != 1 or len(axes) != 1 or len(steps) != 1:
        return None
    if _axis(int(axes[0]), len(shape)) != axis or int(steps[0]) == 0:
        return None
    return list(range(shape[axis])[slice(int(starts[0]), int(ends[0]), int(steps[0]))])


def _split_picks(graph: Graph, node: Node, output: str, axis: int) -> list[int] | None:
    shape = graph.shape(node.inputs[0])
    if shape is None or _axis(node.attr_int("axis", 0), len(shape)) != axis:
        return None
    sizes = [graph.shape(name) for name in node.outputs]
    if any(size is None for size in sizes):
        return None
    offset = 0
    for name, size in zip(node.outputs, sizes):
        assert size is not None
        if name == output:
            return list(range(offset, offset + size[axis]))
        offset += size[axis]
    return None


def _picks(graph: Graph, name: str, axis: int) -> tuple[str, list[int]] | None:
    """(source, entries along ``axis``) when ``name`` is a slice of ``source`` on that axis alone."""
    node = graph.producer(name)
    if node is None or node.domain:
        return None
    if node.op_type == "Slice":
        picks = _slice_picks(graph, node, axis)
    elif node.op_type == "Split":
        picks = _split_picks(graph, node, name, axis)
    else:
        return None
    out_shape = graph.shape(name)
    if picks is None or out_shape is None or len(picks) != out_shape[axis]:
        return None
    return node.inputs[0], picks


class ConcatSlices(NodeRewrite):
    name = "concat-slices"
    op_types = ("Concat",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        out_shape = graph.shape(node.outputs[0])
        if out_shape is None or len(node.inputs) < 2:
            return False
        axis = _axis(node.attr_int("axis"), len(out_shape))
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
