"""Elementwise binary and variadic arithmetic, with numpy broadcasting taken into account.

A variable tensor that broadcasts feeds several output entries, so a change in one entry shows
up several times: its factor gains √(copies).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..ir import Node
from .context import RuleContext, broadcast_gain
from .factor import Factor
from .registry import Op, register
from .runtime import Env, same_kind

FAMILY = "arithmetic"


def _unit_weights(node: Node, ctx: RuleContext) -> list[float]:
    """Weight 1 for each variable input; the composer multiplies in √(copies) where one broadcasts."""
    return [1.0] * len(ctx.graph.variable_inputs(node))


def _powers_of_two(coefficients: np.ndarray) -> bool:
    """Every coefficient is ±2^k or 0: multiplying a float32 by it is exact (short of overflow)."""
    values = np.abs(np.asarray(coefficients, dtype=np.float64)).ravel()
    mantissas, _ = np.frexp(values[values != 0])
    return bool(np.all(mantissas == 0.5))


class Binary(Op):
    family = FAMILY
    elementwise = True
    fn: ClassVar[Callable[[Tensor, Tensor], Tensor]]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return type(self).fn(*same_kind(args[0], args[1]))


class Summing(Binary):
    summary = "sum of the inputs' bounds (√copies where an input broadcasts)"
    data_inputs = None

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        """L(out) ≤ Σ √copies_i · L(x_i); constants only shift the output."""
        return Factor.constant(1.0, "closed-form", input_weights=_unit_weights(node, ctx))


@register
class Add(Summing):
    fn = staticmethod(torch.add)


@register
class Sub(Summing):
    fn = staticmethod(torch.sub)


def _fold(fn: Callable[[Tensor, Tensor], Tensor], args: list[Any]) -> Tensor:
    present = [a for a in args if a is not None]
    out = present[0]
    for other in present[1:]:
        out = fn(*same_kind(out, other))
    return out


@register
class Sum(Summing):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _fold(torch.add, args)


@register
class Mul(Binary):
    summary = "max |c| for a constant c (with broadcasting); two variables: unbounded"
    data_inputs = None
    elementwise = False
    resizes = True  # broadcast_gain counts the copies of x with their coefficients
    fn = staticmethod(torch.mul)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        variables = ctx.graph.variable_inputs(node)
        if len(variables) > 1:
            return Factor.unbounded("Mul of two variable values is not globally Lipschitz")
        const = next(ctx.graph.const(name) for name in node.inputs if ctx.graph.is_const(name))
        gain = broadcast_gain(const, ctx.known_shape(node, variables[0]), ctx.output_shape(node))
        return Factor.constant(gain, "closed-form", exact=_powers_of_two(const))


@register
class Div(Binary):
    summary = "x / c: 1 / min |c|; c / x or two variables: unbounded"
    elementwise = False
    resizes = True  # broadcast_gain counts the copies of x with their coefficients

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        numerator, denominator = node.inputs[:2]
        if not ctx.graph.is_const(denominator):
            return Factor.unbounded("division by a variable value is not globally Lipschitz")
        with np.errstate(divide="ignore"):
            reciprocal = 1.0 / np.asarray(ctx.graph.const(denominator), dtype=np.float64)
        if not np.all(np.isfinite(reciprocal)):
            return Factor.unbounded("division by a constant that contains zero")
        gain = broadcast_gain(reciprocal, ctx.known_shape(node, numerator), ctx.output_shape(node))
        return Factor.constant(gain, "closed-form", exact=_powers_of_two(reciprocal))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        a, b = same_kind(args[0], args[1])
        if a.is_floating_point():
            return a / b
        return torch.div(a, b, rounding_mode="trunc")


@register
class Pow(Binary):
    summary = "x^1: 1; x^p with p > 1 or a variable exponent: unbounded"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        base, exponent = node.inputs[:2]
        exponent_value = ctx.graph.const(exponent)
        if ctx.graph.is_const(base) or exponent_value is None:
            return Factor.unbounded("Pow with a variable exponent is not globally Lipschitz")
        if np.all(exponent_value == 1):
            return Factor.constant(1.0, "closed-form")
        if np.all(exponent_value == 0):
            return Factor.constant(0.0, "closed-form")
        return Factor.unbounded("x^p with p ≠ 0, 1 has unbounded slope (p > 1) or is not Lipschitz at 0 (p < 1)")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        base, exponent = args[0], args[1]
        if base.is_floating_point() and exponent.is_floating_point():
            exponent = exponent.to(base.dtype)
        return torch.pow(base, exponent).to(base.dtype)


class Extreme(Op):
    family = FAMILY
    summary = "elementwise max/min: √(Σ L²) of the variable inputs"
    elementwise = True
    exact_in_float = True
    data_inputs = None
    fn: ClassVar[Callable[[Tensor, Tensor], Tensor]]

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        # |max(a,b) − max(a',b')| ≤ max(|Δa|, |Δb|), so ‖Δ‖² ≤ Σ ‖Δ input‖²; a constant clips like ReLU.
        return Factor.constant(1.0, "closed-form", combine="rss", input_weights=_unit_weights(node, ctx))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _fold(type(self).fn, args)


@register
class Max(Extreme):
    fn = staticmethod(torch.maximum)


@register
class Min(Extreme):
    fn = staticmethod(torch.minimum)
