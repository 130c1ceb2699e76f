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
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..domain.evaluate import critical_point_interval, endpoint_args, endpoint_outputs, monotone_interval, run_op
from ..domain.interval import Interval, reciprocal
from ..domain.slopes import GELU, GELU_TANH, MISH, SILU, SmoothProfile, hardswish_slope_sup
from ..invariants import present
from ..ir import Node
from .context import DOMAIN_HINT, RuleContext, tighter_on_domain
from .factor import Factor
from .registry import Op, register
from .runtime import Env, UnaryTensorFn

FAMILY = "activation"

# Slope ranges, rounded outwards: GELU erf form [−0.128904…, 1.128904…], tanh form [−0.128993…, 1.128993…]
GELU_SLOPE = 1.1290
SILU_SLOPE = 1.0999  # 1.099839… at x ≈ 2.3994 (and −0.099839… at x ≈ −2.3994)
MISH_SLOPE = 1.0885  # 1.088498… at x ≈ 1.4906 (and −0.112526… at x ≈ −2.2564)
ERF_SLOPE = 1.12838  # 2/√π = 1.1283791…
HARDSWISH_SLOPE = 1.5  # (2x+3)/6 at x = 3


class Activation(Op):
    """f applied entrywise, with slope in ``slopes`` = (lo, hi) everywhere."""

    family = FAMILY
    elementwise = True
    slopes: ClassVar[tuple[float, float]] = (0.0, 1.0)
    fn: ClassVar[UnaryTensorFn]
    still_unbounded: ClassVar[str] = "on the input domain its input's range still reaches where the slope is unbounded"

    def slope_range(self, node: Node) -> tuple[float, float]:
        return self.slopes

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        lo, hi = self.slope_range(node)
        return Factor.constant(max(abs(lo), abs(hi)), "closed-form")

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        """sup |f'| over each entry's interval (None: nothing better than the global constant)."""
        return None

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


@register
class Tanh(SlopeWithinOne):
    monotone = True
    fn = staticmethod(torch.tanh)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / np.cosh(x.mignitude) ** 2  # 1 − tanh², without cancellation


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
        return _sigmoid(x.mignitude) * _sigmoid(-x.mignitude)  # σ(1 − σ), without cancellation


class Smooth(Activation):
    """A smooth activation with a known profile: its slope's extremes and its minimum."""

    def profile(self, node: Node) -> SmoothProfile:
        raise NotImplementedError

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        return self.profile(node).slope_sup(x.lo, x.hi)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [self.profile(node).value_range(ctx.range_of(node.inputs[0]))]


@register
class Gelu(Smooth):
    summary = f"{GELU_SLOPE} (sup of GELU's slope, erf or tanh form)"
    slopes = (-0.1290, GELU_SLOPE)

    def profile(self, node: Node) -> SmoothProfile:
        return GELU_TANH if node.attr_str("approximate", "none") == "tanh" else GELU

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return F.gelu(args[0], approximate="tanh" if node.attr_str("approximate", "none") == "tanh" else "none")


@register
class Silu(Smooth):
    summary = f"{SILU_SLOPE} (sup of x·sigmoid(x)'s slope)"
    slopes = (-0.0999, SILU_SLOPE)
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
    summary = f"{MISH_SLOPE} (sup of Mish's slope)"
    slopes = (-0.1126, MISH_SLOPE)
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


class PiecewiseAtZero(Activation):
    """x for x > 0 and g(x) for x < 0: monotone when g is; else its range has a corner at 0."""

    def increasing(self, node: Node) -> bool:
        return True

    def negative_slope_sup(self, node: Node, x: Interval) -> np.ndarray:
        raise NotImplementedError

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        positive = np.where(_on_positive_side(x), 1.0, 0.0)
        negative = np.where(_on_negative_side(x), self.negative_slope_sup(node, x), 0.0)
        return np.maximum(positive, negative)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        if self.increasing(node):
            return super().interval(node, ctx)
        return [critical_point_interval(self, node, ctx, (0.0,))]


