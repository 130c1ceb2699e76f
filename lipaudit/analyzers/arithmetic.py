"""Elementwise binary arithmetic, with numpy broadcasting taken into account.

A variable tensor that broadcasts feeds several output entries, so a change in one entry shows
up several times: its factor gains √(copies).
"""

from __future__ import annotations

import numpy as np

from ..ir import Node
from .context import AnalysisContext, broadcast_copies, broadcast_gain
from .factor import Factor
from .registry import rule

FAMILY = "arithmetic"


def _padded_shape(ctx: AnalysisContext, name: str) -> tuple[int, ...]:
    const = ctx.graph.const(name)
    if const is not None:
        return tuple(const.shape)
    shape = ctx.graph.shape(name)
    if shape is None:
        raise ValueError(f"the shape of '{name}' is unknown")
    return tuple(shape)


def _sum_of_variables(node: Node, ctx: AnalysisContext) -> Factor:
    """Add/Sub/Sum: L(out) ≤ Σ √copies_i · L(x_i); constants only shift the output."""
    out_shape = ctx.output_shape(node)
    weights = [float(np.sqrt(broadcast_copies(_padded_shape(ctx, name), out_shape)))
               for name in ctx.graph.variable_inputs(node)]
    headline = max(weights, default=1.0)
    return Factor.constant(headline, "closed-form", input_weights=weights)


rule("Add", "Sub", "Sum", summary="sum of the inputs' bounds (√copies where an input broadcasts)",
     family=FAMILY)(_sum_of_variables)


@rule("Mul", summary="max |c| for a constant c (with broadcasting); two variables: unbounded", family=FAMILY,
      data_inputs=None)
def mul(node: Node, ctx: AnalysisContext) -> Factor:
    variables = ctx.graph.variable_inputs(node)
    if len(variables) > 1:
        return Factor.unbounded("Mul of two variable values is not globally Lipschitz")
    const = next(ctx.graph.const(name) for name in node.inputs if ctx.graph.is_const(name))
    gain = broadcast_gain(const, _padded_shape(ctx, variables[0]), ctx.output_shape(node))
    return Factor.constant(gain, "closed-form")


@rule("Div", summary="x / c: 1 / min |c|; c / x or two variables: unbounded", family=FAMILY)
def div(node: Node, ctx: AnalysisContext) -> Factor:
    numerator, denominator = node.inputs[:2]
    if not ctx.graph.is_const(denominator):
        return Factor.unbounded("division by a variable value is not globally Lipschitz")
    with np.errstate(divide="ignore"):
        reciprocal = 1.0 / np.asarray(ctx.graph.const(denominator), dtype=np.float64)
    if not np.all(np.isfinite(reciprocal)):
        return Factor.unbounded("division by a constant that contains zero")
    gain = broadcast_gain(reciprocal, _padded_shape(ctx, numerator), ctx.output_shape(node))
    return Factor.constant(gain, "closed-form")


@rule("Pow", summary="x^1: 1; x^p with p > 1 or a variable exponent: unbounded", family=FAMILY)
def power(node: Node, ctx: AnalysisContext) -> Factor:
    base, exponent = node.inputs[:2]
    exponent_value = ctx.graph.const(exponent)
    if ctx.graph.is_const(base) or exponent_value is None:
        return Factor.unbounded("Pow with a variable exponent is not globally Lipschitz")
    if np.all(exponent_value == 1):
        return Factor.constant(1.0, "closed-form")
    if np.all(exponent_value == 0):
        return Factor.constant(0.0, "closed-form")
    return Factor.unbounded("x^p with p ≠ 0, 1 has unbounded slope (p > 1) or is not Lipschitz at 0 (p < 1)")


@rule("Max", "Min", summary="elementwise max/min: √(Σ L²) of the variable inputs", family=FAMILY)
def elementwise_extreme(node: Node, ctx: AnalysisContext) -> Factor:
    # |max(a,b) − max(a',b')| ≤ max(|Δa|, |Δb|), so ‖Δ‖² ≤ Σ ‖Δ input‖²; a constant clips like ReLU.
    out_shape = ctx.output_shape(node)
    weights = [float(np.sqrt(broadcast_copies(_padded_shape(ctx, name), out_shape)))
               for name in ctx.graph.variable_inputs(node)]
    return Factor.constant(max(weights, default=1.0), "closed-form", combine="rss", input_weights=weights)
