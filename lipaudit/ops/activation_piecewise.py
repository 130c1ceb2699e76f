"""Activations with a kink at 0 or a clip: LeakyReLU, ELU, SELU, HardSigmoid, Shrink, PReLU, Clip.

Piecewise: the slope range is the union of the pieces' (activation.py has the common rule and the
bounded-domain mode); PReLU's slope is a constant input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval
from ..invariants import present
from ..ir import Node
from .activation import Activation, _on_negative_side, _on_positive_side, kinked_at_zero
from .context import RuleContext
from .factor import Factor
from .interval_rules import critical_point_interval, endpoint_args, monotone_interval, run_op
from .registry import register
from .runtime import Env


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

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        alpha = node.attr_float("alpha")
        return min(alpha, 1.0), max(alpha, 1.0)

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(max(1.0, abs(node.attr_float("alpha"))), "closed-form")

    def increasing(self, node: Node) -> bool:
        return node.attr_float("alpha") >= 0

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval:
        """1 where the input stays positive, alpha where it stays negative, both where it may reach 0."""
        return kinked_at_zero(x, 1.0, node.attr_float("alpha"))

    def negative_slope_sup(self, node: Node, x: Interval) -> np.ndarray:
        return np.full(x.shape, abs(node.attr_float("alpha")))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, alpha = args[0], node.attr_float("alpha")
        return torch.where(x >= 0, x, alpha * x)


def _exponential_linear(x: Tensor, alpha: float) -> Tensor:
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


def _exponential_linear_slopes(gamma: float, alpha: float) -> tuple[float, float]:
    """Slopes of gamma·x (x > 0) and gamma·alpha·(e^x − 1) (x ≤ 0): gamma, and gamma·alpha·e^x,
    which sweeps (0, gamma·alpha]."""
    ends = (gamma, 0.0, gamma * alpha)
    return min(ends), max(ends)


def _exp_below_zero(x: Interval) -> np.ndarray:
    """sup of exp over the negative part of each interval."""
    return np.exp(np.minimum(x.hi, 0.0))


@register
class Elu(PiecewiseAtZero):
    summary = "max(1, |alpha|), alpha default 1"
    monotone = True

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        return _exponential_linear_slopes(1.0, node.attr_float("alpha"))

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

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        lo, hi = _exponential_linear_slopes(node.attr_float("gamma"), node.attr_float("alpha"))
        return lo * (1 + 1e-7) if lo < 0 else lo, hi * (1 + 1e-7)

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

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        alpha = node.attr_float("alpha")  # slope alpha inside the linear zone, 0 where clipped
        return min(0.0, alpha), max(0.0, alpha)

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
        if lambd < 0 and bias == 0:
            return Factor.constant(1.0, "closed-form", note="lambd < 0 and bias 0: the identity")
        if lambd < 0:
            # The branches overlap: x + bias below −lambd, x − bias from there on.
            return Factor.unbounded(f"Shrink jumps by {2 * abs(bias):g} at −lambd (lambd < 0, bias ≠ 0)")
        if bias != lambd:
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

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float]:
        """Slope 1 for x ≥ 0 and each constant slope value below: every quotient lies between them."""
        slope = None if ctx is None else ctx.const_input(node, 1)
        if slope is None:
            raise ValueError("PRelu's slope range comes from its constant slope input")
        slope = np.asarray(slope, dtype=np.float64)
        return min(1.0, float(slope.min(initial=1.0))), max(1.0, float(slope.max(initial=1.0)))

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        slope = ctx.const_input(node, 1)
        if slope is None:
            return Factor.unbounded("PRelu with a variable slope multiplies two variable values")
        return Factor.constant(max(1.0, float(np.abs(slope).max(initial=0.0))), "closed-form")

    def negative_slopes(self, node: Node, ctx: RuleContext) -> np.ndarray | None:
        """The slope below 0 of each output entry, broadcast as the op broadcasts it (−f(−1)); None
        for a variable slope."""
        if ctx.const_input(node, 1) is None:
            return None
        at_minus_one = endpoint_args(ctx, node, lambda position, interval: np.array(-1.0), (0,))
        if at_minus_one is None:
            return None
        return -np.asarray(present(run_op(self, node, ctx, at_minus_one)[0], "the output at −1"), np.float64)

    def domain_slopes(self, node: Node, ctx: RuleContext, x: Interval) -> np.ndarray | None:
        slopes = self.negative_slopes(node, ctx)
        if slopes is None:
            return None
        slopes = np.abs(slopes)
        positive = np.broadcast_to(_on_positive_side(x), slopes.shape)
        negative = np.broadcast_to(_on_negative_side(x), slopes.shape)
        return np.maximum(np.where(positive, 1.0, 0.0), np.where(negative, slopes, 0.0))

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        """1 where the input stays positive, the entry's own slope where it stays negative, both where
        it may reach 0."""
        slopes = self.negative_slopes(node, ctx)
        return None if slopes is None else kinked_at_zero(x, 1.0, slopes)

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

    def derivative_range(self, node: Node, ctx: RuleContext, x: Interval) -> Interval | None:
        """1 where the input stays strictly between the limits, 0 where it stays clamped, [0, 1] where
        it may reach a limit (the Clarke derivative there)."""
        limits = self.limits(node, ctx)
        if limits is None:
            return None
        low, high = limits
        if np.any(low > high):
            return super().derivative_range(node, ctx, x)  # min > max gives max: a constant, kept general
        inside = (x.hi >= low) & (x.lo <= high)
        clamped = (x.lo <= low) | (x.hi >= high)
        return Interval(np.where(clamped, 0.0, 1.0), np.where(inside, 1.0, 0.0))

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
