"""Reductions over axes (an attribute before opset 18, 13 for ReduceSum; an input after).

Each output entry reduces a disjoint group of k input entries: a mean is 1/√k-Lipschitz, a sum
√k, and a 1-Lipschitz function of each group (max, ℓ2 norm, log-sum-exp) keeps the factor 1.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, input_or_attr, positive_axis

FAMILY = "reduce"


def _reduce_axes(node: Node, args: list[Any], x: Tensor) -> tuple[int, ...] | None:
    """The reduced axes, or None for a no-op (empty axes with noop_with_empty_axes)."""
    axes = input_or_attr(node, args, 1, "axes")
    if not axes:
        if node.attr_int("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.dim()))
    return tuple(sorted({positive_axis(a, x.dim()) for a in axes}))


def reduced_count(node: Node, ctx: RuleContext) -> int:
    """Entries reduced into each output entry (the groups are disjoint and equal)."""
    return math.prod(ctx.input_shape(node)) // max(1, math.prod(ctx.output_shape(node)))


class Reduction(Op):
    family = FAMILY
    fn: ClassVar[Callable[[Tensor, tuple[int, ...]], Tensor]]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axes = _reduce_axes(node, args, x)
        if axes is None:
            return x
        out = type(self).fn(x, axes) if axes else x
        if node.attr_int("keepdims"):
            return out.reshape([1 if i in axes else d for i, d in enumerate(x.shape)])
        return out


@register
class ReduceMean(Reduction):
    summary = "1/√k over k entries"
    fn = staticmethod(lambda x, a: x.mean(dim=a))

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        k = reduced_count(node, ctx)
        return Factor.constant(1.0 / math.sqrt(k), "closed-form", note=f"mean of {k} entries")


class Summation(Reduction):
    summary = "√k over k entries"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        k = reduced_count(node, ctx)
        return Factor.constant(math.sqrt(k), "closed-form", note=f"sum of {k} entries")


@register
class ReduceSum(Summation):
    fn = staticmethod(lambda x, a: x.sum(dim=a))


@register
class ReduceL1(Summation):
    fn = staticmethod(lambda x, a: x.abs().sum(dim=a))


class GroupwiseOneLipschitz(Reduction):
    identity = True
    summary = "1 (a 1-Lipschitz function of each disjoint group)"


@register
class ReduceMax(GroupwiseOneLipschitz):
    exact_in_float = True
    fn = staticmethod(lambda x, a: x.amax(dim=a))


@register
class ReduceMin(GroupwiseOneLipschitz):
    exact_in_float = True
    fn = staticmethod(lambda x, a: x.amin(dim=a))


@register
class ReduceL2(GroupwiseOneLipschitz):
    fn = staticmethod(lambda x, a: torch.sqrt((x * x).sum(dim=a)))


@register
class ReduceLogSumExp(GroupwiseOneLipschitz):
    fn = staticmethod(lambda x, a: torch.logsumexp(x, dim=a))


class SteepReduction(Reduction):
    certified = False
    summary = "unbounded: products and squares have unbounded slope"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(f"{node.op_type} has unbounded slope")


def _product(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.prod(dim=axis)
    return x


@register
class ReduceProd(SteepReduction):
    fn = staticmethod(_product)


@register
class ReduceSumSquare(SteepReduction):
    fn = staticmethod(lambda x, a: (x * x).sum(dim=a))


@register
class ReduceLogSum(SteepReduction):
    fn = staticmethod(lambda x, a: torch.log(x.sum(dim=a)))
