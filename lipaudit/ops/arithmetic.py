"""Elementwise binary and variadic arithmetic, with numpy broadcasting taken into account.

A variable tensor that broadcasts feeds several output entries, so a change in one entry shows
up several times: its factor gains √(copies).

On a bounded domain (``ctx.ranges``) the products and quotients of two variable values, and
powers, become Lipschitz: Δ(uv) = Δu·v + u'·Δv, so ‖Δ(uv)‖ ≤ ‖v‖∞‖Δu‖ + ‖u‖∞‖Δv‖ with the sup
norms taken over the values' ranges (per output entry, with the copies of a broadcast input);
u/v likewise with |Δ(1/v)| ≤ |Δv|/min|v|² on a range that keeps v away from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .. import linear_maps as maps
from ..intervals.interval import Interval, float_product, product, quotient, reciprocal, square
from ..intervals.jacobian import Jac, JacobianContext, combine, expand, times
from ..ir import Node
from ..linear_maps import Barrier, Linear, Reshape, Scale
from .context import DOMAIN_HINT, RuleContext, broadcast_gain, domain_factor
from .factor import Factor
from .interval_rules import monotone_interval
from .linear_part import const
from .registry import Op, register
from .runtime import BinaryTensorFn, Env, same_kind

FAMILY = "arithmetic"


def _weighted_jacobian(node: Node, jctx: JacobianContext, coefficients: dict[int, Interval | None]) -> Jac | None:
    """Σ_i a_i ⊙ ∂x_i over the variable inputs at the positions given, each broadcast to the output,
    a_i in its range on the box (None: exactly 1). None when another input varies."""
    out_shape = jctx.rules.output_shape(node)
    terms = []
    for position, name in enumerate(node.inputs):
        jac = jctx.jac(name) if name else None
        if jac is None:
            continue
        if position not in coefficients:
            return None
        wide = expand(jac, out_shape)
        coefficient = coefficients[position]
        terms.append(wide if coefficient is None else times(wide, coefficient))
    if not terms:
        return None
    return combine(terms)


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
    fn: ClassVar[BinaryTensorFn]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return type(self).fn(*same_kind(args[0], args[1]))


class Summing(Binary):
    summary = "sum of the inputs' bounds (√copies where an input broadcasts)"
    data_inputs = None
    monotone = True
    sums = True

    def coefficients(self, node: Node) -> list[float]:
        """c_i of out = Σ c_i·x_i, one per input position."""
        return [1.0] * len(node.inputs)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        """L(out) ≤ Σ |c_i|·√copies_i·L(x_i); constants only shift the output."""
        coefficients = self.coefficients(node)
        weights = [abs(c) for name, c in zip(node.inputs, coefficients) if name and not ctx.graph.is_const(name)]
        return Factor.constant(max(map(abs, coefficients), default=1.0), "closed-form", input_weights=weights)

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        """Of variables of the output's shape (a residual join), or a variable and a constant that
        does not broadcast it (a bias)."""
        variables = ctx.graph.variable_inputs(node)
        out_shape = ctx.output_shape(node)
        coefficients = self.coefficients(node)
        if any(ctx.graph.shape(name) != out_shape for name in variables):
            return Barrier("it broadcasts a variable input")
        if len(variables) == len(node.inputs):
            return maps.Sum(tuple(coefficients))
        if len(variables) != 1:
            return Barrier("a sum of several variables and a constant")
        coefficient = coefficients[node.inputs.index(variables[0])]
        return Reshape(out_shape) if coefficient == 1.0 else Scale.of(coefficient)

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂(Σ c_i·x_i) = Σ c_i·∂x_i, each broadcast to the output."""
        coefficients = self.coefficients(node)
        weights = {i: None if c == 1.0 else Interval.exact(np.array(c)) for i, c in enumerate(coefficients)}
        return [_weighted_jacobian(node, jctx, weights)]


@register
class Add(Summing):
    fn = staticmethod(torch.add)


