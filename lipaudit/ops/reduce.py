"""Reductions over axes (an attribute before opset 18, 13 for ReduceSum; an input after).

Each output entry reduces a disjoint group of k input entries: a mean is 1/√k-Lipschitz, a sum
√k, and a 1-Lipschitz function of each group (max, ℓ2 norm, log-sum-exp) keeps the factor 1.
On a domain, the sum of squares (gradient 2x per group) and the log of a sum (gradient 1/Σx) are
bounded from the input's range. Ranges: mean, sum, max, min and log-sum-exp are monotone; the
norms and the sum of squares are monotone in |x|, so they map [min|x|, max|x|].
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval
from ..intervals.jacobian import Jac, JacobianContext
from ..invariants import present
from ..ir import Node
from ..linear_maps import AxisSum, Barrier, Linear, Mean, Reshape
from ..spectral.scaling import sqrt_up
from .context import DOMAIN_HINT, RuleContext, RuleInputError, domain_factor
from .factor import Factor
from .interval_rules import endpoint_args, monotone_interval, run_op
from .linear_part import const
from .registry import Op, register
from .runtime import Env, ReduceTensorFn, input_or_attr, positive_axis

FAMILY = "reduce"


def _reduce_axes(node: Node, args: list[Any], x: Tensor) -> tuple[int, ...] | None:
    """The reduced axes, or None for a no-op (empty axes with noop_with_empty_axes)."""
    axes = input_or_attr(node, args, 1, "axes")
    if not axes:
        if node.attr_int("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.dim()))
    return tuple(sorted({positive_axis(a, x.dim()) for a in axes}))


def static_axes(node: Node, ctx: RuleContext) -> tuple[int, ...] | None:
    """The reduced axes from the attribute or a constant input, or None for a no-op (empty axes with
    noop_with_empty_axes)."""
    shape = ctx.input_shape(node)
    axes_input = const(ctx, node, 1)
    axes = tuple(int(a) for a in axes_input.reshape(-1)) if axes_input is not None else node.attr_ints("axes", ())
    if not axes and node.attr_int("noop_with_empty_axes", 0):
        return None
    return tuple(sorted({a % len(shape) for a in axes})) or tuple(range(len(shape)))


def reduced_count(node: Node, ctx: RuleContext) -> int:
    """Entries reduced into each output entry (the groups are disjoint and equal)."""
    return math.prod(ctx.input_shape(node)) // max(1, math.prod(ctx.output_shape(node)))


class Reduction(Op):
    family = FAMILY
    fn: ClassVar[ReduceTensorFn]

    # With empty axes and noop_with_empty_axes the reduction is skipped but not its elementwise step
    # (the onnx reference and onnxruntime: ReduceSumSquare gives x², ReduceLogSum log x, L1 and L2 |x|).
    def noop(self, x: Tensor) -> Tensor:
        return x

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axes = _reduce_axes(node, args, x)
        if axes is None:
            return self.noop(x)
        out = type(self).fn(x, axes) if axes else x
        if node.attr_int("keepdims"):
            return out.reshape([1 if i in axes else d for i, d in enumerate(x.shape)])
        return out


def magnitude_interval(op: Op, node: Node, ctx: RuleContext) -> list[Interval | None]:
    """For f(x) = g(|x|) with g non-decreasing on x ≥ 0: [g(min|x|), g(max|x|)]."""
    low = endpoint_args(ctx, node, lambda position, x: x.mignitude, (0,))
    high = endpoint_args(ctx, node, lambda position, x: x.magnitude, (0,))
    if low is None or high is None:
        return [None]
    smallest = present(run_op(op, node, ctx, low)[0], f"the output of {node.op_type}")
    largest = present(run_op(op, node, ctx, high)[0], f"the output of {node.op_type}")
    return [Interval(smallest, largest).widened()]


@register
class ReduceMean(Reduction):
    summary = "1/√k over k entries"
    monotone = True
    sums = True
    fn = staticmethod(lambda x, a: x.mean(dim=a))

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        k = reduced_count(node, ctx)
        return Factor.constant(1.0 / math.sqrt(k), "closed-form", note=f"mean of {k} entries")

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return reduction_map(Mean, node, ctx)


def reduction_map(kind: type[Mean], node: Node, ctx: RuleContext) -> Linear:
    """The mean or sum over the node's static axes as a typed map (a no-op reduction: a reshape)."""
    shape = ctx.input_shape(node)
    axes = static_axes(node, ctx)
    if axes is None:
        return Reshape(ctx.output_shape(node))
    return kind(axes, bool(node.attr_int("keepdims", 1)), math.prod(shape[a] for a in axes))


