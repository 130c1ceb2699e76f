"""Each node's factors, one per output, with the checks every rule gets whether or not it thinks of them.

* Side inputs: a variable input the rule does not bound makes the node unknown.
* Copies: when an output has more entries than a variable input, each entry of that input shows
  up several times. Elementwise ops get √(copies) on that input's weight; an op whose rule does
  not say it accounts for the growth cannot be bounded.
* Float32: the runtime evaluates in float32, with weights and scales rounded to float32; every
  certified factor of an op that does arithmetic gets a relative margin of a few float32 ulps, so
  that no certified figure sits below a Jacobian the runtime computes.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from ..intervals.interval import held_as
from ..invariants import present
from ..ir import Graph, Node
from ..ops import Factor, Op, RuleContext, RuleInputError, resolve
from ..spectral.scaling import sqrt_ratio_up

# 8 float32 ulps (2⁻²⁰ ≈ 9.5e-7): rounding of weights, scales and interpolation coefficients to
# float32 moves an operator norm by a few ulps relative.
FLOAT32_MARGIN = 2.0**-20


def float32_margin(graph: Graph) -> float:
    """(1 + FLOAT32_MARGIN) per node whose op computes with coefficients: one that only moves or
    copies entries (``exact_in_float``: Reshape, Transpose, Slice, Identity, …) rounds nothing, so a
    twin that writes a few more of them gets the same figure."""
    ops = (resolve(node, graph.opset_of(node)) for node in graph.nodes)
    computing = sum(1 for op in ops if not getattr(op, "exact_in_float", False))
    return (1.0 + FLOAT32_MARGIN) ** max(1, computing)


def variable_positions(node: Node, ctx: RuleContext) -> list[int]:
    """Positions in ``node.all_inputs`` that depend on the network input (an aliased input counts at
    each position where it appears)."""
    return [i for i, name in enumerate(node.all_inputs) if name and not ctx.graph.is_const(name)]


def node_factors(node: Node, ctx: RuleContext) -> list[Factor]:
    """One factor per output of ``node``, each with the seconds its rule took; never raises for a node
    it cannot bound (that is unknown)."""
    started = time.perf_counter()
    factors = _node_factors(node, ctx)
    seconds = time.perf_counter() - started
    return [replace(factor, seconds=seconds) for factor in factors]


def _node_factors(node: Node, ctx: RuleContext) -> list[Factor]:
    op = resolve(node, ctx.opset(node))
    if op is None:
        # A torch op the loader could not map keeps the converter's reason as a note.
        why = f": {node.notes[0]}" if node.notes else ""
        return [Factor.unknown(f"no rule for {node.label}{why}")] * max(1, len(node.outputs))
    try:
        factors = op.bound_outputs(node, ctx)
    except (RuleInputError, ValueError, KeyError, IndexError, TypeError, ArithmeticError, RuntimeError) as error:
        # RuntimeError: a numerical kernel that failed (an eigensolver on non-finite or huge weights).
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [Factor.unknown(f"{node.op_type} could not be analysed: {first}")] * max(1, len(node.outputs))
    return [_checked(op, node, index, factor, ctx) for index, factor in enumerate(factors)]


def _checked(op: Op, node: Node, index: int, factor: Factor, ctx: RuleContext) -> Factor:
    if factor.status != "bounded":
        return factor
    if not all(math.isfinite(w) for w in [factor.value or 0.0, *(factor.input_weights or [])]):
        return Factor.unbounded(f"the factor of {node.op_type} is not finite (an infinite or NaN parameter)")
    overflow = _overflows_on_domain(op, node, index, ctx)
    if overflow:
        return Factor.unbounded(overflow)
    positions = variable_positions(node, ctx)
    names = node.all_inputs
    if factor.input_weights is None:
        for position in positions:
            if position >= len(node.inputs) or (op.data_inputs is not None and position not in op.data_inputs):
                return Factor.unknown(
                    f"input {position} ('{names[position]}') of {node.op_type} is computed from "
                    "the network input, and the rule only bounds its data input"
                )
        weights = [float(present(factor.value, "the value of a bounded factor"))] * len(positions)
    else:
        weights = list(factor.input_weights)
    if len(weights) != len(positions):
        return Factor.unknown(
            f"the rule for {node.op_type} gives {len(weights)} input weights for {len(positions)} variable inputs"
        )
    try:
        weights = _with_copies(op, node, index, positions, weights, ctx)
    except (_Outgrown, RuleInputError) as why:
        return Factor.unknown(str(why))
    if factor.certified and not (op.exact_in_float or factor.exact):
        weights = [w * (1 + FLOAT32_MARGIN) for w in weights]
        value = None if factor.value is None else factor.value * (1 + FLOAT32_MARGIN)
        return replace(factor, value=value, input_weights=weights)
    return replace(factor, input_weights=weights)


def _overflows_on_domain(op: Op, node: Node, index: int, ctx: RuleContext) -> str:
    """Why the output overflows on the box ("" when it does not): the op's range of it, from finite
    input ranges, reaches past the largest number of the float type the runtime holds it in. The
    runtime's value jumps to inf there (Exp(100·x) past x ≈ 0.887 in float32), a step the slopes of
    the real function do not see."""
    name = node.outputs[index] if index < len(node.outputs) else ""
    if not ctx.on_domain or not name or ctx.range_of(name).is_finite():
        return ""
    dtype = held_as(ctx.graph.metadata.get("elem_types") or {}, name)
    if dtype is None or not all(ctx.range_of(v).is_finite() for v in ctx.graph.variable_inputs(node)):
        return ""
    try:
        computed = op.interval(node, ctx)[index]
    except (RuleInputError, ValueError, KeyError, IndexError, TypeError, ArithmeticError, RuntimeError):
        return ""
    if computed is None or not computed.is_finite():
        return ""
    reach = float(computed.magnitude.max(initial=0.0))
    largest = float(np.finfo(dtype).max)
    if reach <= largest:
        return ""
    return (
        f"its value reaches {reach:.3g} on the input box, past {np.dtype(dtype).name}'s largest number "
        f"({largest:.4g}): the runtime's value jumps to infinity there"
    )


class _Outgrown(Exception):
    pass


def _with_copies(
    op: Op, node: Node, index: int, positions: list[int], weights: list[float], ctx: RuleContext
) -> list[float]:
    if op.resizes:
        return weights
    out_name = node.outputs[index]
    out_shape = ctx.graph.shape(out_name)
    if out_shape is None or not all(d is not None and d >= 0 for d in out_shape):
        if op.elementwise:
            raise _Outgrown(f"the shape of output '{out_name}' of {node.op_type} '{node.name}' is unknown")
        return weights
    out_size = math.prod(out_shape)
    scaled = []
    names = node.all_inputs
    for position, weight in zip(positions, weights):
        in_size = math.prod(ctx.known_shape(node, names[position]))
        if out_size <= in_size or weight == 0.0:
            scaled.append(weight)
        elif op.elementwise:
            scaled.append(weight * sqrt_ratio_up(out_size, max(in_size, 1)))
        else:
            raise _Outgrown(
                f"output '{out_name}' of {node.op_type} has {out_size} entries, more than the "
                f"{in_size} of its input '{names[position]}', and its rule does not account for "
                "the copies"
            )
    return scaled