@register
class Sub(Summing):
    decreasing = (1,)
    fn = staticmethod(torch.sub)

    def coefficients(self, node: Node) -> list[float]:
        return [1.0, -1.0]


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
class Mean(Summing):
    """(x₁ + … + xₙ)/n: the sum's rule with every input weighed 1/n (Mean(x, x) is x)."""

    summary = "1/n of the sum's bound (n inputs; √copies where an input broadcasts)"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _fold(torch.add, args) / _count(node)

    def coefficients(self, node: Node) -> list[float]:
        return [1.0 / _count(node)] * len(node.inputs)


def _count(node: Node) -> int:
    return len([name for name in node.inputs if name])


def _sup_on_output(ctx: RuleContext, node: Node, values: np.ndarray) -> np.ndarray:
    """Per-entry values broadcast to the output's shape."""
    return np.broadcast_to(values, ctx.output_shape(node))


def _unbounded_range(node: Node, name: str, what: str) -> Factor:
    return Factor.unbounded(
        f"{node.op_type} of two variable values: the range of '{name}' on the input domain "
        f"is {what}, so the product rule gives no finite bound"
    )


@register
class Mul(Binary):
    summary = (
        "max |c| for a constant c (with broadcasting); two variables: unbounded globally, "
        "on a domain ‖v‖∞·L(u) + ‖u‖∞·L(v)"
    )
    data_inputs = None
    elementwise = False
    resizes = True  # broadcast_gain counts the copies of x with their coefficients
    fn = staticmethod(torch.mul)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        variables = ctx.graph.variable_inputs(node)
        if len(variables) > 1:
            if ctx.on_domain:
                return self.product_rule(node, ctx)
            return Factor.unbounded(f"Mul of two variable values is not globally Lipschitz; {DOMAIN_HINT}")
        const = next(c for c in map(ctx.graph.const, node.inputs) if c is not None)
        gain = broadcast_gain(const, ctx.known_shape(node, variables[0]), ctx.output_shape(node))
        return Factor.constant(gain, "closed-form", exact=_powers_of_two(const))

    def product_rule(self, node: Node, ctx: RuleContext) -> Factor:
        """u(x)v(x) − u(x')v(x') = Δu·v(x) + u(x')·Δv: each input's weight is the sup of the other's
        magnitude over its range, per output entry, summed over the copies of a broadcast input."""
        u, v = node.inputs[:2]
        weights = []
        for mine, other in ((u, v), (v, u)):
            magnitude = ctx.range_of(other).magnitude
            if not np.all(np.isfinite(magnitude)):
                return _unbounded_range(node, other, "unbounded")
            weights.append(
                broadcast_gain(
                    _sup_on_output(ctx, node, magnitude), ctx.known_shape(node, mine), ctx.output_shape(node)
                )
            )
        return domain_factor(
            max(weights), "product rule ‖Δ(uv)‖ ≤ ‖v‖∞‖Δu‖ + ‖u‖∞‖Δv‖ with ‖·‖∞ over the ranges", input_weights=weights
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        u, v = node.inputs[:2]
        if u == v:
            return [square(ctx.range_of(u))]
        return [float_product(ctx.range_of(u), ctx.range_of(v))]

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return scaling(node, ctx)

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂(uv) = v ∂u + u ∂v, each factor in its range on the box (a constant: exactly)."""
        u, v = node.inputs[:2]
        return [_weighted_jacobian(node, jctx, {0: jctx.box(v), 1: jctx.box(u)})]


@register
class Div(Binary):
    summary = (
        "x / c: 1 / min |c|; c / x or two variables: unbounded globally, on a domain away from 0 the quotient rule"
    )
    elementwise = False
    resizes = True  # broadcast_gain counts the copies of x with their coefficients

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        numerator, denominator = node.inputs[:2]
        if not ctx.graph.is_const(denominator):
            if ctx.on_domain:
                return self.quotient_rule(node, ctx)
            return Factor.unbounded(f"division by a variable value is not globally Lipschitz; {DOMAIN_HINT}")
        with np.errstate(divide="ignore"):
            reciprocal = 1.0 / np.asarray(ctx.graph.const(denominator), dtype=np.float64)
        if not np.all(np.isfinite(reciprocal)):
            return Factor.unbounded("division by a constant that contains zero")
        gain = broadcast_gain(reciprocal, ctx.known_shape(node, numerator), ctx.output_shape(node))
        return Factor.constant(gain, "closed-form", exact=_powers_of_two(reciprocal))

    def quotient_rule(self, node: Node, ctx: RuleContext) -> Factor:
        """u/v − u'/v' = Δu/v + u'·(1/v − 1/v'), and |1/v − 1/v'| ≤ |Δv|/min|v|² when v and v' lie in
        one interval that excludes 0."""
        numerator, denominator = node.inputs[:2]
        smallest = ctx.range_of(denominator).mignitude
        if not np.all(smallest > 0):
            return Factor.unbounded(f"division by '{denominator}', whose range on the input domain contains 0")
        out_shape = ctx.output_shape(node)
        numerator_size = ctx.range_of(numerator).magnitude
        if not np.all(np.isfinite(numerator_size)):
            return _unbounded_range(node, numerator, "unbounded")
        denominator_weight = broadcast_gain(
            _sup_on_output(ctx, node, numerator_size / smallest**2), ctx.known_shape(node, denominator), out_shape
        )
        weights = [denominator_weight]
        if not ctx.graph.is_const(numerator):
            weights.insert(
                0,
                broadcast_gain(_sup_on_output(ctx, node, 1.0 / smallest), ctx.known_shape(node, numerator), out_shape),
            )
        return domain_factor(
            max(weights), "quotient rule ‖Δ(u/v)‖ ≤ ‖1/v‖∞‖Δu‖ + ‖u/v²‖∞‖Δv‖ over the ranges", input_weights=weights
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        numerator, denominator = node.inputs[:2]
        if ctx.graph.is_const(denominator) and np.asarray(ctx.graph.const(denominator)).dtype.kind != "f":
            return [None]  # integer division truncates
        return [quotient(ctx.range_of(numerator), ctx.range_of(denominator))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        a, b = same_kind(args[0], args[1])
        if a.is_floating_point():
            return a / b
        return torch.div(a, b, rounding_mode="trunc")

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return scaling(node, ctx)

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂(u/v) = ∂u/v − (u/v)(1/v) ∂v, with 1/v and u/v in their ranges on the box."""
        numerator, denominator = node.inputs[:2]
        fixed = jctx.rules.graph.const(denominator)
        if fixed is not None and np.asarray(fixed).dtype.kind != "f":
            return None  # integer division truncates
        inverse = reciprocal(jctx.box(denominator))
        ratio = quotient(jctx.box(numerator), jctx.box(denominator))
        negated = product(ratio, inverse)
        return [_weighted_jacobian(node, jctx, {0: inverse, 1: Interval(-negated.hi, -negated.lo)})]