class Summation(Reduction):
    summary = "√k over k entries"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        k = reduced_count(node, ctx)
        return Factor.constant(sqrt_up(k), "closed-form", note=f"sum of {k} entries")


@register
class ReduceSum(Summation):
    monotone = True
    sums = True
    fn = staticmethod(lambda x, a: x.sum(dim=a))

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return reduction_map(AxisSum, node, ctx)


@register
class ReduceL1(Summation):
    fn = staticmethod(lambda x, a: x.abs().sum(dim=a))

    def noop(self, x: Tensor) -> Tensor:
        return x.abs()

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return magnitude_interval(self, node, ctx)


class GroupwiseOneLipschitz(Reduction):
    identity = True  # the factor 1; not an entry move: a max picks its entry by value
    summary = "1 (a 1-Lipschitz function of each disjoint group)"

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return Barrier(f"{node.op_type} is not linear")


class GroupExtreme(GroupwiseOneLipschitz):
    exact_in_float = True
    monotone = True
    largest: ClassVar[bool]

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        from ..intervals.jacobian_rules import reduced_extreme

        jac = jctx.jac(node.inputs[0])
        if jac is None:
            return None
        axes = static_axes(node, jctx.rules)
        if axes is None:
            return [jac]
        keepdims = bool(node.attr_int("keepdims", 1))
        return [reduced_extreme(jac, jctx.box(node.inputs[0]), axes, keepdims, type(self).largest)]


@register
class ReduceMax(GroupExtreme):
    largest = True
    fn = staticmethod(lambda x, a: x.amax(dim=a))


@register
class ReduceMin(GroupExtreme):
    largest = False
    fn = staticmethod(lambda x, a: x.amin(dim=a))


@register
class ReduceL2(GroupwiseOneLipschitz):
    fn = staticmethod(lambda x, a: torch.sqrt((x * x).sum(dim=a)))

    def noop(self, x: Tensor) -> Tensor:
        return x.abs()

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return magnitude_interval(self, node, ctx)


@register
class ReduceLogSumExp(GroupwiseOneLipschitz):
    monotone = True
    fn = staticmethod(lambda x, a: torch.logsumexp(x, dim=a))


class SteepReduction(Reduction):
    certified = False
    summary = "unbounded: products and squares have unbounded slope"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        if ctx.on_domain:
            value = self.domain_value(node, ctx)
            if value is not None and math.isfinite(value):
                return domain_factor(value * (1 + 1e-9), self.domain_note)
        if self.domain_note:
            return Factor.unbounded(f"{node.op_type} has unbounded slope; {DOMAIN_HINT}")
        return Factor.unbounded(f"{node.op_type} has unbounded slope")

    domain_note = ""

    def domain_value(self, node: Node, ctx: RuleContext) -> float | None:
        return None


