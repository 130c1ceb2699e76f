"""Normalisation layers.

BatchNorm at inference is a per-channel affine map. The data-dependent normalisations (Layer,
Instance, Group) divide by a standard deviation that can be as small as √ε, so their only global
bound is max|γ|/√ε: sound, but usually useless, hence the warning.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, cannot_run, positive_axis

FAMILY = "normalization"


def batchnorm_scale(scale: np.ndarray, var: np.ndarray, epsilon: float) -> np.ndarray:
    """The per-channel multiplier γ/√(var+ε) of an inference-mode BatchNorm."""
    return np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)


def _channel_view(t: Tensor, rank: int) -> Tensor:
    return t.reshape((1, -1) + (1,) * (rank - 2)) if t.dim() == 1 else t.unsqueeze(0)


@register
class BatchNormalization(Op):
    family = FAMILY
    resizes = True  # a variable bias or mean weighs √(positions of its channel)
    summary = "max |γ/√(var+ε)| (folded into a preceding Conv/Gemm when possible)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        # Before opset 14 training mode is signalled by the statistics outputs being asked for.
        if node.attr_int("training_mode", 0) or any(node.outputs[1:]):
            return Factor.unbounded("BatchNormalization in training mode normalises by batch statistics")
        scale, var = ctx.const_input(node, 1), ctx.const_input(node, 4)
        if scale is None or var is None:
            return Factor.unbounded("BatchNormalization with variable scale or variance")
        with np.errstate(divide="ignore", invalid="ignore"):
            multiplier = batchnorm_scale(scale, var, node.attr_float("epsilon"))
        if not np.all(np.isfinite(multiplier)):
            return Factor.unbounded("BatchNormalization divides by √(var + ε), which is 0 (or not a number) for "
                                    "some channel")
        gain = float(np.abs(multiplier).max(initial=0.0)) * (1 + 1e-12)
        # A variable bias or mean is added at every position of its channel: √(positions) copies.
        out_shape = ctx.output_shape(node)
        copies = math.sqrt(int(np.prod(out_shape)) // max(1, int(np.prod(np.shape(scale)))))
        per_input = {0: gain, 2: copies, 3: gain * copies}
        weights = [per_input[i] for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        return Factor.constant(gain, "closed-form", input_weights=weights)

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        statistics = Factor.unbounded("BatchNormalization's running statistics are computed in training mode")
        return [self.bound(node, ctx)] + [statistics] * (len(node.outputs) - 1)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        if node.attr_int("training_mode", 0) or any(node.outputs[1:]):
            raise cannot_run(node, "in training mode")
        x, scale, bias, mean, var = args[:5]
        rank = x.dim()
        multiplier = _channel_view(scale, rank) / torch.sqrt(_channel_view(var, rank) + node.attr_float("epsilon"))
        return (x - _channel_view(mean, rank)) * multiplier + _channel_view(bias, rank)


def _bias_copies(ctx: RuleContext, node: Node, name: str) -> float:
    """√(outputs per entry) of a variable bias: each entry is added to that many outputs."""
    shape = ctx.known_shape(node, name)
    return math.sqrt(int(np.prod(ctx.output_shape(node))) // max(1, int(np.prod(shape))))


class DataNormalization(Op):
    family = FAMILY
    resizes = True  # a variable bias weighs √(outputs per entry)
    summary = "max|γ|/√ε: a sound global bound, usually huge (reported with a warning)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        # For centred z, f(z) = z/√(‖z‖²/n + ε) has Jacobian eigenvalues 1/s and ε/s³ with s ≥ √ε.
        scale = ctx.const_input(node, 1)
        if scale is None:
            return Factor.unbounded(f"{node.op_type} with a variable scale multiplies two variable values")
        epsilon = node.attr_float("epsilon")
        if not epsilon > 0:
            return Factor.unbounded(f"{node.op_type} with ε = {epsilon:g} divides by a standard deviation that "
                                    "can be 0: its slope is unbounded near a constant input")
        value = float(np.abs(scale).max(initial=0.0)) / math.sqrt(epsilon) * (1 + 1e-12)
        weights = [value if i == 0 else _bias_copies(ctx, node, name)
                   for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        return Factor.constant(value, "closed-form", input_weights=weights,
                               note=f"warning: {node.op_type} is only {value:.3g}-Lipschitz globally (max|γ|/√ε, "
                                    f"ε={epsilon:g}); its local slope is far smaller")


def _normalised(x: Tensor, dims: tuple[int, ...], epsilon: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x − mean)/√(var + ε), the mean, and 1/√(var + ε), over ``dims``."""
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + epsilon)
    return (x - mean) * inv_std, mean, inv_std


@register
class InstanceNormalization(DataNormalization):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, scale, bias = args[:3]
        normalised, _, _ = _normalised(x, tuple(range(2, x.dim())), node.attr_float("epsilon"))
        return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@register
class LayerNormalization(DataNormalization):
    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        """Y, then Mean (a mean of k entries: 1/√k) and InvStdDev = 1/√(var + ε) of each group.

        ∇(var + ε)^(−1/2) = −(x − μ)/(k·(var + ε)^(3/2)), of norm √var/(√k·(var + ε)^(3/2)), largest
        at var = ε/2: 2/(3√3·ε·√k). Groups are disjoint, so that is the factor of the whole output.
        """
        factors = [self.bound(node, ctx)]
        if len(node.outputs) > 1:
            shape = ctx.input_shape(node)
            k = math.prod(shape[positive_axis(node.attr_int("axis"), len(shape)):])
            factors.append(Factor.constant(1 / math.sqrt(k), "closed-form", note=f"mean of {k} entries"))
        if len(node.outputs) > 2:
            epsilon = node.attr_float("epsilon")
            if epsilon <= 0:
                factors.append(Factor.unbounded("1/√var has unbounded slope when ε = 0"))
            else:
                k = math.prod(shape[positive_axis(node.attr_int("axis"), len(shape)):])
                factors.append(Factor.constant(2 / (3 * math.sqrt(3) * epsilon * math.sqrt(k)), "closed-form"))
        return factors

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, scale = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        axis = positive_axis(node.attr_int("axis"), x.dim())
        normalised, mean, inv_std = _normalised(x, tuple(range(axis, x.dim())), node.attr_float("epsilon"))
        out = normalised * scale
        if bias is not None:
            out = out + bias
        return [out, mean, inv_std][: max(1, len(node.outputs))]


@register
class GroupNormalization(DataNormalization):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, scale, bias = args[:3]
        groups = node.attr_int("num_groups")
        channels = x.shape[1]
        grouped = x.reshape(x.shape[0], groups, -1)
        normalised = _normalised(grouped, (2,), node.attr_float("epsilon"))[0].reshape(x.shape)
        if scale.numel() == groups and groups != channels:  # opset 18: one scale per group
            scale = scale.repeat_interleave(channels // groups)
            bias = bias.repeat_interleave(channels // groups)
        return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@register
class LpNormalization(Op):
    family = FAMILY
    certified = False
    summary = "unbounded: x/‖x‖ has unbounded slope near 0"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded("x/‖x‖ has unbounded slope near 0")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = node.attr_int("axis")
        if node.attr_int("p") == 1:
            return x / x.abs().sum(dim=axis, keepdim=True)
        return x / torch.sqrt((x * x).sum(dim=axis, keepdim=True))