@register
class Pow(Binary):
    summary = (
        "x^1: 1; x^p with p > 1 or a variable exponent: unbounded globally, on a domain the sup of "
        "|p·x^(p−1)| (c^x: |ln c|·c^x) over the range"
    )

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        factor = self.global_factor(node, ctx)
        if not ctx.on_domain or (factor.status == "bounded" and not ctx.is_variable(node, 1)):
            return factor
        base, exponent = node.inputs[:2]
        if ctx.is_variable(node, 1):
            if ctx.is_variable(node, 0):
                return self._power_on_domain(node, ctx)
            return self._exponential_on_domain(node, ctx)
        p = np.broadcast_to(np.asarray(ctx.graph.const(exponent), np.float64), ctx.output_shape(node))
        x = ctx.range_of(base).broadcast_to(p.shape)
        integral = p == np.round(p)
        if not np.all(integral | (x.lo >= 0)):
            return Factor.unbounded(
                "x^p with a non-integer p is not defined for the negative values the base takes on the input domain"
            )
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            slope = np.abs(p) * np.where(p >= 1, x.magnitude ** (p - 1), x.mignitude ** (p - 1))
        slope = np.where((p == 0), 0.0, np.where(p == 1, 1.0, slope))
        value = float(np.max(slope, initial=0.0))
        if not np.isfinite(value):
            return Factor.unbounded(f"{factor.reason}; on the input domain the base's range still reaches 0")
        return domain_factor(value, "sup of |p·x^(p−1)| over the base's range")

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        base, exponent = node.inputs[:2]
        exponent_value = ctx.graph.const(exponent)
        if ctx.graph.is_const(base) or exponent_value is None:
            return Factor.unbounded(f"Pow with a variable exponent is not globally Lipschitz; {DOMAIN_HINT}")
        if np.all(exponent_value == 1):
            return Factor.constant(1.0, "closed-form")
        if np.all(exponent_value == 0):
            return Factor.constant(0.0, "closed-form")
        return Factor.unbounded(
            f"x^p with p ≠ 0, 1 has unbounded slope (p > 1) or is not Lipschitz at 0 (p < 1); {DOMAIN_HINT}"
        )

    def _power_on_domain(self, node: Node, ctx: RuleContext) -> Factor:
        """x^y with both variable, x > 0 on the box: ∂x = y·x^(y−1) and ∂y = ln x·x^y, each input's
        weight the sup of its partial over the ranges (the product rule's form, as Mul's)."""
        base, exponent = node.inputs[:2]
        shape = ctx.output_shape(node)
        x, y = ctx.range_of(base).broadcast_to(shape), ctx.range_of(exponent).broadcast_to(shape)
        if not np.all(x.lo > 0):
            return Factor.unbounded(
                "x^y of two variable values: the base's range on the input domain reaches 0 or below, where x^y "
                "has unbounded slope or is not defined"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            y_size = y.magnitude
            log_size = np.maximum(np.abs(np.log(x.lo)), np.abs(np.log(x.hi)))
            partials = (y_size * _largest_power(x, y.lo - 1, y.hi - 1), log_size * _largest_power(x, y.lo, y.hi))
        weights = []
        for name, partial in zip((base, exponent), partials):
            if not np.all(np.isfinite(partial)):
                return _unbounded_range(node, name, "too wide for a finite slope")
            weights.append(broadcast_gain(partial * (1 + 1e-12), ctx.known_shape(node, name), shape))
        return domain_factor(
            max(weights), "sup of |y·x^(y−1)| and |ln x·x^y| over the ranges (product-rule form)", input_weights=weights
        )

    def _exponential_on_domain(self, node: Node, ctx: RuleContext) -> Factor:
        """c^x = exp(x·ln c): slope |ln c|·c^x, largest at an end of the range."""
        c = np.broadcast_to(np.asarray(ctx.graph.const(node.inputs[0]), np.float64), ctx.output_shape(node))
        if not np.all(c > 0):
            return Factor.unbounded("c^x with c ≤ 0 is not defined for every real x")
        x = ctx.range_of(node.inputs[1]).broadcast_to(c.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            slope = np.abs(np.log(c)) * np.maximum(c**x.lo, c**x.hi)
        value = float(np.max(np.where(np.isnan(slope), np.inf, slope), initial=0.0))
        if not np.isfinite(value):
            return Factor.unbounded("c^x: the exponent's range on the input domain is unbounded")
        return domain_factor(value, "sup of |ln c|·c^x over the exponent's range", input_weights=[value])

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂(x^p) = p·x^(p−1)·∂x for a constant exponent p, x^(p−1) in its range on the box."""
        base, exponent = node.inputs[:2]
        p = jctx.rules.graph.const(exponent)
        if p is None or jctx.jac(base) is None:
            return None
        p = np.asarray(p, np.float64)
        powers = _power_range(jctx.box(base), p - 1)
        slope = product(powers, Interval.exact(p))
        slope = Interval(np.where(p == 0, 0.0, slope.lo), np.where(p == 0, 0.0, slope.hi))
        return [_weighted_jacobian(node, jctx, {0: slope})]

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        base, exponent = node.inputs[:2]
        if ctx.is_variable(node, 1):
            if ctx.is_variable(node, 0):
                shape = ctx.output_shape(node)
                x, y = ctx.range_of(base).broadcast_to(shape), ctx.range_of(exponent).broadcast_to(shape)
                if not np.all(x.lo > 0):
                    return [None]
                with np.errstate(over="ignore", invalid="ignore"):
                    corners = np.stack([x.lo**y.lo, x.lo**y.hi, x.hi**y.lo, x.hi**y.hi])
                if not np.all(np.isfinite(corners)):
                    return [None]
                return [Interval(corners.min(axis=0), corners.max(axis=0)).widened()]  # monotone in each
            if not np.all(np.asarray(ctx.graph.const(base)) > 0):
                return [None]
            return monotone_interval(self, node, ctx, positions=(1,))  # c^x with c > 0 is monotone
        p = np.asarray(ctx.graph.const(exponent), np.float64)
        return [_power_range(ctx.range_of(base), p)]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        base, exponent = args[0], args[1]
        if base.is_floating_point() and exponent.is_floating_point():
            exponent = exponent.to(base.dtype)
        return torch.pow(base, exponent).to(base.dtype)


def _largest_power(x: Interval, t_lo: np.ndarray, t_hi: np.ndarray) -> np.ndarray:
    """sup of x^t over x in its range (x > 0) and t in [t_lo, t_hi]: x^t is monotone in x for a fixed
    t and in t for a fixed x, so the sup is at a corner."""
    return np.maximum.reduce([x.lo**t_lo, x.lo**t_hi, x.hi**t_lo, x.hi**t_hi])


class Extreme(Op):
    family = FAMILY
    summary = "elementwise max/min: √(Σ L²) of the variable inputs"
    elementwise = True
    exact_in_float = True
    monotone = True
    data_inputs = None
    fn: ClassVar[BinaryTensorFn]

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        # |max(a,b) − max(a',b')| ≤ max(|Δa|, |Δb|), so ‖Δ‖² ≤ Σ ‖Δ input‖²; a constant clips like ReLU.
        return Factor.constant(1.0, "closed-form", combine="rss", input_weights=_unit_weights(node, ctx))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _fold(type(self).fn, args)

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return Barrier(f"{node.op_type} takes one input or another depending on their values")

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        from ..intervals.jacobian_rules import extreme

        return extreme(node, jctx, largest=type(self).fn is torch.maximum)


@register
class Max(Extreme):
    fn = staticmethod(torch.maximum)


@register
class Min(Extreme):
    fn = staticmethod(torch.minimum)


def scaling(node: Node, ctx: RuleContext) -> Linear | Barrier:
    """Mul or Div of one variable by a constant that does not broadcast it: a Scale."""
    variables = ctx.graph.variable_inputs(node)
    if len(variables) != 1 or ctx.graph.shape(variables[0]) != ctx.output_shape(node):
        return Barrier("a product of variables, or one that broadcasts its input")
    index = node.inputs.index(variables[0])
    if node.op_type == "Div" and index != 0:
        return Barrier("a division by a variable")
    constant = np.asarray(const(ctx, node, 1 - index), dtype=np.float64)
    if node.op_type == "Div":
        with np.errstate(divide="ignore"):
            constant = 1.0 / constant
    if not np.all(np.isfinite(constant)):
        return Barrier("a division by zero")
    return Scale.of(constant)


def _power_range(x: Interval, p: np.ndarray) -> Interval:
    """{x^p} over each entry's interval (full where it is not defined or blows up)."""
    # x^p is monotone on each side of 0 (undefined for negative x unless p is an integer).
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ends = np.stack(np.broadcast_arrays(np.power(x.lo, p), np.power(x.hi, p)))
        at_zero = np.broadcast_to(np.power(0.0, p), ends.shape[1:])
    straddles = np.broadcast_to((x.lo < 0) & (x.hi > 0), ends.shape[1:])
    low = np.where(straddles, np.minimum(ends.min(axis=0), at_zero), ends.min(axis=0))
    high = np.where(straddles, np.maximum(ends.max(axis=0), at_zero), ends.max(axis=0))
    # A negative power blows up at 0, towards −inf or +inf by the side: no bound there.
    touches_zero = np.broadcast_to((p < 0) & (x.lo <= 0) & (x.hi >= 0), ends.shape[1:])
    nan = np.isnan(ends).any(axis=0) | (straddles & np.isnan(at_zero)) | touches_zero
    return Interval(np.where(nan, -np.inf, low), np.where(nan, np.inf, high)).widened()
