"""Elementwise activations: the factor is sup |f'| over the real line.

Constants are rounded up at the last digit kept, so each one is an upper bound.
"""

from __future__ import annotations

import numpy as np

from ..ir import Node
from .context import AnalysisContext, RuleInputError, broadcast_copies
from .factor import Factor
from .registry import rule

FAMILY = "activation"

# sup of the slope, rounded up: GELU erf form 1.128904…, tanh form 1.128993…
GELU_SLOPE = 1.1290
SILU_SLOPE = 1.0999  # 1.099839… at x ≈ 2.3994
MISH_SLOPE = 1.0885  # 1.088498… at x ≈ 1.4906
ERF_SLOPE = 1.12838  # 2/√π = 1.1283791…
HARDSWISH_SLOPE = 1.5  # (2x+3)/6 at x = 3


def _fixed(op_types: tuple[str, ...], value: float, summary: str, since: int = 1) -> None:
    def fixed_rule(node: Node, ctx: AnalysisContext) -> Factor:
        return Factor.constant(value, "closed-form")

    rule(*op_types, summary=summary, family=FAMILY, since=since)(fixed_rule)


_fixed(("Relu", "Tanh", "Softplus", "Softsign", "Abs", "Neg", "Sin", "Cos", "Atan", "Asinh",
        "Celu"), 1.0, "1 (slope within [-1, 1])")
_fixed(("Sigmoid",), 0.25, "1/4")
_fixed(("Gelu",), GELU_SLOPE, f"{GELU_SLOPE} (sup of GELU's slope, erf or tanh form)")
_fixed(("Silu", "Swish"), SILU_SLOPE, f"{SILU_SLOPE} (sup of x·sigmoid(x)'s slope)")
_fixed(("Mish",), MISH_SLOPE, f"{MISH_SLOPE} (sup of Mish's slope)")
_fixed(("HardSwish",), HARDSWISH_SLOPE, "1.5")
_fixed(("Erf",), ERF_SLOPE, "2/√π")


@rule("Clip", summary="1 in x; a variable min/max weighs √(output entries it feeds)", family=FAMILY)
def clip(node: Node, ctx: AnalysisContext) -> Factor:
    # |Δy_i| ≤ max(|Δx_i|, |Δmin_i|, |Δmax_i|) entrywise (after broadcasting), so
    # ‖Δy‖² ≤ Σ over the variable inputs of ‖Δ(broadcast input)‖².
    positions = [i for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
    if positions == [0]:
        return Factor.constant(1.0, "closed-form")
    out_shape = ctx.output_shape(node)
    weights = []
    for i in positions:
        shape = ctx.graph.shape(node.inputs[i])
        if shape is None:
            raise RuleInputError(f"the shape of input '{node.inputs[i]}' of Clip '{node.name}' is unknown")
        weights.append(float(np.sqrt(broadcast_copies(tuple(shape), out_shape))))
    return Factor.constant(max(weights), "closed-form", combine="rss", input_weights=weights,
                           note="a variable min/max moves every output it is broadcast to")


@rule("Shrink", summary="1 when bias = lambd (continuous); otherwise unbounded (it jumps at ±lambd)",
      family=FAMILY)
def shrink(node: Node, ctx: AnalysisContext) -> Factor:
    lambd, bias = float(ctx.attr(node, "lambd", 0.5)), float(ctx.attr(node, "bias", 0.0))
    if lambd < 0 or bias != lambd:
        return Factor.unbounded(f"Shrink jumps by {abs(lambd - bias):g} at ±lambd (bias ≠ lambd)")
    return Factor.constant(1.0, "closed-form")


@rule("LeakyRelu", summary="max(1, |alpha|), alpha default 0.01", family=FAMILY)
def leaky_relu(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.constant(max(1.0, abs(ctx.attr(node, "alpha", 0.01))), "closed-form")


@rule("Elu", summary="max(1, |alpha|), alpha default 1", family=FAMILY)
def elu(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.constant(max(1.0, abs(ctx.attr(node, "alpha", 1.0))), "closed-form")


@rule("Selu", summary="gamma·max(1, alpha) ≈ 1.7581", family=FAMILY)
def selu(node: Node, ctx: AnalysisContext) -> Factor:
    alpha = abs(ctx.attr(node, "alpha", 1.67326319217681884765625))
    gamma = abs(ctx.attr(node, "gamma", 1.05070102214813232421875))
    return Factor.constant(gamma * max(1.0, alpha) * (1 + 1e-7), "closed-form")


@rule("HardSigmoid", summary="|alpha| (default 0.2)", family=FAMILY)
def hard_sigmoid(node: Node, ctx: AnalysisContext) -> Factor:
    # The ONNX default is the float32 0.2 (= 0.20000000298…), a hair above 0.2.
    return Factor.constant(abs(ctx.attr(node, "alpha", float(np.float32(0.2)))), "closed-form")


@rule("PRelu", summary="max(1, max |slope|)", family=FAMILY)
def prelu(node: Node, ctx: AnalysisContext) -> Factor:
    slope = ctx.const_input(node, 1)
    if slope is None:
        return Factor.unbounded("PRelu with a variable slope multiplies two variable values")
    return Factor.constant(max(1.0, float(np.abs(slope).max(initial=0.0))), "closed-form")


@rule("Softmax", summary="1/2 (Jacobian diag(p) − ppᵀ, Gershgorin)", family=FAMILY)
def softmax(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.constant(0.5, "closed-form")


@rule("LogSoftmax", summary="√n over the n entries normalised together", family=FAMILY)
def log_softmax(node: Node, ctx: AnalysisContext) -> Factor:
    # J = I − 1pᵀ is idempotent (pᵀ1 = 1), and a projection P ∉ {0, I} has ‖P‖ = ‖I − P‖
    # (Szyld 2006), so ‖J‖ = ‖1pᵀ‖ = √n·‖p‖ ≤ √n.
    shape = ctx.input_shape(node)
    default_axis = -1 if ctx.opset >= 13 else 1
    axis = ctx.attr(node, "axis", default_axis) % len(shape)
    # Before opset 13 the input is coerced to 2-D at `axis`: everything after it is one group.
    n = shape[axis] if ctx.opset >= 13 else int(np.prod(shape[axis:]))
    return Factor.constant(float(np.sqrt(n)) * (1 + 1e-12), "closed-form", note=f"normalised over {n} entries")


def _not_lipschitz(op_types: tuple[str, ...], why: str) -> None:
    def not_lipschitz_rule(node: Node, ctx: AnalysisContext) -> Factor:
        return Factor.unbounded(why)

    rule(*op_types, summary=f"unbounded: {why}", family=FAMILY, certified=False)(not_lipschitz_rule)


_not_lipschitz(("Sign", "Floor", "Ceil", "Round", "Hardmax", "ThresholdedRelu", "ArgMax", "ArgMin"),
               "the output jumps (not continuous), so no Lipschitz constant exists")
_not_lipschitz(("Exp",), "exp has unbounded slope")
_not_lipschitz(("Log", "Sqrt", "Reciprocal"), "the slope is unbounded near 0")
_not_lipschitz(("Tan", "Sinh", "Cosh", "Acos", "Asin", "Acosh", "Atanh"),
               "the slope is unbounded on the op's domain")
