"""Elementwise activations: the factor is sup |f'| over the real line; ``run`` is the torch function.

Each activation knows the range [lo, hi] of its slope (rounded outwards at the last digit kept, so
each figure bounds the true one); the factor is max(|lo|, |hi|). Ops whose slope is unbounded, or
that jump, are reported as unbounded with the reason.

On a bounded domain (``ctx.ranges``) each entry's input lies in a known interval, and the factor
becomes the largest over the entries of sup |f'| on that entry's interval (``domain_slopes``): a
ReLU that is always off contributes 0, a sigmoid far from 0 is flat, and exp, log, sqrt and the
reciprocal get a finite slope where the interval keeps them away from their blow-up. The interval
of the output (``interval``) comes from the op's own ``run`` at the ends of the input's interval,
for monotone ops, and at the critical points in between for the others.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..intervals.interval import Interval
from ..intervals.jacobian import Jac, JacobianContext, times
from ..intervals.jacobian_rules import monotone_in_magnitude, profile_slope_range
from ..intervals.slopes import SmoothProfile, hardswish_slope_sup, logistic_slope, sech_squared
from ..ir import Node
from .context import RuleContext, tighter_on_domain
from .factor import Factor
from .interval_rules import critical_point_interval
from .registry import Op, register
from .runtime import Env, UnaryTensorFn

FAMILY = "activation"

# The smooth activations' slope ranges are their profiles. (intervals/slopes.py), written once there.
ERF_SLOPE = 1.12838  # 2/√π = 1.1283791…
HARDSWISH_SLOPE = 1.5  # (2x+3)/6 at x = 3


class Activation(Op):
    """f applied entrywise, with slope in ``slopes`` = (lo, hi) everywhere."""

    family = FAMILY
    elementwise = True
    slopes: ClassVar[tuple[float, float]] = (0.0, 1.0)
    fn: ClassVar[UnaryTensorFn]
    still_unbounded: ClassVar[str] = "on the input domain its input's range still reaches where the slope is unbounded"

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        return self.slopes

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        lo, hi = self.slope_range(node)
        return Factor.constant(max(abs(lo), abs(hi)), "closed-form")

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        """sup |f'| over each entry's interval (None: nothing better than the global constant)."""
        return None

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        """[inf f', sup f'] over each entry's interval (Clarke derivatives at kinks included), or None.
        By default the global slope range, cut to ±sup|f'| on the interval (``domain_slopes``)."""
        slopes = self.slope_range(node, ctx)
        if slopes is None:
            return None
        low, high = np.full(x.shape, float(slopes[0])), np.full(x.shape, float(slopes[1]))
        local = self.domain_slopes(node, ctx, x)
        if local is not None:
            low, high = np.maximum(low, -local), np.minimum(high, local)
        return Interval(low, high)

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂f(x) = f'(x)·∂x with f' in its range over the input's range (on the box, tightened)."""
        if jctx.rules.graph.variable_inputs(node) != [node.inputs[0]]:
            return None
        x = jctx.jac(node.inputs[0])
        slopes = self.derivative_range(node, jctx.rules, jctx.box(node.inputs[0]))
        if x is None or slopes is None:
            return None
        return [times(x, slopes)] + [None] * (len(node.outputs) - 1)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        factor = self.global_factor(node, ctx)
        if not ctx.on_domain:
            return factor
        slopes = self.domain_slopes(node, ctx, ctx.range_of(node.inputs[0]))
        if slopes is None:
            return factor
        value = float(np.max(slopes, initial=0.0))
        if not math.isfinite(value):
            if factor.status == "bounded":
                return factor
            return Factor.unbounded(f"{factor.reason}; {self.still_unbounded}")
        return tighter_on_domain(
            factor,
            value,
            "sup of the slope over the input's range",
            input_weights=factor.input_weights,
            combine=factor.combine,
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return type(self).fn(args[0])


def kinked_at_zero(x: Interval, right: float | np.ndarray, left: float | np.ndarray) -> Interval:
    """The derivative range of a function with slope ``right`` above 0 and ``left`` below (entry by
    entry): one of them where x keeps its sign, the hull of both (Clarke) where x may reach 0."""
    may_right, may_left = x.hi >= 0, x.lo <= 0
    right, left = np.broadcast_arrays(np.asarray(right, np.float64), np.asarray(left, np.float64))
    shape = np.broadcast_shapes(x.shape, right.shape)
    may_right, may_left = np.broadcast_to(may_right, shape), np.broadcast_to(may_left, shape)
    right, left = np.broadcast_to(right, shape), np.broadcast_to(left, shape)
    low = np.where(may_right & may_left, np.minimum(right, left), np.where(may_right, right, left))
    high = np.where(may_right & may_left, np.maximum(right, left), np.where(may_right, right, left))
    return Interval(low, high)


def _on_positive_side(x: Interval) -> np.ndarray:
    return x.hi > 0


def _on_negative_side(x: Interval) -> np.ndarray:
    return x.lo < 0


class SlopeWithinOne(Activation):
    summary = "1 (slope within [-1, 1])"


@register
class Relu(SlopeWithinOne):
    exact_in_float = True
    monotone = True
    fn = staticmethod(torch.relu)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _on_positive_side(x).astype(np.float64)  # always off: 0

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        """1 where always on, 0 where always off, [0, 1] (the Clarke derivative at 0) where it may switch."""
        return Interval((x.lo > 0).astype(np.float64), (x.hi > 0).astype(np.float64))


@register
class Tanh(SlopeWithinOne):
    monotone = True
    fn = staticmethod(torch.tanh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return sech_squared(x.mignitude, upper=True)  # 1 − tanh², without cancellation

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        return monotone_in_magnitude(x, lambda a: sech_squared(a, upper=False))


def softplus_cut_is_invisible(beta: float, threshold: float, dtype: Any = np.float32) -> bool:
    """torch's softplus(x; β, t) is log(1 + exp(βx))/β below βx = t and x above: it jumps there by
    (log(1 + exp(t)) − t)/β. Below half a step of the model's float type at x = t/β the jump is
    rounding, and the op is Softplus(βx)/β (the aten converter and the fusion of ONNX's
    Where(βx > t, x, …) both ask). In float64 the default cut (t = 20, a jump of 2e-9) is a real
    step: two inputs around it differ 5.8e5 times more in the output. Any type but float64 is
    measured in float32 steps, the smallest of the others."""
    if beta <= 0:
        return False
    jump = (math.log1p(math.exp(min(threshold, 700.0))) - threshold) / beta
    kind = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    return jump <= float(np.spacing(kind(abs(threshold / beta)))) / 2


@register
class Softplus(SlopeWithinOne):
    monotone = True
    fn = staticmethod(lambda x: F.softplus(x, beta=1.0, threshold=30.0))

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _sigmoid(x.hi)  # the slope σ(x) increases


@register
class Softsign(SlopeWithinOne):
    monotone = True
    fn = staticmethod(lambda x: x / (1 + x.abs()))

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return 1.0 / (1.0 + x.mignitude) ** 2


@register
class Abs(SlopeWithinOne):
    exact_in_float = True
    slopes = (-1.0, 1.0)
    fn = staticmethod(torch.abs)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        x = ctx.range_of(node.inputs[0])
        return [Interval(x.mignitude, x.magnitude)]

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        """1 where the input stays positive, −1 where it stays negative, [−1, 1] where it may reach 0."""
        return kinked_at_zero(x, 1.0, -1.0)


@register
class Neg(SlopeWithinOne):
    exact_in_float = True
    monotone = True  # decreasing: the range is still f at the two ends
    slopes = (-1.0, -1.0)
    fn = staticmethod(torch.neg)


class Periodic(SlopeWithinOne):
    slopes = (-1.0, 1.0)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [Interval.full().intersect(-1.0, 1.0)]


@register
class Sin(Periodic):
    fn = staticmethod(torch.sin)


@register
class Cos(Periodic):
    fn = staticmethod(torch.cos)


@register
class Atan(SlopeWithinOne):
    monotone = True
    fn = staticmethod(torch.atan)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return 1.0 / (1.0 + x.mignitude**2)


@register
class Asinh(SlopeWithinOne):
    monotone = True
    fn = staticmethod(torch.asinh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return 1.0 / np.sqrt(1.0 + x.mignitude**2)


@register
class Celu(SlopeWithinOne):
    summary = "1 for alpha > 0 (slope exp(x/alpha) ≤ 1); otherwise unbounded"
    monotone = True  # for alpha > 0, the only case with a rule

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        alpha = node.attr_float("alpha")
        if alpha == 0:
            return Factor.unbounded("Celu with alpha = 0 divides by zero: the function is undefined")
        if alpha < 0:
            return Factor.unbounded(f"Celu with alpha = {alpha:g} < 0 has slope exp(x/alpha), unbounded as x → −∞")
        return Factor.constant(1.0, "closed-form")

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        alpha = node.attr_float("alpha")
        if alpha <= 0:
            return None
        with np.errstate(over="ignore"):
            return np.where(_on_positive_side(x), 1.0, np.exp(np.minimum(x.hi, 0.0) / alpha))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return super().interval(node, ctx) if node.attr_float("alpha") > 0 else [None]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return F.celu(args[0], alpha=node.attr_float("alpha"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) with full relative accuracy in both tails."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        small = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


@register
class Sigmoid(Activation):
    summary = "1/4"
    slopes = (0.0, 0.25)
    monotone = True
    fn = staticmethod(torch.sigmoid)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return logistic_slope(x.mignitude, upper=True)  # σ(1 − σ), without cancellation

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        return monotone_in_magnitude(x, lambda a: logistic_slope(a, upper=False))


def _gelu_slope(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


_K = math.sqrt(2 / math.pi)


def _gelu_tanh_slope(x: Tensor) -> Tensor:
    t = torch.tanh(_K * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _K * (1 + 3 * 0.044715 * x * x)


def _silu_slope(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _mish_slope(x: Tensor) -> Tensor:
    sp = torch.nn.functional.softplus(x)
    t = torch.tanh(sp)
    return t + x * (1 - t * t) * torch.sigmoid(x)


# The smooth activations' profiles: the slope extremes are the zeros of f″, found by Newton's
# method in float64, |f′| there rounded outwards at 1e-6 (docs/design.md, "Per-op factors").
GELU = SmoothProfile(
    lambda x: torch.nn.functional.gelu(x),
    _gelu_slope,
    ((-1.4142135623730951, 0.128905), (1.4142135623730951, 1.128905)),
    -0.7517915246935644,
    -0.169972,
)
GELU_TANH = SmoothProfile(
    lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    _gelu_tanh_slope,
    ((-1.4185040087908283, 0.128994), (1.4185040087908283, 1.128994)),
    -0.7524614220710162,
    -0.170041,
)
SILU = SmoothProfile(
    torch.nn.functional.silu,
    _silu_slope,
    ((-2.399357280515468, 0.099840), (2.399357280515468, 1.099840)),
    -1.278464542761074,
    -0.278465,
)
MISH = SmoothProfile(
    torch.nn.functional.mish,
    _mish_slope,
    ((-2.256376396360793, 0.112527), (1.4905711794854284, 1.088499)),
    -1.1924312145154954,
    -0.308844,
)


class Smooth(Activation):
    """A smooth activation with a known profile: its slope's extremes and its minimum."""

    def profile(self, node: Node) -> SmoothProfile:
        raise NotImplementedError

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        return self.profile(node).slope_range

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        return self.profile(node).slope_sup(x.lo, x.hi)

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        return profile_slope_range(self.profile(node), x)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [self.profile(node).value_range(ctx.range_of(node.inputs[0]))]


@register
class Gelu(Smooth):
    summary = f"{GELU_TANH.slope_range[1]} (sup of GELU's slope, erf or tanh form)"

    def profile(self, node: Node) -> SmoothProfile:
        return GELU_TANH if node.attr_str("approximate", "none") == "tanh" else GELU

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return F.gelu(args[0], approximate="tanh" if node.attr_str("approximate", "none") == "tanh" else "none")


@register
class Silu(Smooth):
    summary = f"{SILU.slope_range[1]} (sup of x·sigmoid(x)'s slope)"
    fn = staticmethod(F.silu)

    def profile(self, node: Node) -> SmoothProfile:
        return SILU


@register
class Swish(Silu):
    """x·σ(αx) = silu(αx)/α: its slope at x is silu's at αx."""

    def _scaled(self, node: Node, x: Interval) -> tuple[float, Interval]:
        alpha = node.attr_float("alpha", 1.0)
        low, high = alpha * x.lo, alpha * x.hi
        return alpha, Interval(np.minimum(low, high), np.maximum(low, high))

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        alpha, scaled = self._scaled(node, x)
        if alpha == 0:
            return None
        return SILU.slope_sup(scaled.lo, scaled.hi)

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        alpha, scaled = self._scaled(node, x)
        if alpha == 0:
            return Interval.exact(np.full(x.shape, 0.5))
        return profile_slope_range(SILU, scaled)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        alpha, scaled = self._scaled(node, ctx.range_of(node.inputs[0]))
        if alpha <= 0:
            return [None]
        inner = SILU.value_range(scaled)
        return [Interval(inner.lo / alpha, inner.hi / alpha).widened()]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        alpha = node.attr_float("alpha", 1.0)
        return args[0] * torch.sigmoid(alpha * args[0])


@register
class Mish(Smooth):
    summary = f"{MISH.slope_range[1]} (sup of Mish's slope)"
    fn = staticmethod(F.mish)

    def profile(self, node: Node) -> SmoothProfile:
        return MISH


@register
class HardSwish(Activation):
    summary = "1.5"
    slopes = (-0.5, HARDSWISH_SLOPE)
    fn = staticmethod(F.hardswish)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return hardswish_slope_sup(x.lo, x.hi)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [critical_point_interval(self, node, ctx, (-1.5,))]  # decreasing, then increasing


@register
class Erf(Activation):
    summary = "2/√π"
    slopes = (0.0, ERF_SLOPE)
    monotone = True
    fn = staticmethod(torch.erf)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return ERF_SLOPE * np.exp(-(x.mignitude**2))

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        return monotone_in_magnitude(x, lambda a: 2 / math.sqrt(math.pi) * np.exp(-(a**2)))
