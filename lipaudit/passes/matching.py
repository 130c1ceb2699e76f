"""Small readers shared by the fusion passes: who produces a value, who reads it, which input is a
constant, and what a selection (Split, Slice, Gather) takes from its source.

A fusion may remove a node only when nothing else reads its outputs; these helpers say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node


def producer_of(graph: Graph, name: str, *op_types: str) -> Node | None:
    """The default-domain node of one of ``op_types`` that computes ``name``, else None."""
    node = graph.producer(name)
    return node if node is not None and not node.domain and node.op_type in op_types else None


def read_only_by(graph: Graph, name: str, readers: list[Node]) -> bool:
    """``name`` is read by exactly the nodes in ``readers`` (each at least once) and is no graph output."""
    return (not graph.is_graph_output(name)) and set(graph.consumers(name)) == set(readers)


def constant_operand(graph: Graph, node: Node) -> tuple[str, float] | None:
    """(variable input, scalar) of a two-input node with one variable input and one constant of a
    single distinct value that does not broadcast the variable to a larger shape."""
    if len(node.inputs) != 2:
        return None
    variables = [name for name in node.inputs if name and not graph.is_const(name)]
    constants = [name for name in node.inputs if name and graph.is_const(name)]
    if len(variables) != 1 or len(constants) != 1:
        return None
    value = graph.scalar(constants[0])
    if value is None or not same_shape(graph, variables[0], node.outputs[0]):
        return None
    return variables[0], value


def same_shape(graph: Graph, a: str, b: str) -> bool:
    sa, sb = graph.shape(a), graph.shape(b)
    return sa is not None and sb is not None and tuple(sa) == tuple(sb) and all(d is not None and d >= 0 for d in sa)


def known_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    shape = graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def const_ints(graph: Graph, node: Node, index: int, attribute: str) -> list[int] | None:
    """An integer parameter that opsets moved from an attribute to a constant input; None when it is
    computed from the network input or absent."""
    if index < len(node.inputs) and node.inputs[index]:
        const = graph.const(node.inputs[index])
        if const is None or np.asarray(const).dtype.kind not in "iu":
            return None
        return [int(v) for v in np.asarray(const).reshape(-1)]
    if node.has_attr(attribute):
        return list(node.attr_ints(attribute))
    return None


def axis_of(axis: int, rank: int) -> int | None:
    """``axis`` made non-negative, or None when it is outside ``rank``."""
    positive = axis + rank if axis < 0 else axis
    return positive if 0 <= positive < rank else None


@dataclass(frozen=True)
class Selection:
    """``value`` = ``source`` restricted to ``indices`` along ``axis`` (every other axis whole)."""

    source: str
    axis: int
    indices: tuple[int, ...]


def selection(graph: Graph, name: str) -> Selection | None:
    """What a Split output, a one-axis Slice or a Gather with constant 1-D indices takes from its
    source; None for anything else or when a parameter is not a constant."""
    node = graph.producer(name)
    if node is None or node.domain or not node.inputs:
        return None
    source = node.inputs[0]
    shape, out_shape = known_shape(graph, source), known_shape(graph, name)
    if shape is None or out_shape is None or len(shape) != len(out_shape):
        return None
    if node.op_type == "Split":
        found = _split_part(graph, node, name, shape)
    elif node.op_type == "Slice":
        found = _slice_part(graph, node, shape)
    elif node.op_type == "Gather":
        found = _gather_part(graph, node, shape)
    else:
        return None
    if found is None:
        return None
    axis, indices = found
    # The runtime's shape must agree with our reading of the parameters, axis by axis.
    expected = shape[:axis] + (len(indices),) + shape[axis + 1 :]
    if expected != out_shape:
        return None
    return Selection(copied_from(graph, source), axis, tuple(indices))


def copied_from(graph: Graph, name: str) -> str:
    """The value that ``name`` copies whole (through Identity, a Concat of one input and Slices that
    keep every entry in order, as torch.jit writes x[:, :c] as a full slice of axis 0 first), else
    ``name`` itself."""
    while True:
        node = graph.producer(name)
        if node is None or node.domain or not node.inputs:
            return name
        if node.op_type == "Identity" or (node.op_type == "Concat" and len(node.inputs) == 1):
            name = node.inputs[0]
            continue
        shape = known_shape(graph, node.inputs[0])
        if node.op_type != "Slice" or shape is None:
            return name
        ranges = _slice_ranges(graph, node, shape)
        if ranges is None or any(indices != list(range(shape[axis])) for axis, indices in ranges):
            return name
        name = node.inputs[0]


def _split_part(graph: Graph, node: Node, name: str, shape: tuple[int, ...]) -> tuple[int, list[int]] | None:
    axis = axis_of(node.attr_int("axis", 0), len(shape))
    if axis is None:
        return None
    sizes = []
    for output in node.outputs:
        out_shape = known_shape(graph, output) if output else None
        if out_shape is None or axis is None:
            return None
        sizes.append(out_shape[axis])
    if sum(sizes) != shape[axis]:
        return None
    position = node.outputs.index(name)
    start = sum(sizes[:position])
    return axis, list(range(start, start + sizes[position]))


def _slice_ranges(graph: Graph, node: Node, shape: tuple[int, ...]) -> list[tuple[int, list[int]]] | None:
    """(axis, indices kept) for each axis a Slice names, when its parameters are constants."""
    starts = const_ints(graph, node, 1, "starts")
    ends = const_ints(graph, node, 2, "ends")
    axes = const_ints(graph, node, 3, "axes")
    steps = const_ints(graph, node, 4, "steps")
    if starts is None or ends is None or len(starts) != len(ends):
        return None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if len(axes) != len(starts) or len(steps) != len(starts) or 0 in steps:
        return None
    ranges: list[tuple[int, list[int]]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        positive = axis_of(axis, len(shape))
        if positive is None or any(positive == seen for seen, _ in ranges):
            return None
        # Python's slice clamps out-of-range starts and ends as ONNX does, for either sign of step.
        ranges.append((positive, list(range(*slice(start, end, step).indices(shape[positive])))))
    return ranges


def _slice_part(graph: Graph, node: Node, shape: tuple[int, ...]) -> tuple[int, list[int]] | None:
    """The one axis a Slice narrows (every other axis it names kept whole)."""
    ranges = _slice_ranges(graph, node, shape)
    if ranges is None:
        return None
    narrowed = [(axis, indices) for axis, indices in ranges if indices != list(range(shape[axis]))]
    if len(narrowed) > 1:
        return None
    return narrowed[0] if narrowed else ranges[0] if ranges else None


def _gather_part(graph: Graph, node: Node, shape: tuple[int, ...]) -> tuple[int, list[int]] | None:
    indices = graph.const(node.inputs[1]) if len(node.inputs) > 1 else None
    axis = axis_of(node.attr_int("axis", 0), len(shape))
    if indices is None or axis is None or np.asarray(indices).ndim != 1 or np.asarray(indices).dtype.kind not in "iu":
        return None
    size = shape[axis]
    taken = [int(i) + size if int(i) < 0 else int(i) for i in np.asarray(indices)]
    if not all(0 <= i < size for i in taken):
        return None
    return axis, taken
