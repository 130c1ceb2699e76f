"""Propagate per-node factors over the DAG into bounds on every value and on the network.

For a value v, L(v) bounds the Lipschitz constant from the network input to v: the network inputs
have L = 1 (several inputs are one concatenated input), and each output of a node gets the
combination its factor states (a weighted sum, or a root sum of squares) of its variable inputs'
bounds. An unknown or unbounded factor makes every value downstream of it non-finite; it never
counts as 1.

The factors themselves are independent of one another: a caller may compute the expensive ones
ahead (in parallel, elsewhere) and hand them in; the propagation stays serial and in graph order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..invariants import present
from ..ir import Graph, Node
from ..ops import Factor, RuleContext
from ..report_types import Blocker
from ..spectral.scaling import product_up, root_sum_squares
from .factors import FLOAT32_MARGIN, float32_margin, node_factors

__all__ = ["FLOAT32_MARGIN", "LayerResult", "NetworkBound", "ValueBound", "compose", "float32_margin", "node_factors"]


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
    """One analysed node: the factor of its main output (the first one used) and that output's bound."""

    node: Node
    factor: Factor
    bound: ValueBound
    output_factors: list[Factor] = field(default_factory=list)


@dataclass
class NetworkBound:
    upper_bound: float | None
    certified: bool
    complete: bool
    outputs: dict[str, float | None]
    layers: list[LayerResult]
    unsupported: list[Blocker] = field(default_factory=list)
    unbounded: list[Blocker] = field(default_factory=list)


def _combine(factor: Factor, inputs: list[ValueBound], node_name: str) -> ValueBound:
    unknown = frozenset().union(*(b.unknown_nodes for b in inputs))
    unbounded = frozenset().union(*(b.unbounded_nodes for b in inputs))
    certified = all(b.certified for b in inputs)
    if factor.status == "unknown":
        return ValueBound(math.nan, False, unknown | {node_name}, unbounded)
    if factor.status == "unbounded":
        return ValueBound(math.inf, False, unknown, unbounded | {node_name})
    if factor.input_weights is not None:
        weights = factor.input_weights
    else:
        weights = [present(factor.value, "the value of a bounded factor")] * len(inputs)
    if len(weights) != len(inputs):
        return ValueBound(math.nan, False, unknown | {node_name}, unbounded)
    terms = [product_up(w, b.value) for w, b in zip(weights, inputs) if w != 0.0]
    value = root_sum_squares(terms) if factor.combine == "rss" else sum(terms)
    if not math.isfinite(value) and all(math.isfinite(b.value) for b in inputs):
        # Finite factors whose product leaves float64: no figure, and this node says why.
        return ValueBound(math.inf, False, unknown, unbounded | {node_name})
    return ValueBound(value, certified and factor.certified, unknown, unbounded)


OVERFLOW_REASON = "the bound overflows float64 here: the product of the finite factors exceeds 1.8e308"


def _blocker_reason(node: Node, index: int, factor: Factor) -> str:
    if index == 0 or len(node.outputs) == 1:
        return factor.reason
    return f"output {index} ('{node.outputs[index]}'): {factor.reason}"


def compose(
    graph: Graph,
    ctx: RuleContext,
    on_node: Callable[[int, int, Node], None] | None = None,
    precomputed: Mapping[Node, list[Factor]] | None = None,
) -> NetworkBound:
    """The bound on every value and on the network. ``precomputed``: nodes' factors computed ahead,
    as ``node_factors(node, ctx)`` gives them (a node it lacks is computed here)."""
    precomputed = precomputed if precomputed is not None else {}
    bounds: dict[str, ValueBound] = {name: ValueBound(1.0) for name in graph.inputs}
    layers: list[LayerResult] = []
    unsupported: list[Blocker] = []
    unbounded: list[Blocker] = []
    nodes = graph.nodes
    for index, node in enumerate(nodes):
        if on_node is not None:
            on_node(index, len(nodes), node)
        variables = graph.variable_inputs(node)
        if not variables:
            # Depends on no input (a constant the loader could not fold): it does not move.
            for out in node.outputs:
                bounds[out] = ValueBound(0.0)
            continue
        factors = precomputed[node] if node in precomputed else node_factors(node, ctx)
        inputs = [bounds.get(name, ValueBound(math.nan, False, frozenset({name}))) for name in variables]
        used = [i for i, out in enumerate(node.outputs) if out and graph.is_used(out)] or [0]
        main = used[0]
        output_bounds = {}
        for i in used:
            factor = factors[i] if i < len(factors) else Factor.unknown(f"output {i} of {node.op_type} has no rule")
            output_bounds[i] = _combine(factor, inputs, node.name)
            if i < len(node.outputs) and node.outputs[i]:
                bounds[node.outputs[i]] = output_bounds[i]
            if i != main and factor is factors[main]:
                continue  # the same failure as the main output's: reported once
            if factor.status == "unknown":
                unsupported.append(Blocker(node.name, node.op_type, _blocker_reason(node, i, factor)))
            elif factor.status == "unbounded":
                unbounded.append(Blocker(node.name, node.op_type, _blocker_reason(node, i, factor)))
            elif node.name in output_bounds[i].unbounded_nodes:
                unbounded.append(Blocker(node.name, node.op_type, OVERFLOW_REASON))
        main_factor = factors[main] if main < len(factors) else factors[0]
        layers.append(LayerResult(node, main_factor, output_bounds[main], factors))

    outputs: dict[str, float | None] = {}
    output_bounds_list = []
    for name in graph.outputs:
        bound = bounds.get(name, ValueBound(0.0))  # an output that is a constant does not move
        output_bounds_list.append(bound)
        outputs[name] = bound.value if bound.finite else None
    complete = not any(b.unknown_nodes for b in output_bounds_list)
    finite = all(b.finite for b in output_bounds_list)
    upper = root_sum_squares(b.value for b in output_bounds_list) if finite else None
    if upper is not None and not math.isfinite(upper):
        unbounded.append(Blocker(graph.outputs[0], "output", OVERFLOW_REASON))
        upper, finite = None, False
    certified = finite and all(b.certified for b in output_bounds_list)
    return NetworkBound(upper, certified, complete, outputs, layers, _unique(unsupported), _unique(unbounded))


def _unique(blockers: list[Blocker]) -> list[Blocker]:
    seen, kept = set(), []
    for blocker in blockers:
        key = (blocker.node, blocker.reason)
        if key not in seen:
            seen.add(key)
            kept.append(blocker)
    return kept
