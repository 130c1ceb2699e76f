"""Propagate per-node factors over the DAG into bounds on every value and on the network."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .ir import Graph, Node
from .ops import Factor, RuleContext, RuleInputError, resolve
from .report import Blocker


@dataclass
class ValueBound:
    """L(v): an upper bound on the Lipschitz constant from the network input to value v."""

    value: float
    certified: bool = True
    unknown_nodes: frozenset[str] = frozenset()
    unbounded_nodes: frozenset[str] = frozenset()

    @property
    def finite(self) -> bool:
        return not self.unknown_nodes and not self.unbounded_nodes


@dataclass
class LayerResult:
    node: Node
    factor: Factor
    bound: ValueBound


@dataclass
class NetworkBound:
    upper_bound: float | None
    certified: bool
    complete: bool
    outputs: dict[str, float | None]
    layers: list[LayerResult]
    unsupported: list[Blocker] = field(default_factory=list)
    unbounded: list[Blocker] = field(default_factory=list)


def analyze_node(node: Node, ctx: RuleContext) -> Factor:
    """The node's factor; never raises for a node it cannot bound (that is an unknown factor)."""
    op = resolve(node, ctx.opset(node))
    if op is None:
        return Factor.unknown(f"no rule for {node.label}")
    try:
        factor = op.bound(node, ctx)
    except (RuleInputError, ValueError, KeyError, IndexError, TypeError) as error:
        return Factor.unknown(f"{node.op_type} could not be analysed: {error}")
    if factor.status == "bounded" and factor.input_weights is None and op.data_inputs is not None:
        for index, name in enumerate(node.inputs):
            if name and index not in op.data_inputs and not ctx.graph.is_const(name):
                return Factor.unknown(f"input {index} ('{name}') of {node.op_type} is computed from the network "
                                      "input, and the rule only bounds its data input")
    return factor


def _combine(factor: Factor, inputs: list[ValueBound], node_name: str) -> ValueBound:
    unknown = frozenset().union(*(b.unknown_nodes for b in inputs))
    unbounded = frozenset().union(*(b.unbounded_nodes for b in inputs))
    certified = all(b.certified for b in inputs)
    if factor.status == "unknown":
        return ValueBound(math.nan, False, unknown | {node_name}, unbounded)
    if factor.status == "unbounded":
        return ValueBound(math.inf, False, unknown, unbounded | {node_name})
    weights = factor.input_weights if factor.input_weights is not None else [factor.value] * len(inputs)
    if len(weights) != len(inputs):
        return ValueBound(math.nan, False, unknown | {node_name}, unbounded)
    terms = [w * b.value for w, b in zip(weights, inputs) if w != 0.0]
    if factor.combine == "rss":
        value = math.sqrt(sum(t * t for t in terms))
    else:
        value = sum(terms)
    return ValueBound(value, certified and factor.certified, unknown, unbounded)


def compose(graph: Graph, ctx: RuleContext,
            on_node: Callable[[int, int, Node], None] | None = None) -> NetworkBound:
    bounds: dict[str, ValueBound] = {name: ValueBound(1.0) for name in graph.inputs}
    layers: list[LayerResult] = []
    unsupported: list[Blocker] = []
    unbounded: list[Blocker] = []
    for index, node in enumerate(graph.nodes):
        if on_node is not None:
            on_node(index, len(graph.nodes), node)
        variables = graph.variable_inputs(node)
        if not variables:
            # Depends on no input (a constant the loader could not fold): it does not move.
            for out in node.outputs:
                bounds[out] = ValueBound(0.0)
            continue
        factor = analyze_node(node, ctx)
        inputs = [bounds.get(name, ValueBound(math.nan, False, frozenset({name}))) for name in variables]
        bound = _combine(factor, inputs, node.name)
        for out in node.outputs:
            if out:
                bounds[out] = bound
        layers.append(LayerResult(node, factor, bound))
        if factor.status == "unknown":
            unsupported.append(Blocker(node.name, node.op_type, factor.reason))
        elif factor.status == "unbounded":
            unbounded.append(Blocker(node.name, node.op_type, factor.reason))

    outputs: dict[str, float | None] = {}
    output_bounds = []
    for name in graph.outputs:
        bound = bounds.get(name, ValueBound(0.0))  # an output that is a constant does not move
        output_bounds.append(bound)
        outputs[name] = bound.value if bound.finite else None
    complete = not any(b.unknown_nodes for b in output_bounds)
    finite = all(b.finite for b in output_bounds)
    upper = math.sqrt(sum(b.value ** 2 for b in output_bounds)) if finite else None
    certified = finite and all(b.certified for b in output_bounds)
    return NetworkBound(upper, certified, complete, outputs, layers, unsupported, unbounded)
