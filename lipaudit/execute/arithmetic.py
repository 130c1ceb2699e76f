"""Elementwise arithmetic: Add, Sub, Mul, Div, Pow, and the variadic Sum, Max, Min (with broadcasting)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .core import OpFn, op, same_kind


@op("Add")
def _add(env, node, args):
    return torch.add(*same_kind(args[0], args[1]))


@op("Sub")
def _sub(env, node, args):
    return torch.sub(*same_kind(args[0], args[1]))


@op("Mul")
def _mul(env, node, args):
    return torch.mul(*same_kind(args[0], args[1]))


@op("Div")
def _div(env, node, args):
    a, b = same_kind(args[0], args[1])
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@op("Pow")
def _pow(env, node, args):
    base, exponent = args[0], args[1]
    if base.is_floating_point() and exponent.is_floating_point():
        exponent = exponent.to(base.dtype)
    return torch.pow(base, exponent).to(base.dtype)


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def run(env, node, args):
        present = [a for a in args if a is not None]
        out = present[0]
        for other in present[1:]:
            out = fn(*same_kind(out, other))
        return out

    return run


op("Sum")(_variadic(torch.add))
op("Max")(_variadic(torch.maximum))
op("Min")(_variadic(torch.minimum))