def _product(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.prod(dim=axis)
    return x


@register
class ReduceProd(SteepReduction):
    fn = staticmethod(_product)
    domain_note = "the gradient Π_{j≠i} x_j of each group: √(Σ_i Π_{j≠i} max|x_j|²) on the input's range"

    def domain_value(self, node: Node, ctx: RuleContext) -> float | None:
        axes = static_axes(node, ctx)
        shape = ctx.input_shape(node)
        if axes is None:  # no reduction: the identity
            return 1.0
        x = ctx.range_of(node.inputs[0]).broadcast_to(shape)
        largest = x.magnitude
        if not np.all(np.isfinite(largest)):
            return None
        kept = [a for a in range(len(shape)) if a not in axes]
        groups = np.transpose(largest, kept + list(axes)).reshape(-1, math.prod(shape[a] for a in axes))
        # Π over the other entries of each group: prefix times suffix products, no division by 0
        ones = np.ones((groups.shape[0], 1))
        before = np.cumprod(np.hstack([ones, groups[:, :-1]]), axis=1)
        after = np.cumprod(np.hstack([ones, groups[:, :0:-1]]), axis=1)[:, ::-1]
        with np.errstate(over="ignore"):
            gradients = np.sqrt(np.sum((before * after) ** 2, axis=1))
        value = float(np.max(gradients, initial=0.0))
        k = groups.shape[1]
        return value * (1 + (2 * k + 4) * 2.0**-52) if math.isfinite(value) else None

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        x = ctx.range_of(node.inputs[0])
        if np.all(x.lo >= 0):
            return monotone_interval(self, node, ctx, positions=(0,))  # non-decreasing on x ≥ 0
        largest = magnitude_interval(self, node, ctx)[0]  # |Π x| ≤ Π max|x|
        return [None if largest is None else Interval(-largest.hi, largest.hi)]


@register
class ReduceSumSquare(SteepReduction):
    domain_note = "the gradient 2x of each group, 2·max over groups of ‖x‖ on the input's range"
    fn = staticmethod(lambda x, a: (x * x).sum(dim=a))

    def noop(self, x: Tensor) -> Tensor:
        return x * x

    def domain_value(self, node: Node, ctx: RuleContext) -> float | None:
        largest = magnitude_interval(self, node, ctx)[0]  # Σ max|x|² per group
        return None if largest is None else 2 * math.sqrt(float(np.max(largest.hi, initial=0.0)))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return magnitude_interval(self, node, ctx)


@register
class ReduceLogSum(SteepReduction):
    monotone = True
    domain_note = "the gradient 1/Σx of each group: √k / min Σx on the input's range"
    fn = staticmethod(lambda x, a: torch.log(x.sum(dim=a)))

    def noop(self, x: Tensor) -> Tensor:
        return torch.log(x)

    def domain_value(self, node: Node, ctx: RuleContext) -> float | None:
        low = endpoint_args(ctx, node, lambda position, x: x.lo, (0,))
        if low is None:
            return None
        logs = present(run_op(self, node, ctx, low)[0], f"the output of {node.op_type}")
        smallest_log = float(np.min(logs, initial=np.inf))  # log Σ lo
        if not math.isfinite(smallest_log):
            return None
        return math.sqrt(reduced_count(node, ctx)) / (math.exp(smallest_log) * (1 - 1e-9))


def cumulative_norm(n: int, exclusive: bool) -> float:
    """‖T‖₂ of the n×n matrix of ones on and below the diagonal (strictly below when ``exclusive``,
    which is T of size n − 1 bordered by zeros; reversing transposes it): 1/(2 sin(π/(4n + 2))), the
    inverse of the smallest singular value of the first-difference matrix T⁻¹. Rounded up."""
    size = n - 1 if exclusive else n
    if size <= 0:
        return 0.0
    value = 1.0 / (2.0 * math.sin(math.pi / (4 * size + 2)))
    return value * (1 + 4 * np.finfo(np.float64).eps)


@register
class CumSum(Op):
    """Running sums along one axis: each line along it goes through the same triangular matrix of ones."""

    family = FAMILY
    summary = "‖T_n‖₂ = 1/(2 sin(π/(4n+2))) for n entries along the axis"
    monotone = True
    sums = True

    def _axis(self, node: Node, ctx: RuleContext) -> int:
        axis = ctx.graph.const(node.inputs[1])
        if axis is None:
            raise RuleInputError(f"the axis of CumSum '{node.name}' is computed from the network input")
        return positive_axis(int(np.asarray(axis).reshape(-1)[0]), len(ctx.input_shape(node)))

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        if ctx.graph.is_const(node.inputs[0]):
            return Factor.constant(0.0, "closed-form")
        n = ctx.input_shape(node)[self._axis(node, ctx)]
        exclusive = bool(node.attr_int("exclusive", 0))
        return Factor.constant(cumulative_norm(n, exclusive), "closed-form", note=f"running sums of {n} entries")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = positive_axis(int(torch.as_tensor(args[1]).reshape(-1)[0]), x.dim())
        if node.attr_int("reverse", 0):
            x = x.flip(axis)
        out = torch.cumsum(x, axis)
        if node.attr_int("exclusive", 0):
            out = out - x
        return out.flip(axis) if node.attr_int("reverse", 0) else out
