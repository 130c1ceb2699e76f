"""Reductions over axes: ReduceMean, ReduceSum, ReduceMax… (axes as an attribute or, later, an input)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..ir import Node
from .core import Args, OpFn, attr, input_or_attr, op, positive_axis


def _reduce_axes(node: Node, args: Args, x: Tensor) -> tuple[int, ...] | None:
    """The reduced axes, or None for a no-op (empty axes with noop_with_empty_axes)."""
    axes = input_or_attr(node, args, 1, "axes")
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return None
        return tuple(range(x.dim()))
    return tuple(sorted({positive_axis(a, x.dim()) for a in axes}))


def _reduction(fn: Callable[[Tensor, tuple[int, ...]], Tensor]) -> OpFn:
    def run(env, node, args):
        x = args[0]
        axes = _reduce_axes(node, args, x)
        if axes is None:
            return x
        out = fn(x, axes) if axes else x
        if attr(node, "keepdims", 1):
            shape = [1 if i in axes else d for i, d in enumerate(x.shape)]
            return out.reshape(shape)
        return out

    return run


def _prod(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.prod(dim=axis)
    return x


for _name, _fn in {
    "ReduceMean": lambda x, a: x.mean(dim=a), "ReduceSum": lambda x, a: x.sum(dim=a),
    "ReduceMax": lambda x, a: x.amax(dim=a), "ReduceMin": lambda x, a: x.amin(dim=a),
    "ReduceL1": lambda x, a: x.abs().sum(dim=a), "ReduceL2": lambda x, a: torch.sqrt((x * x).sum(dim=a)),
    "ReduceSumSquare": lambda x, a: (x * x).sum(dim=a), "ReduceLogSum": lambda x, a: torch.log(x.sum(dim=a)),
    "ReduceLogSumExp": lambda x, a: torch.logsumexp(x, dim=a), "ReduceProd": _prod,
}.items():
    op(_name)(_reduction(_fn))
