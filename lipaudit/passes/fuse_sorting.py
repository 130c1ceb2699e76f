"""Recognise the pair sorts that exporters spell out in pieces: GroupSort-2 / MaxMin and CReLU.

Piece by piece, the two halves of a pair sort are each 1-Lipschitz and side by side they cost √2;
as one map they are 1-Lipschitz (ops/sorting.py proves each). The forms matched, all ending in a
Concat of exactly two inputs:

* MaxMin from two selections of one tensor x (Split outputs, one-axis Slices, Gathers with constant
  indices): Concat(Max(a, b), Min(a, b)) in either order, or each half Unsqueezed on the Concat's
  axis (torch.stack);
* MaxMin of the two entries of an axis of size 2 of t: Concat(ReduceMin(t), ReduceMax(t)) over that
  axis with keepdims, or Unsqueezed back on it without (deel-torchlip's GroupSort2);
* CRelu: Concat(Relu(x), Relu(Neg(x))) in either order, Neg also as Mul(x, −1).

The fused node keeps the Concat's output name and reads x (or t) directly, so the selections stay
for any other reader; the Max/Min/Relu nodes and anything between them and the Concat must be read
by the pattern alone. GroupSort with larger groups and FullSort export as TopK (or Sort as TopK),
already 1-Lipschitz without fusion.
"""

from __future__ import annotations

from ..ir import Graph, Node
from ..ops.registry import FUSED_DOMAIN
from .manager import NodeRewrite
from .matching import axis_of, const_ints, constant_operand, known_shape, producer_of, read_only_by, selection


def _fuse(
    graph: Graph,
    concat: Node,
    removed: list[Node],
    op_type: str,
    source: str,
    expected: tuple[int, ...],
    label: str,
    **attrs: object,
) -> bool:
    """Make ``concat`` compute op_type(source) and drop ``removed``; refused unless the fused op's
    output shape is the Concat's, as the runtime reported it."""
    if known_shape(graph, concat.outputs[0]) != tuple(expected):
        return False
    for node in removed:
        graph.remove_node(node)
    concat.op_type, concat.domain, concat.attrs = op_type, FUSED_DOMAIN, dict(attrs)
    graph.set_inputs(concat, [source])
    concat.notes.append(f"fused from {label}")
    return True


def _stacked_halves(graph: Graph, concat: Node, axis: int) -> tuple[list[str], list[Node]] | None:
    """The two values that Unsqueeze(·, axis) feeds the Concat (torch.stack), with the Unsqueezes."""
    found = [producer_of(graph, name, "Unsqueeze") for name in concat.inputs]
    unsqueezes = [u for u in found if u is not None]
    if len(unsqueezes) != len(found) or len(set(concat.inputs)) != 2:
        return None
    halves = []
    for unsqueeze in unsqueezes:
        axes = const_ints(graph, unsqueeze, 1, "axes")
        if axes is None or len(axes) != 1 or axis_of(axes[0], len(known_shape(graph, concat.outputs[0]) or ())) != axis:
            return None
        if not read_only_by(graph, unsqueeze.outputs[0], [concat]):
            return None
        halves.append(unsqueeze.inputs[0])
    return halves, unsqueezes


def _fuse_max_min(graph: Graph, concat: Node) -> bool:
    out_shape = known_shape(graph, concat.outputs[0])
    if out_shape is None or len(concat.inputs) != 2:
        return False
    concat_axis = axis_of(concat.attr_int("axis"), len(out_shape))
    if concat_axis is None:
        return False
    candidates: list[tuple[list[str], list[Node], bool]] = [(list(concat.inputs), [], False)]
    stacked = _stacked_halves(graph, concat, concat_axis)
    if stacked is not None:
        candidates.append((stacked[0], stacked[1], True))
    for halves, wrappers, stack in candidates:
        found = [graph.producer(name) for name in halves]
        ops = [op for op in found if op is not None and not op.domain]
        if len(ops) != len(found) or ops[0] is ops[1]:
            continue
        kinds = [op.op_type for op in ops]
        if sorted(kinds) == ["Max", "Min"]:
            fused = _pair_of_selections(graph, concat, ops, halves, wrappers, stack, concat_axis)
        elif sorted(kinds) == ["ReduceMax", "ReduceMin"]:
            fused = _pair_along_axis(graph, concat, ops, halves, wrappers, stack, concat_axis)
        else:
            continue
        if fused:
            return True
    return False