@register
class LeakyRelu(PiecewiseAtZero):
    summary = "max(1, |alpha|), alpha default 0.01"
    monotone = True

    def slope_range(self, node: Node) -> tuple[float, float]:
        alpha = node.attr_float("alpha")
        return min(alpha, 1.0), max(alpha, 1.0)

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(max(1.0, abs(node.attr_float("alpha"))), "closed-form")

    def increasing(self, node: Node) -> bool:
        return node.attr_float("alpha") >= 0

    def negative_slope_sup(self, node: Node, x: Interval) -> np.ndarray:
        return np.full(x.shape, abs(node.attr_float("alpha")))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, alpha = args[0], node.attr_float("alpha")
        return torch.where(x >= 0, x, alpha * x)


def _exponential_linear(x: Tensor, alpha: float) -> Tensor:
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


def _exp_below_zero(x: Interval) -> np.ndarray:
    """sup of exp over the negative part of each interval."""
    return np.exp(np.minimum(x.hi, 0.0))


@register
class Elu(PiecewiseAtZero):
    summary = "max(1, |alpha|), alpha default 1"
    monotone = True

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(max(1.0, abs(node.attr_float("alpha"))), "closed-form")

    def increasing(self, node: Node) -> bool:
        return node.attr_float("alpha") >= 0

    def negative_slope_sup(self, node: Node, x: Interval) -> np.ndarray:
        return abs(node.attr_float("alpha")) * _exp_below_zero(x)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _exponential_linear(args[0], node.attr_float("alpha"))


@register
class Selu(PiecewiseAtZero):
    summary = "gamma·max(1, alpha) ≈ 1.7581"
    monotone = True

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        alpha, gamma = abs(node.attr_float("alpha")), abs(node.attr_float("gamma"))
        return Factor.constant(gamma * max(1.0, alpha) * (1 + 1e-7), "closed-form")

    def increasing(self, node: Node) -> bool:
        return node.attr_float("alpha") >= 0 and node.attr_float("gamma") >= 0

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return abs(node.attr_float("gamma")) * (1 + 1e-7) * super().domain_slopes(node, ctx, x)

    def negative_slope_sup(self, node: Node, x: Interval) -> np.ndarray:
        return abs(node.attr_float("alpha")) * _exp_below_zero(x)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return node.attr_float("gamma") * _exponential_linear(args[0], node.attr_float("alpha"))


@register
class HardSigmoid(Activation):
    summary = "|alpha| (default 0.2)"
    monotone = True  # increasing or decreasing with the sign of alpha

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(abs(node.attr_float("alpha")), "closed-form")

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        # Slope |alpha| where 0 < alpha·x + beta < 1, else 0 (clipped).
        alpha, beta = node.attr_float("alpha"), node.attr_float("beta")
        ends = np.stack([alpha * x.lo + beta, alpha * x.hi + beta])
        flat = (ends.max(axis=0) <= 0) | (ends.min(axis=0) >= 1)
        return np.where(flat, 0.0, abs(alpha))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.clamp(node.attr_float("alpha") * args[0] + node.attr_float("beta"), 0.0, 1.0)


@register
class Shrink(Activation):
    summary = "1 when bias = lambd (continuous); otherwise unbounded (it jumps at ±lambd)"

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        lambd, bias = node.attr_float("lambd"), node.attr_float("bias")
        if lambd < 0 or bias != lambd:
            return Factor.unbounded(f"Shrink jumps by {abs(lambd - bias):g} at ±lambd (bias ≠ lambd)")
        return Factor.constant(1.0, "closed-form")

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        lambd, bias = node.attr_float("lambd"), node.attr_float("bias")
        if lambd < 0 or bias != lambd:
            return None
        return np.where((x.lo >= -lambd) & (x.hi <= lambd), 0.0, 1.0)  # 0 inside the dead zone

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        # Non-decreasing when bias ≤ 2·lambd (each jump goes up); the continuous form is the common one.
        lambd, bias = node.attr_float("lambd"), node.attr_float("bias")
        if lambd >= 0 and bias == lambd:
            return monotone_interval(self, node, ctx, positions=(0,))
        return [None]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        bias, lambd = node.attr_float("bias"), node.attr_float("lambd")
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@register
class PRelu(Activation):
    summary = "max(1, max |slope|)"

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        slope = ctx.const_input(node, 1)
        if slope is None:
            return Factor.unbounded("PRelu with a variable slope multiplies two variable values")
        return Factor.constant(max(1.0, float(np.abs(slope).max(initial=0.0))), "closed-form")

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        if ctx.const_input(node, 1) is None:
            return None
        # The slope broadcasts as the op broadcasts it: f(−1) = −slope, per output entry.
        at_minus_one = endpoint_args(ctx, node, lambda position, interval: np.array(-1.0), (0,))
        if at_minus_one is None:
            return None
        slopes = np.abs(present(run_op(self, node, ctx, at_minus_one)[0], "the output at −1"))
        positive = np.broadcast_to(_on_positive_side(x), slopes.shape)
        negative = np.broadcast_to(_on_negative_side(x), slopes.shape)
        return np.maximum(np.where(positive, 1.0, 0.0), np.where(negative, slopes, 0.0))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [critical_point_interval(self, node, ctx, (0.0,))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, slope = args[0], args[1]
        if slope.dim() == 1 and x.dim() > 2 and slope.numel() == x.shape[1] and slope.numel() not in (1, x.shape[-1]):
            slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))  # opset 6: one slope per channel
        return torch.where(x < 0, slope * x, x)


