"""Sound value ranges of every IR value on a box of inputs (interval arithmetic over the graph).

Each op's ``interval`` rule (in its family module) maps the ranges of its inputs to ranges of its
outputs. An op with no rule, or a rule that fails, gives (−∞, ∞): never a narrower guess. Nodes
whose inputs are all constants are evaluated exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..errors import LipauditError
from ..intervals.interval import Interval, float_outward, held_as, outward
from ..ir import Graph, Node
from ..ops import RuleContext, resolve
from ..ops.interval_rules import exact_outputs

# A rule that trips over a malformed node says nothing about it: its outputs are unbounded.
RULE_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    ArithmeticError,
    RuntimeError,
    NotImplementedError,
    LipauditError,
)


def input_intervals(graph: Graph, bounds: Mapping[str, tuple]) -> dict[str, Interval]:
    """Each network input's box [lo, hi] (numbers: every entry alike; arrays: entry by entry); an
    input not named is unbounded."""
    boxes = {}
    for name in graph.inputs:
        declared = graph.shape(name)
        known = declared is not None and all(d is not None and d >= 0 for d in declared)
        shape = tuple(int(d) for d in declared) if declared is not None and known else ()
        if name in bounds:
            lo, hi = (np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for v in bounds[name])
            boxes[name] = outward(Interval(lo.copy(), hi.copy()))
        else:
            boxes[name] = Interval.full(shape)
    return boxes


def value_ranges(
    graph: Graph, bounds: Mapping[str, tuple[float, float]], on_node: Callable[[int, int, Node], None] | None = None
) -> dict[str, Interval]:
    """The range of every value the nodes compute (and of the inputs), on the box ``bounds``."""
    ranges: dict[str, Interval] = dict(input_intervals(graph, bounds))
    ctx = RuleContext(graph, ranges=ranges)
    nodes = graph.nodes
    types = graph.metadata.get("elem_types") or {}
    for index, node in enumerate(nodes):
        if on_node is not None:
            on_node(index, len(nodes), node)
        for name, interval in zip(node.outputs, _node_ranges(node, ctx)):
            if name and interval is not None:
                ranges[name] = outward(float_outward(interval, held_as(types, name)))
            elif name:
                ranges[name] = Interval.full(_known_shape(graph, name))
    return ranges


def _node_ranges(node: Node, ctx: RuleContext) -> list[Interval | None]:
    op = resolve(node, ctx.opset(node))
    if op is None:
        return [None] * len(node.outputs)
    try:
        if not ctx.graph.variable_inputs(node) and op.executable():
            return exact_outputs(op, node, ctx)
        found = op.interval(node, ctx)
    except RULE_ERRORS:
        return [None] * len(node.outputs)
    return [_checked(interval) for interval in found]


def _checked(interval: Interval | None) -> Interval | None:
    if interval is None:
        return None
    if np.any(interval.lo > interval.hi):
        return None  # an inverted interval means the rule met something it does not model
    return interval


def _known_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    shape = graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def intersected(first: Mapping[str, Interval], second: Mapping[str, Interval]) -> dict[str, Interval]:
    """Both ranges' intersection where both hold one (each a sound range of the same value)."""
    out = dict(first)
    for name, other in second.items():
        mine = out.get(name)
        if mine is None:
            out[name] = other
            continue
        try:
            shape = np.broadcast_shapes(mine.shape, other.shape)
            a, b = mine.broadcast_to(shape), other.broadcast_to(shape)
        except ValueError:
            continue
        lo, hi = np.maximum(a.lo, b.lo), np.minimum(a.hi, b.hi)
        if np.any(lo > hi):
            continue  # only rounding makes sound ranges miss each other: keep the first
        out[name] = Interval(lo, hi)
    return out