def _pair_of_selections(
    graph: Graph, concat: Node, ops: list[Node], halves: list[str], wrappers: list[Node], stack: bool, concat_axis: int
) -> bool:
    """Concat(Max(a, b), Min(a, b)) with a, b selections of one x along one axis, same shape. Max and
    Min may read selections of their own that take the same entries (torch.jit writes a slice per
    use), so they are compared by what they take, not by name."""
    if any(len(op.inputs) != 2 for op in ops):
        return False
    a, b = ops[0].inputs
    taken = [[selection(graph, name) for name in op.inputs] for op in ops]
    if any(found is None for pair in taken for found in pair) or set(taken[0]) != set(taken[1]):
        return False
    first, second = taken[0]
    half_shape = known_shape(graph, a)
    if first is None or second is None or first == second or half_shape is None or half_shape != known_shape(graph, b):
        return False
    if first.source != second.source or first.axis != second.axis:
        return False
    if not all(read_only_by(graph, name, [reader]) for name, reader in zip(halves, wrappers or [concat, concat])):
        return False
    if stack:
        expected = half_shape[:concat_axis] + (2,) + half_shape[concat_axis:]
    else:
        expected = half_shape[:concat_axis] + (2 * half_shape[concat_axis],) + half_shape[concat_axis + 1 :]
    return _fuse(
        graph,
        concat,
        [*wrappers, *ops],
        "MaxMin",
        first.source,
        expected,
        " → ".join(["selections", "Max/Min", *(["Unsqueeze"] if stack else []), "Concat"]),
        axis=first.axis,
        first=list(first.indices),
        second=list(second.indices),
        max_first=int(ops[0].op_type == "Max"),
        concat_axis=concat_axis,
        stack=int(stack),
    )


def _pair_along_axis(
    graph: Graph, concat: Node, ops: list[Node], halves: list[str], wrappers: list[Node], stack: bool, concat_axis: int
) -> bool:
    """Concat(ReduceMin(t), ReduceMax(t)) over one axis of size 2 of t, the Concat along that axis."""
    t = ops[0].inputs[0]
    t_shape = known_shape(graph, t)
    if t_shape is None or any(op.inputs[0] != t for op in ops):
        return False
    for op in ops:
        axes = const_ints(graph, op, 1, "axes")
        keep = op.attr_int("keepdims", 1)
        if axes is None or len(axes) != 1 or axis_of(axes[0], len(t_shape)) != concat_axis:
            return False
        if keep != (0 if stack else 1) or t_shape[concat_axis] != 2:
            return False
    if not all(read_only_by(graph, name, [reader]) for name, reader in zip(halves, wrappers or [concat, concat])):
        return False
    return _fuse(
        graph,
        concat,
        [*wrappers, *ops],
        "MaxMin",
        t,
        t_shape,
        " → ".join(["ReduceMin/ReduceMax", *(["Unsqueeze"] if stack else []), "Concat"]),
        axis=concat_axis,
        first=[0],
        second=[1],
        max_first=int(ops[0].op_type == "ReduceMax"),
        concat_axis=concat_axis,
        stack=0,
    )


def _negated(graph: Graph, name: str) -> tuple[str, Node] | None:
    """(x, node) when ``name`` is Neg(x) or Mul(x, −1)."""
    node = producer_of(graph, name, "Neg", "Mul")
    if node is None:
        return None
    if node.op_type == "Neg":
        return node.inputs[0], node
    operand = constant_operand(graph, node)
    return (operand[0], node) if operand is not None and operand[1] == -1.0 else None


def _fuse_crelu(graph: Graph, concat: Node) -> bool:
    out_shape = known_shape(graph, concat.outputs[0])
    if out_shape is None or len(concat.inputs) != 2 or concat.inputs[0] == concat.inputs[1]:
        return False
    found = [producer_of(graph, name, "Relu") for name in concat.inputs]
    relus = [relu for relu in found if relu is not None]
    if len(relus) != len(found):
        return False
    for negative_first in (0, 1):
        positive, negative = (relus[1], relus[0]) if negative_first else (relus[0], relus[1])
        flipped = _negated(graph, negative.inputs[0])
        if flipped is None or flipped[0] != positive.inputs[0]:
            continue
        x, neg = flipped
        x_shape = known_shape(graph, x)
        axis = axis_of(concat.attr_int("axis"), len(out_shape))
        if x_shape is None or axis is None or not read_only_by(graph, neg.outputs[0], [negative]):
            return False
        if not all(read_only_by(graph, relu.outputs[0], [concat]) for relu in relus):
            return False
        expected = x_shape[:axis] + (2 * x_shape[axis],) + x_shape[axis + 1 :]
        return _fuse(
            graph,
            concat,
            [*relus, neg],
            "CRelu",
            x,
            expected,
            "Concat(Relu(x), Relu(−x))",
            axis=axis,
            negative_first=negative_first,
        )
    return False


class FuseSorting(NodeRewrite):
    name = "fuse-sorting"
    op_types = ("Concat",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _fuse_max_min(graph, node) or _fuse_crelu(graph, node)
