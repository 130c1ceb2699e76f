"""Elementwise activations: the factor is sup |f'| over the real line; ``run`` is the torch function.

Each activation knows the range [lo, hi] of its slope (rounded outwards at the last digit kept, so
each figure bounds the true one); the factor is max(|lo|, |hi|). Ops whose slope is unbounded, or
that jump, are reported as unbounded with the reason.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env

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
    fn: ClassVar[Callable[[Tensor], Tensor]]

    def slope_range(self, node: Node) -> tuple[float, float]:
        return self.slopes

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        lo, hi = self.slope_range(node)
        return Factor.constant(max(abs(lo), abs(hi)), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return type(self).fn(args[0])


class SlopeWithinOne(Activation):
    summary = "1 (slope within [-1, 1])"


@register
class Relu(SlopeWithinOne):
    exact_in_float = True
    fn = staticmethod(torch.relu)


@register
class Tanh(SlopeWithinOne):
    fn = staticmethod(torch.tanh)


@register
class Softplus(SlopeWithinOne):
    fn = staticmethod(lambda x: F.softplus(x, beta=1.0, threshold=30.0))


@register
class Softsign(SlopeWithinOne):
    fn = staticmethod(lambda x: x / (1 + x.abs()))


@register
class Abs(SlopeWithinOne):
    exact_in_float = True
    slopes = (-1.0, 1.0)
    fn = staticmethod(torch.abs)


@register
class Neg(SlopeWithinOne):
    exact_in_float = True
    slopes = (-1.0, -1.0)
    fn = staticmethod(torch.neg)


@register
class Sin(SlopeWithinOne):
    slopes = (-1.0, 1.0)
    fn = staticmethod(torch.sin)


@register
class Cos(SlopeWithinOne):
    slopes = (-1.0, 1.0)
    fn = staticmethod(torch.cos)


@register
class Atan(SlopeWithinOne):
    fn = staticmethod(torch.atan)


@register
class Asinh(SlopeWithinOne):
    fn = staticmethod(torch.asinh)


@register
class Celu(SlopeWithinOne):
    summary = "1 for alpha > 0 (slope exp(x/alpha) ≤ 1); otherwise unbounded"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        alpha = node.attr_float("alpha")
        if alpha == 0:
            return Factor.unbounded("Celu with alpha = 0 divides by zero: the function is undefined")
        if alpha < 0:
            return Factor.unbounded(f"Celu with alpha = {alpha:g} < 0 has slope exp(x/alpha), unbounded as x → −∞")
        return Factor.constant(1.0, "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return F.celu(args[0], alpha=node.attr_float("alpha"))


@register
class Sigmoid(Activation):
    summary = "1/4"
    slopes = (0.0, 0.25)
    fn = staticmethod(torch.sigmoid)


@register
class Gelu(Activation):
    summary = f"{GELU_SLOPE} (sup of GELU's slope, erf or tanh form)"
    slopes = (-0.1290, GELU_SLOPE)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return F.gelu(args[0], approximate="tanh" if node.attr_str("approximate", "none") == "tanh" else "none")


@register
class Silu(Activation):
    summary = f"{SILU_SLOPE} (sup of x·sigmoid(x)'s slope)"
    slopes = (-0.0999, SILU_SLOPE)
    fn = staticmethod(F.silu)


@register
class Swish(Silu):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        alpha = node.attr_float("alpha", 1.0)
        return args[0] * torch.sigmoid(alpha * args[0])


@register
class Mish(Activation):
    summary = f"{MISH_SLOPE} (sup of Mish's slope)"
    slopes = (-0.1126, MISH_SLOPE)
    fn = staticmethod(F.mish)


@register
class HardSwish(Activation):
    summary = "1.5"
    slopes = (-0.5, HARDSWISH_SLOPE)
    fn = staticmethod(F.hardswish)


@register
class Erf(Activation):
    summary = "2/√π"
    slopes = (0.0, ERF_SLOPE)
    fn = staticmethod(torch.erf)


@register
class LeakyRelu(Activation):
    summary = "max(1, |alpha|), alpha default 0.01"

    def slope_range(self, node: Node) -> tuple[float, float]:
        alpha = node.attr_float("alpha")
        return min(alpha, 1.0), max(alpha, 1.0)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(max(1.0, abs(node.attr_float("alpha"))), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, alpha = args[0], node.attr_float("alpha")
        return torch.where(x >= 0, x, alpha * x)


def _exponential_linear(x: Tensor, alpha: float) -> Tensor:
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


@register
class Elu(Activation):
    summary = "max(1, |alpha|), alpha default 1"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(max(1.0, abs(node.attr_float("alpha"))), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _exponential_linear(args[0], node.attr_float("alpha"))


@register
class Selu(Activation):
    summary = "gamma·max(1, alpha) ≈ 1.7581"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        alpha, gamma = abs(node.attr_float("alpha")), abs(node.attr_float("gamma"))
        return Factor.constant(gamma * max(1.0, alpha) * (1 + 1e-7), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return node.attr_float("gamma") * _exponential_linear(args[0], node.attr_float("alpha"))


@register
class HardSigmoid(Activation):
    summary = "|alpha| (default 0.2)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(abs(node.attr_float("alpha")), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.clamp(node.attr_float("alpha") * args[0] + node.attr_float("beta"), 0.0, 1.0)


@register
class Shrink(Activation):
    summary = "1 when bias = lambd (continuous); otherwise unbounded (it jumps at ±lambd)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        lambd, bias = node.attr_float("lambd"), node.attr_float("bias")
        if lambd < 0 or bias != lambd:
            return Factor.unbounded(f"Shrink jumps by {abs(lambd - bias):g} at ±lambd (bias ≠ lambd)")
        return Factor.constant(1.0, "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        bias, lambd = node.attr_float("bias"), node.attr_float("lambd")
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@register
class PRelu(Activation):
    summary = "max(1, max |slope|)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        slope = ctx.const_input(node, 1)
        if slope is None:
            return Factor.unbounded("PRelu with a variable slope multiplies two variable values")
        return Factor.constant(max(1.0, float(np.abs(slope).max(initial=0.0))), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, slope = args[0], args[1]
        if slope.dim() == 1 and x.dim() > 2 and slope.numel() == x.shape[1] and slope.numel() not in (1, x.shape[-1]):
            slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))  # opset 6: one slope per channel
        return torch.where(x < 0, slope * x, x)


@register
class Clip(Activation):
    summary = "1 in x; a variable min/max weighs √(output entries it feeds)"
    exact_in_float = True
    data_inputs = None

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        # |Δy_i| ≤ max(|Δx_i|, |Δmin_i|, |Δmax_i|) entrywise (after broadcasting), so
        # ‖Δy‖² ≤ Σ over the variable inputs of ‖Δ(broadcast input)‖²; the composer adds the copies.
        positions = [i for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        if positions == [0]:
            return Factor.constant(1.0, "closed-form")
        return Factor.constant(1.0, "closed-form", combine="rss", input_weights=[1.0] * len(positions),
                               note="a variable min/max moves every output it is broadcast to")

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
    """An elementwise op with no global Lipschitz constant: reported as unbounded, with ``why``."""

    certified = False
    why: ClassVar[str] = ""

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(self.why)


class Jumps(NotLipschitz):
    why = "the output jumps (not continuous), so no Lipschitz constant exists"
    summary = f"unbounded: {why}"


class SteepNearZero(NotLipschitz):
    why = "the slope is unbounded near 0"
    summary = f"unbounded: {why}"


class SteepOnDomain(NotLipschitz):
    why = "the slope is unbounded on the op's domain"
    summary = f"unbounded: {why}"


@register
class Exp(NotLipschitz):
    why = "exp has unbounded slope"
    summary = f"unbounded: {why}"
    fn = staticmethod(torch.exp)


for _name, _base, _fn in [
    ("Sign", Jumps, torch.sign), ("Floor", Jumps, torch.floor), ("Ceil", Jumps, torch.ceil),
    ("Round", Jumps, torch.round),
    ("Log", SteepNearZero, torch.log), ("Sqrt", SteepNearZero, torch.sqrt), ("Reciprocal", SteepNearZero, torch.reciprocal),
    ("Tan", SteepOnDomain, torch.tan), ("Sinh", SteepOnDomain, torch.sinh), ("Cosh", SteepOnDomain, torch.cosh),
    ("Acos", SteepOnDomain, torch.acos), ("Asin", SteepOnDomain, torch.asin), ("Acosh", SteepOnDomain, torch.acosh),
    ("Atanh", SteepOnDomain, torch.atanh),
]:
    register(type(_name, (_base,), {"fn": staticmethod(_fn), "__module__": __name__}))


@register
class ThresholdedRelu(Jumps):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return torch.where(x > node.attr_float("alpha"), x, torch.zeros_like(x))


