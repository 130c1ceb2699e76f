"""Elementwise ops with no global Lipschitz constant: they jump (ThresholdedRelu) or their slope
blows up (Exp, Log, Sqrt, Reciprocal, Tan, the hyperbolic and inverse trigonometric ones).

Globally each is reported unbounded with the reason; on a bounded domain (``--input-range``)
the slope's sup over the input's interval bounds it where the interval keeps away from the blow-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from ..intervals.interval import Interval, reciprocal
from ..ir import Node
from .activation import Activation
from .context import DOMAIN_HINT, RuleContext
from .factor import Factor
from .interval_rules import endpoint_outputs, monotone_interval
from .registry import register
from .runtime import Env


class NotLipschitz(Activation):
    """An elementwise op with no global Lipschitz constant: reported as unbounded, with ``why``.

    On a domain, ``domain_slopes`` may still bound it where the input's range keeps clear of the
    blow-up (inf where it does not)."""

    certified = False
    why: ClassVar[str] = ""

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(f"{self.why}; {DOMAIN_HINT}" if self.domain_helps else self.why)

    domain_helps: ClassVar[bool] = True  # on a bounded range the slope is bounded

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float] | None:  # type: ignore[override]
        return None  # no bounded slope: not split by the recursion


def _where_finite(condition: np.ndarray, values: Callable[[], np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(condition, values(), np.inf)


class Jumps(NotLipschitz):
    """A step function. On a domain, a monotone one whose value is the same at both corners of the
    box is constant there: factor 0. Otherwise it jumps inside the box, and stays unbounded."""

    why = "the output jumps (not continuous), so no Lipschitz constant exists"
    summary = f"unbounded: {why}"
    domain_helps = False
    still_unbounded = "on the input domain it still jumps inside its input's range"

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        if not self.monotone:
            return None
        ends = endpoint_outputs(self, node, ctx, decreasing=self.decreasing, positions=self.data_inputs)
        if ends is None or ends[0][0] is None or ends[1][0] is None:
            return None
        constant = bool(np.array_equal(ends[0][0], ends[1][0]))
        return np.zeros(1) if constant else np.full(1, np.inf)


class SteepNearZero(NotLipschitz):
    why = "the slope is unbounded near 0"
    summary = f"unbounded: {why}"
    monotone = True


class SteepOnDomain(NotLipschitz):
    why = "the slope is unbounded on the op's domain"
    summary = f"unbounded: {why}"
    monotone = True


@register
class Exp(NotLipschitz):
    why = "exp has unbounded slope"
    summary = f"unbounded: {why}"
    monotone = True
    fn = staticmethod(torch.exp)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.exp(x.hi)

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        with np.errstate(over="ignore"):
            return Interval(np.exp(x.lo), np.exp(x.hi)).widened()


for _name, _fn in [("Sign", torch.sign), ("Floor", torch.floor), ("Ceil", torch.ceil), ("Round", torch.round)]:
    register(type(_name, (Jumps,), {"fn": staticmethod(_fn), "monotone": True, "__module__": __name__}))


@register
class Log(SteepNearZero):
    fn = staticmethod(torch.log)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(x.lo > 0, lambda: 1.0 / x.lo)


@register
class Sqrt(SteepNearZero):
    fn = staticmethod(torch.sqrt)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(x.lo > 0, lambda: 0.5 / np.sqrt(x.lo))

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        if not np.all(x.lo > 0):
            return None
        return Interval(0.5 / np.sqrt(x.hi), 0.5 / np.sqrt(x.lo)).widened()

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        x = ctx.range_of(node.inputs[0])
        with np.errstate(invalid="ignore"):
            return [Interval(np.sqrt(np.maximum(x.lo, 0.0)), np.sqrt(x.hi)).widened()]


@register
class Reciprocal(SteepNearZero):
    fn = staticmethod(torch.reciprocal)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(x.mignitude > 0, lambda: 1.0 / x.mignitude**2)

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        if not np.all(x.mignitude > 0):
            return None
        with np.errstate(over="ignore"):
            return Interval(-1.0 / x.mignitude**2, -1.0 / x.magnitude**2).widened()

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [reciprocal(ctx.range_of(node.inputs[0]))]


def _within_unit(x: Interval) -> np.ndarray:
    return x.magnitude < 1


@register
class Tan(SteepOnDomain):
    fn = staticmethod(torch.tan)

    @staticmethod
    def _one_branch(x: Interval) -> np.ndarray:
        """Each interval within one branch (−π/2, π/2) + kπ, where tan is continuous and increasing."""
        with np.errstate(invalid="ignore"):
            return np.floor((x.lo + math.pi / 2) / math.pi) == np.floor((x.hi + math.pi / 2) / math.pi)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(self._one_branch(x), lambda: 1 + np.maximum(np.tan(x.lo) ** 2, np.tan(x.hi) ** 2))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        x = ctx.range_of(node.inputs[0])
        return super().interval(node, ctx) if bool(np.all(self._one_branch(x))) else [None]


@register
class Sinh(SteepOnDomain):
    fn = staticmethod(torch.sinh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.cosh(x.magnitude)


@register
class Cosh(SteepOnDomain):
    monotone = False
    fn = staticmethod(torch.cosh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.sinh(x.magnitude)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        x = ctx.range_of(node.inputs[0])
        with np.errstate(over="ignore"):
            return [Interval(np.cosh(x.mignitude), np.cosh(x.magnitude)).widened()]


class InverseTrig(SteepOnDomain):
    """asin, acos: slope ±1/√(1 − x²), steepest at the largest |x|."""

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(_within_unit(x), lambda: 1.0 / np.sqrt(1.0 - x.magnitude**2))


@register
class Acos(InverseTrig):
    fn = staticmethod(torch.acos)


@register
class Asin(InverseTrig):
    fn = staticmethod(torch.asin)


@register
class Acosh(SteepOnDomain):
    fn = staticmethod(torch.acosh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(x.lo > 1, lambda: 1.0 / np.sqrt(x.lo**2 - 1.0))


@register
class Atanh(SteepOnDomain):
    fn = staticmethod(torch.atanh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(_within_unit(x), lambda: 1.0 / (1.0 - x.magnitude**2))


@register
class ThresholdedRelu(Jumps):
    """x above alpha, else 0: it jumps at alpha (unless alpha = 0, where it is a ReLU)."""

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        if node.attr_float("alpha") == 0:
            return Factor.constant(1.0, "closed-form", note="alpha = 0: a ReLU")
        return super().global_factor(node, ctx)

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float] | None:  # type: ignore[override]
        return (0.0, 1.0) if node.attr_float("alpha") == 0 else None

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        alpha = node.attr_float("alpha")
        below, above = x.hi <= alpha, x.lo > alpha
        straddles = ~below & ~above
        return np.where(below, 0.0, np.where(above | (straddles & (alpha == 0)), 1.0, np.inf))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        if node.attr_float("alpha") >= 0:
            return monotone_interval(self, node, ctx, positions=(0,))
        x = ctx.range_of(node.inputs[0])
        return [Interval(np.minimum(x.lo, 0.0), np.maximum(x.hi, 0.0))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return torch.where(x > node.attr_float("alpha"), x, torch.zeros_like(x))
