"""Normalisation layers.

BatchNorm at inference is a per-channel affine map. The data-dependent normalisations (Layer,
Instance, Group) divide by a standard deviation that can be as small as √ε, so their only global
bound is max|γ|/√ε: sound, but usually useless, hence the warning.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Node
from .context import AnalysisContext, RuleInputError
from .factor import Factor
from .registry import rule

FAMILY = "normalization"


def batchnorm_scale(scale: np.ndarray, var: np.ndarray, epsilon: float) -> np.ndarray:
    """The per-channel multiplier γ/√(var+ε) of an inference-mode BatchNorm."""
    return np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)


@rule("BatchNormalization", summary="max |γ/√(var+ε)| (folded into a preceding Conv/Gemm when possible)",
      family=FAMILY)
def batch_norm(node: Node, ctx: AnalysisContext) -> Factor:
    if ctx.attr(node, "training_mode", 0):
        return Factor.unbounded("BatchNormalization in training mode normalises by batch statistics")
    scale, var = ctx.const_input(node, 1), ctx.const_input(node, 4)
    if scale is None or var is None:
        return Factor.unbounded("BatchNormalization with variable scale or variance")
    multiplier = batchnorm_scale(scale, var, float(ctx.attr(node, "epsilon", 1e-5)))
    gain = float(np.abs(multiplier).max(initial=0.0)) * (1 + 1e-12)
    # A variable bias or mean is added at every position of its channel: √(positions) copies.
    out_shape = ctx.output_shape(node)
    copies = math.sqrt(int(np.prod(out_shape)) // max(1, int(np.prod(np.shape(scale)))))
    per_input = {0: gain, 2: copies, 3: gain * copies}
    weights = [per_input[i] for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
    return Factor.constant(gain, "closed-form", input_weights=weights)


def _bias_copies(ctx: AnalysisContext, node: Node, name: str) -> float:
    """√(outputs per entry) of a variable bias: each entry is added to that many outputs."""
    shape = ctx.graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        raise RuleInputError(f"the shape of '{name}' of {node.op_type} '{node.name}' is unknown")
    return math.sqrt(int(np.prod(ctx.output_shape(node))) // max(1, int(np.prod(shape))))


@rule("LayerNormalization", "InstanceNormalization", "GroupNormalization",
      summary="max|γ|/√ε: a sound global bound, usually huge (reported with a warning)", family=FAMILY)
def data_normalization(node: Node, ctx: AnalysisContext) -> Factor:
    # For centred z, f(z) = z/√(‖z‖²/n + ε) has Jacobian eigenvalues 1/s and ε/s³ with s ≥ √ε.
    scale = ctx.const_input(node, 1)
    if scale is None:
        return Factor.unbounded(f"{node.op_type} with a variable scale multiplies two variable values")
    epsilon = float(ctx.attr(node, "epsilon", 1e-5))
    value = float(np.abs(scale).max(initial=0.0)) / math.sqrt(epsilon) * (1 + 1e-12)
    weights = [value if i == 0 else _bias_copies(ctx, node, name)
               for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
    return Factor.constant(value, "closed-form", input_weights=weights,
                           note=f"warning: {node.op_type} is only {value:.3g}-Lipschitz globally (max|γ|/√ε, "
                                f"ε={epsilon:g}); its local slope is far smaller")


@rule("LpNormalization", summary="unbounded: x/‖x‖ has unbounded slope near 0", family=FAMILY, certified=False)
def lp_normalization(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.unbounded("x/‖x‖ has unbounded slope near 0")