@register
class Clip(Activation):
    summary = "1 in x; a variable min/max weighs √(output entries it feeds)"
    exact_in_float = True
    monotone = True  # non-decreasing in x, min and max
    data_inputs = None

    def limits(self, node: Node, ctx: RuleContext) -> tuple[np.ndarray, np.ndarray] | None:
        """The constant min and max (±inf when absent); None when either is computed."""
        found = []
        for index, name, default in ((1, "min", -np.inf), (2, "max", np.inf)):
            if index < len(node.inputs) and node.inputs[index]:
                const = ctx.const_input(node, index)
                if const is None:
                    return None
                found.append(np.asarray(const, np.float64))
            else:
                found.append(np.asarray(node.attr_float(name) if node.has_attr(name) else default, np.float64))
        return found[0], found[1]

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        limits = self.limits(node, ctx)
        if limits is None:
            return None
        low, high = limits
        return np.where((x.hi <= low) | (x.lo >= high), 0.0, 1.0)  # clamped all over: constant

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        # |Δy_i| ≤ max(|Δx_i|, |Δmin_i|, |Δmax_i|) entrywise (after broadcasting), so
        # ‖Δy‖² ≤ Σ over the variable inputs of ‖Δ(broadcast input)‖²; the composer adds the copies.
        positions = [i for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        if positions == [0]:
            return Factor.constant(1.0, "closed-form")
        return Factor.constant(
            1.0,
            "closed-form",
            combine="rss",
            input_weights=[1.0] * len(positions),
            note="a variable min/max moves every output it is broadcast to",
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        low = args[1] if len(args) > 1 else None
        high = args[2] if len(args) > 2 else None
        if low is None and node.has_attr("min"):
            low = torch.tensor(node.attr_float("min"), dtype=x.dtype, device=x.device)
        if high is None and node.has_attr("max"):
            high = torch.tensor(node.attr_float("max"), dtype=x.dtype, device=x.device)
        if low is not None:
            x = torch.maximum(x, low.to(x.dtype))
        if high is not None:
            x = torch.minimum(x, high.to(x.dtype))  # min > max gives max, as ONNX says
        return x


class NotLipschitz(Activation):
    """An elementwise op with no global Lipschitz constant: reported as unbounded, with ``why``.

    On a domain, ``domain_slopes`` may still bound it where the input's range keeps clear of the
    blow-up (inf where it does not)."""

    certified = False
    why: ClassVar[str] = ""

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(f"{self.why}; {DOMAIN_HINT}" if self.domain_helps else self.why)

    domain_helps: ClassVar[bool] = True  # on a bounded range the slope is bounded


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

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        x = ctx.range_of(node.inputs[0])
        with np.errstate(invalid="ignore"):
            return [Interval(np.sqrt(np.maximum(x.lo, 0.0)), np.sqrt(x.hi)).widened()]


@register
class Reciprocal(SteepNearZero):
    fn = staticmethod(torch.reciprocal)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray:
        return _where_finite(x.mignitude > 0, lambda: 1.0 / x.mignitude**2)

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
