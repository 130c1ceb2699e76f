"""Normalisation layers.

BatchNorm at inference is a per-channel affine map. The data-dependent normalisations (Layer,
Instance, Group) divide by a standard deviation that can be as small as √ε, so their only global
bound is max|γ|/√ε: sound, but usually useless, hence the warning.

On a domain the Jacobian of z = (x − μ)/√(σ² + ε) has norm 1/√(σ²(x) + ε) (singular values 1/s,
ε/s³ and 0), so over the box the factor is max|γ|/√(σ²_min + ε), σ²_min the smallest variance of a
group over its box (exact, often 0: then the figure is the global one). RMSNorm (x/√(mean x² + ε))
likewise with the smallest mean square. ``Normalize`` (domain "lipaudit") is the core z that the
FuseNormalization pass makes of a decomposed LayerNorm or RMSNorm; its γ and β stay separate nodes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval, product, quotient
from ..intervals.jacobian import Jac, JacobianContext, times
from ..intervals.jacobian_rules import normalized
from ..intervals.normalize import (
    grouped,
    mean_square_bounds,
    normalized_range,
    ungrouped,
    variance_lower_bound,
    variance_upper_bound,
)
from ..ir import Node
from ..linear_maps import Barrier, Linear, Scale
from .context import DOMAIN_HINT, RuleContext, tighter_on_domain
from .factor import Factor
from .linear_part import const, variable_at
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
            return Factor.unbounded(
                "BatchNormalization divides by √(var + ε), which is 0 (or not a number) for some channel"
            )
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

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        """y = m·x + (bias − m·mean) per channel, m = γ/√(var + ε): center ± |m|·radius."""
        params = [ctx.const_input(node, i) for i in range(1, 5)]
        if any(p is None for p in params) or node.attr_int("training_mode", 0) or any(node.outputs[1:]):
            return [None] * len(node.outputs)
        scale, bias, mean, var = (np.asarray(p, np.float64) for p in params)
        x = ctx.range_of(node.inputs[0])
        rank = len(ctx.input_shape(node))
        view = (1, -1) + (1,) * (rank - 2) if scale.ndim == 1 else (1,) + scale.shape
        multiplier = batchnorm_scale(scale, var, node.attr_float("epsilon")).reshape(view)
        shift = bias.reshape(view) - multiplier * mean.reshape(view)
        scaled = product(x, Interval.exact(multiplier))
        return [Interval(scaled.lo + shift, scaled.hi + shift).widened(np.abs(shift) + scaled.magnitude)]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        if node.attr_int("training_mode", 0) or any(node.outputs[1:]):
            raise cannot_run(node, "in training mode")
        x, scale, bias, mean, var = args[:5]
        rank = x.dim()
        multiplier = _channel_view(scale, rank) / torch.sqrt(_channel_view(var, rank) + node.attr_float("epsilon"))
        return (x - _channel_view(mean, rank)) * multiplier + _channel_view(bias, rank)

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        scale, var = const(ctx, node, 1), const(ctx, node, 4)
        if scale is None or var is None or not variable_at(ctx, node, 0) or node.attr_int("training_mode", 0):
            return Barrier("BatchNormalization with variable statistics")
        rank = len(ctx.input_shape(node))
        return Scale.of(batchnorm_scale(scale, var, node.attr_float("epsilon")).reshape((-1,) + (1,) * (rank - 2)))


def _bias_copies(ctx: RuleContext, node: Node, name: str) -> float:
    """√(outputs per entry) of a variable bias: each entry is added to that many outputs."""
    shape = ctx.known_shape(node, name)
    return math.sqrt(int(np.prod(ctx.output_shape(node))) // max(1, int(np.prod(shape))))


class DataNormalization(Op):
    family = FAMILY
    resizes = True  # a variable bias weighs √(outputs per entry)
    # True: z = (x − μ)/√(σ² + ε); False (RMSNorm): z = x/√(mean x² + ε), which has the same global
    # factor (the Jacobian's singular values are again 1/s and ε/s³) and on a box reads the mean square.
    centred: ClassVar[bool] = True
    summary = (
        "max|γ|/√ε: a sound global bound, usually huge (reported with a warning); on a domain max|γ|/√(σ²_min + ε)"
    )

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        factor = self.global_factor(node, ctx)
        scale = ctx.const_input(node, 1)
        if not ctx.on_domain or scale is None:
            return factor
        gains = self.group_gains(node, ctx, np.abs(np.asarray(scale, np.float64)))
        if gains is None:
            return factor
        value = float(np.max(gains, initial=0.0)) * (1 + 1e-12)
        if not math.isfinite(value):
            return factor
        weights = [
            value if i == 0 else _bias_copies(ctx, node, name)
            for i, name in enumerate(node.inputs)
            if name and not ctx.graph.is_const(name)
        ]
        return tighter_on_domain(
            factor,
            value,
            "max|γ|/√(σ²_min + ε), σ²_min the smallest variance of each group over the input's range",
            input_weights=weights,
        )

    def global_factor(self, node: Node, ctx: RuleContext) -> Factor:
        # For centred z, f(z) = z/√(‖z‖²/n + ε) has Jacobian eigenvalues 1/s and ε/s³ with s ≥ √ε.
        scale = ctx.const_input(node, 1)
        if scale is None:
            return Factor.unbounded(f"{node.op_type} with a variable scale multiplies two variable values")
        epsilon = node.attr_float("epsilon")
        if not epsilon > 0:
            return Factor.unbounded(
                f"{node.op_type} with ε = {epsilon:g} divides by a standard deviation that "
                "can be 0: its slope is unbounded near a constant input"
            )
        value = float(np.abs(scale).max(initial=0.0)) / math.sqrt(epsilon) * (1 + 1e-12)
        weights = [
            value if i == 0 else _bias_copies(ctx, node, name)
            for i, name in enumerate(node.inputs)
            if name and not ctx.graph.is_const(name)
        ]
        return Factor.constant(
            value,
            "closed-form",
            input_weights=weights,
            note=f"warning: {node.op_type} is only {value:.3g}-Lipschitz globally (max|γ|/√ε, "
            f"ε={epsilon:g}); its local slope is far smaller",
        )

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂y = γ ⊙ ∂z, z the normalised input (lipaudit.intervals.jacobian_rules.normalized)."""
        scale = jctx.rules.const_input(node, 1)
        if scale is None or not jctx.rules.graph.variable_inputs(node) == [node.inputs[0]]:
            return None
        shape = jctx.rules.input_shape(node)
        view, axes = self.grouping(node, shape)
        z = _normalised_jacobian(node, jctx, view, axes, self.centred, node.attr_float("epsilon"))
        if z is None:
            return None
        gamma = np.broadcast_to(self.channel_values(node, np.asarray(scale, np.float64), shape), shape)
        return [times(z, Interval.exact(gamma))] + [None] * (len(node.outputs) - 1)

    # How the op groups its input: the grouped view's shape and the axes normalised together; and
    # how |γ| (or γ) spreads over those groups.
    def grouping(self, node: Node, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def channel_values(self, node: Node, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A per-channel (or per-normalised-entry) parameter broadcast to the input's shape."""
        return np.broadcast_to(_channel_array(values, len(shape)), shape)

    def group_gains(self, node: Node, ctx: RuleContext, abs_scale: np.ndarray) -> np.ndarray | None:
        """max|γ| over each group's entries / √(σ²_min + ε) of that group."""
        shape = ctx.input_shape(node)
        view, axes = self.grouping(node, shape)
        x = ctx.range_of(node.inputs[0]).broadcast_to(shape).reshape(view)
        lo, hi = grouped(x, view, axes)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return None
        gamma = np.broadcast_to(self.channel_values(node, abs_scale, shape), shape).reshape(view)
        gamma_lo, _ = grouped(Interval.exact(gamma), view, axes)
        variance = variance_lower_bound(lo, hi) if self.centred else mean_square_bounds(lo, hi)[0]
        with np.errstate(divide="ignore"):
            return gamma_lo.max(axis=1) / np.sqrt(variance + node.attr_float("epsilon"))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        scale = ctx.const_input(node, 1)
        bias = ctx.const_input(node, 2) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(1)
        if scale is None or bias is None:
            return [None] * len(node.outputs)
        shape = ctx.input_shape(node)
        view, axes = self.grouping(node, shape)
        x = ctx.range_of(node.inputs[0]).broadcast_to(shape).reshape(view)
        lo, hi = grouped(x, view, axes)
        z_lo, z_hi = normalized_range(lo, hi, node.attr_float("epsilon"), self.centred)
        z = Interval(ungrouped(z_lo, view, axes).reshape(shape), ungrouped(z_hi, view, axes).reshape(shape))
        gamma = self.channel_values(node, np.asarray(scale, np.float64), shape)
        beta = self.channel_values(node, np.asarray(bias, np.float64), shape)
        scaled = product(z, Interval.exact(gamma))
        return [Interval(scaled.lo + beta, scaled.hi + beta).widened(np.abs(beta))] + [None] * (len(node.outputs) - 1)


def _normalised_jacobian(
    node: Node, jctx: JacobianContext, view: tuple[int, ...], axes: tuple[int, ...], centred: bool, epsilon: float
) -> Jac | None:
    """∂z of the normalised input (z = (x − μ)/σ, or x/rms), in the input's shape."""
    shape = jctx.rules.input_shape(node)
    z = normalized(jctx, node.inputs[0], shape, view, axes, epsilon, centred)
    return None if z is None else z.map(lambda t: t.reshape((t.shape[0],) + shape))


def _channel_array(values: np.ndarray, rank: int) -> np.ndarray:
    return values.reshape((1, -1) + (1,) * (rank - 2)) if values.ndim == 1 else values[None]


def _normalised(x: Tensor, dims: tuple[int, ...], epsilon: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x − mean)/√(var + ε), the mean, and 1/√(var + ε), over ``dims``."""
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + epsilon)
    return (x - mean) * inv_std, mean, inv_std


def _rms_normalised(x: Tensor, dims: tuple[int, ...], epsilon: float) -> Tensor:
    """x/√(mean x² + ε) over ``dims``."""
    return x * torch.rsqrt((x * x).mean(dim=dims, keepdim=True) + epsilon)


@register
class InstanceNormalization(DataNormalization):
    def grouping(self, node: Node, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return shape, tuple(range(2, len(shape)))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, scale, bias = args[:3]
        normalised, _, _ = _normalised(x, tuple(range(2, x.dim())), node.attr_float("epsilon"))
        return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@register
class LayerNormalization(DataNormalization):
    def grouping(self, node: Node, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return shape, tuple(range(positive_axis(node.attr_int("axis"), len(shape)), len(shape)))

    def channel_values(self, node: Node, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(values, shape)  # γ spans the normalised (trailing) axes

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        """Y, then Mean ∈ [mean lo, mean hi] and InvStdDev ∈ [1/√(σ²_max + ε), 1/√(σ²_min + ε)]."""
        found = super().interval(node, ctx)
        if len(node.outputs) < 2:
            return found
        shape = ctx.input_shape(node)
        _, axes = self.grouping(node, shape)
        kept = tuple(1 if a in axes else d for a, d in enumerate(shape))
        lo, hi = grouped(ctx.range_of(node.inputs[0]).broadcast_to(shape), shape, axes)
        mean = Interval(lo.mean(axis=1).reshape(kept), hi.mean(axis=1).reshape(kept)).widened(
            np.maximum(np.abs(lo), np.abs(hi)).mean(axis=1).reshape(kept)
        )
        epsilon = node.attr_float("epsilon")
        with np.errstate(divide="ignore"):
            inverse = Interval(
                1 / np.sqrt(variance_upper_bound(lo, hi) + epsilon), 1 / np.sqrt(variance_lower_bound(lo, hi) + epsilon)
            ).widened()
        return [found[0], mean, Interval(inverse.lo.reshape(kept), inverse.hi.reshape(kept))][: len(node.outputs)]

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        """Y, then Mean (a mean of k entries: 1/√k) and InvStdDev = 1/√(var + ε) of each group.

        ∇(var + ε)^(−1/2) = −(x − μ)/(k·(var + ε)^(3/2)), of norm √var/(√k·(var + ε)^(3/2)), largest
        at var = ε/2: 2/(3√3·ε·√k). Groups are disjoint, so that is the factor of the whole output.
        """
        factors = [self.bound(node, ctx)]
        if len(node.outputs) > 1:
            shape = ctx.input_shape(node)
            k = math.prod(shape[positive_axis(node.attr_int("axis"), len(shape)) :])
            factors.append(Factor.constant(1 / math.sqrt(k), "closed-form", note=f"mean of {k} entries"))
        if len(node.outputs) > 2:
            epsilon = node.attr_float("epsilon")
            if epsilon <= 0:
                factors.append(Factor.unbounded("1/√var has unbounded slope when ε = 0"))
            else:
                k = math.prod(shape[positive_axis(node.attr_int("axis"), len(shape)) :])
                factor = Factor.constant(2 / (3 * math.sqrt(3) * epsilon * math.sqrt(k)), "closed-form")
                if ctx.on_domain:
                    factor = self._inverse_std_on_domain(node, ctx, factor, k)
                factors.append(factor)
        return factors

    def _inverse_std_on_domain(self, node: Node, ctx: RuleContext, factor: Factor, k: int) -> Factor:
        """√v/(√k(v + ε)^{3/2}) rises up to v = ε/2 and falls after: its sup over [σ²_min, σ²_max]."""
        shape = ctx.input_shape(node)
        lo, hi = grouped(ctx.range_of(node.inputs[0]).broadcast_to(shape), shape, self.grouping(node, shape)[1])
        epsilon = node.attr_float("epsilon")
        v = np.clip(epsilon / 2, variance_lower_bound(lo, hi), variance_upper_bound(lo, hi))
        value = float(np.max(np.sqrt(v) / (math.sqrt(k) * (v + epsilon) ** 1.5), initial=0.0)) * (1 + 1e-9)
        return tighter_on_domain(factor, value, "sup of |∇ 1/√(σ² + ε)| over the variances the input's range allows")

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
class RMSNormalization_23(LayerNormalization):
    """x/√(mean x² + ε)·γ over the axes from ``axis`` on (no mean taken out, no bias, one output)."""

    centred = False
    summary = "max|γ|/√ε: a sound global bound, usually huge (warning); on a domain max|γ|/√(mean-square_min + ε)"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, scale = args[0], args[1]
        dims = tuple(range(positive_axis(node.attr_int("axis"), x.dim()), x.dim()))
        return _rms_normalised(x, dims, node.attr_float("epsilon")) * scale


@register
class GroupNormalization(DataNormalization):
    def grouping(self, node: Node, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        groups = node.attr_int("num_groups")
        return (shape[0], groups, int(np.prod(shape[1:])) // groups), (2,)

    def channel_values(self, node: Node, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        groups, channels = node.attr_int("num_groups"), shape[1]
        values = values.reshape(-1)
        if values.size == groups and groups != channels:  # opset 18: one scale per group
            values = np.repeat(values, channels // groups)
        return np.broadcast_to(_channel_array(values, len(shape)), shape)

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
    summary = "unbounded: x/‖x‖ has unbounded slope near 0; on a domain away from 0: 1/min‖x‖ (p = 2)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        if ctx.on_domain:
            smallest = self._smallest_norm(node, ctx)
            if smallest is not None and smallest > 0:
                n = self._group(node, ctx)[1]
                # p = 2: J = (I − ẑẑᵀ)/‖x‖, norm 1/‖x‖. p = 1: J = (I − z·sign(x)ᵀ)/‖x‖₁, norm ≤ (1 + √n)/‖x‖₁.
                value = 1 / smallest if node.attr_int("p") == 2 else (1 + math.sqrt(n)) / smallest
                return tighter_on_domain(
                    Factor.unbounded(""), value * (1 + 1e-9), f"the input's range keeps ‖x‖ ≥ {smallest:.4g}"
                )
        return Factor.unbounded(f"x/‖x‖ has unbounded slope near 0; {DOMAIN_HINT}")

    def _group(self, node: Node, ctx: RuleContext) -> tuple[tuple[int, ...], int]:
        shape = ctx.input_shape(node)
        return shape, shape[positive_axis(node.attr_int("axis"), len(shape))]

    def _norm_bounds(self, node: Node, ctx: RuleContext) -> tuple[np.ndarray, np.ndarray] | None:
        if node.attr_int("p") not in (1, 2):
            return None
        shape, _ = self._group(node, ctx)
        axis = positive_axis(node.attr_int("axis"), len(shape))
        x = ctx.range_of(node.inputs[0]).broadcast_to(shape)
        small, large = x.mignitude, x.magnitude
        if node.attr_int("p") == 1:
            return small.sum(axis=axis, keepdims=True), large.sum(axis=axis, keepdims=True)
        return np.sqrt((small**2).sum(axis=axis, keepdims=True)), np.sqrt((large**2).sum(axis=axis, keepdims=True))

    def _smallest_norm(self, node: Node, ctx: RuleContext) -> float | None:
        found = self._norm_bounds(node, ctx)
        return None if found is None else float(np.min(found[0], initial=np.inf)) * (1 - 1e-9)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        found = self._norm_bounds(node, ctx)
        if found is None:
            return [None]
        low, high = found
        x = ctx.range_of(node.inputs[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = Interval(low * (1 - 1e-9), high * (1 + 1e-9))
            return [quotient(x, norm).intersect(-1.0, 1.0)]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = node.attr_int("axis")
        if node.attr_int("p") == 1:
            return x / x.abs().sum(dim=axis, keepdim=True)
        return x / torch.sqrt((x * x).sum(dim=axis, keepdim=True))


@register
class Normalize(Op):
    """z = (x − mean)/√(var + ε) (centered = 1, LayerNorm's core) or x/√(mean x² + ε) (centered = 0,
    RMSNorm's), over ``axes``: what FuseNormalization makes of the decomposed forms."""

    domain = "lipaudit"
    family = FAMILY
    summary = (
        "1/√ε globally (warning); on a domain 1/√(σ²_min + ε) (mean square for RMSNorm); "
        "fused from ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div"
    )

    # How a node reads: the axes normalised together, ε, whether the mean is taken out, and the
    # name the report gives the op.
    def _axes(self, node: Node, rank: int) -> tuple[int, ...]:
        return tuple(sorted(positive_axis(a, rank) for a in node.attr_ints("axes")))

    def _epsilon(self, node: Node) -> float:
        return node.attr_float("epsilon")

    def _centered(self, node: Node) -> bool:
        return bool(node.attr_int("centered", 1))

    def _kind(self, node: Node) -> str:
        return "the LayerNorm core" if self._centered(node) else "the RMSNorm core"

    def _bounds(self, node: Node, ctx: RuleContext) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray, np.ndarray]:
        shape = ctx.input_shape(node)
        axes = self._axes(node, len(shape))
        lo, hi = grouped(ctx.range_of(node.inputs[0]), shape, axes)
        return shape, axes, lo, hi

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        epsilon, kind = self._epsilon(node), self._kind(node)
        if epsilon > 0:
            value = 1 / math.sqrt(epsilon) * (1 + 1e-12)
            note = f"warning: {kind} is only {value:.3g}-Lipschitz globally (1/√ε, ε={epsilon:g})"
            factor = Factor.constant(value, "closed-form", note=note)
        else:
            factor = Factor.unbounded(
                f"{kind} divides by a standard deviation with no ε, which is 0 on a constant input: "
                "its slope is unbounded there"
            )
        if not ctx.on_domain:
            return factor
        _, _, lo, hi = self._bounds(node, ctx)
        if self._centered(node):
            smallest = variance_lower_bound(lo, hi)
        else:
            smallest = mean_square_bounds(lo, hi)[0]
        with np.errstate(divide="ignore"):
            value = float(np.max(1 / np.sqrt(smallest + epsilon), initial=0.0)) * (1 + 1e-12)
        if not math.isfinite(value):
            return factor
        statistic = "variance" if self._centered(node) else "mean square"
        return tighter_on_domain(
            factor, value, f"1/√(σ²_min + ε), σ²_min the smallest {statistic} of each group over the input's range"
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        shape, axes, lo, hi = self._bounds(node, ctx)
        z_lo, z_hi = normalized_range(lo, hi, self._epsilon(node), self._centered(node))
        return [Interval(ungrouped(z_lo, shape, axes), ungrouped(z_hi, shape, axes)).widened()]

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        shape = jctx.rules.input_shape(node)
        axes = self._axes(node, len(shape))
        z = _normalised_jacobian(node, jctx, shape, axes, self._centered(node), self._epsilon(node))
        return None if z is None else [z]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        dims = self._axes(node, x.dim())
        epsilon = self._epsilon(node)
        if self._centered(node):
            return _normalised(x, dims, epsilon)[0]
        return _rms_normalised(x, dims, epsilon)


@register
class MeanVarianceNormalization_9(Normalize):
    """(x − mean)/σ over ``axes`` (default N, H, W: per channel). The spec's function body adds
    1e-9 to σ, but onnxruntime's kernel divides by σ itself (a constant group gives NaN): the
    runtime's reading is the one bounded, so it is the core z with ε = 0, unbounded globally."""

    domain = ""
    summary = "not Lipschitz globally (σ can be 0); on a domain 1/σ_min, σ_min the smallest standard deviation"

    def _axes(self, node: Node, rank: int) -> tuple[int, ...]:
        # onnxruntime reduces over the listed axes the input has: the default [0, 2, 3] on a rank-3
        # input is [0, 2]
        return tuple(sorted({positive_axis(a, rank) for a in node.attr_ints("axes") if -rank <= a < rank}))

    def _epsilon(self, node: Node) -> float:
        return 0.0

    def _centered(self, node: Node) -> bool:
        return True

    def _kind(self, node: Node) -> str:
        return "MeanVarianceNormalization"
