"""Blank: a float64 tensor's shape without its values, for the skeleton of a composite convolution.

A dry run of the recursion (recursion.py) needs every chain's terms, their sizes and their product
figures, never their values: conv_maps.ConvMap.skeleton makes the same parts with Blanks in place
of the kernels and factors, so that composing, cropping, summing and stacking cost almost nothing.
(torch's "meta" device does the same, but its first operation imports torch._dynamo, about 1.5 s.)

The few operations the composite convolutions use have a shape-only version here; each takes real
tensors as well and then does the real operation.  To the type checker a Blank is a Tensor (the
helpers cast it): it stands in for one, in the fields of the parts that a skeleton holds.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor


class Blank:
    """The shape of a float64 tensor; slicing, scaling and reshaping give the shapes they would."""

    dtype = torch.float64

    def __init__(self, *shape: int) -> None:
        self.shape = torch.Size(int(n) for n in shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return 8

    def __mul__(self, other) -> Blank:
        if isinstance(other, (Blank, Tensor)):
            return Blank(*torch.broadcast_shapes(self.shape, other.shape))
        return self

    __rmul__ = __mul__

    def __iadd__(self, other) -> Blank:
        return self

    def reshape(self, *shape) -> Blank:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        if -1 in shape:
            known = math.prod(n for n in shape if n != -1)
            shape = tuple(self.numel() // known if n == -1 else n for n in shape)
        return Blank(*shape)

    def __getitem__(self, index) -> Blank:
        """Basic indexing: slices (and integers, which drop the axis) from the first axis on."""
        index = index if isinstance(index, tuple) else (index,)
        shape = []
        for axis, size in enumerate(self.shape):
            if axis >= len(index):
                shape.append(size)
            elif isinstance(index[axis], slice):
                shape.append(len(range(size)[index[axis]]))
        return Blank(*shape)

    def __setitem__(self, index, value) -> None:
        pass


def blank(*shape: int) -> Tensor:
    """A Blank of this shape, typed as the Tensor it stands for."""
    return cast(Tensor, Blank(*shape))


def is_blank(*items) -> bool:
    return any(isinstance(x, Blank) for x in items)


def blank_like(x: Tensor) -> Tensor:
    return blank(*x.shape)


def zeros(shape, blanked: bool) -> Tensor:
    return blank(*shape) if blanked else torch.zeros(tuple(shape), dtype=torch.float64)


def eye(n: int, blanked: bool) -> Tensor:
    return blank(n, n) if blanked else torch.eye(n, dtype=torch.float64)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    if is_blank(a, b):
        return blank(*a.shape[:-1], b.shape[-1])
    return a @ b


def diag(v: Tensor, blanked: bool) -> Tensor:
    """The diagonal matrix of a vector."""
    return blank(v.shape[0], v.shape[0]) if blanked or is_blank(v) else torch.diag(v)


def scale_rows(v: Tensor, m: Tensor) -> Tensor:
    """diag(v)·m."""
    return blank(*m.shape) if is_blank(v, m) else v[:, None] * m


def left_times(left: Tensor, core: Tensor) -> Tensor:
    """The 1×1 map ``left`` (C_y × C) applied to a kernel (C × C_in × taps)."""
    if is_blank(left, core):
        return blank(left.shape[0], *core.shape[1:])
    return torch.einsum("oc,ci...->oi...", left, core)


def times_right(kernel: Tensor, right: Tensor) -> Tensor:
    """A kernel (C_y × C × taps) applied after the 1×1 map ``right`` (C × C_in)."""
    if is_blank(kernel, right):
        return blank(kernel.shape[0], right.shape[1], *kernel.shape[2:])
    return torch.einsum("oc...,ci->oi...", kernel, right)


def cat_rows(parts: list[Tensor]) -> Tensor:
    """Concatenation along the first axis."""
    if is_blank(*parts):
        return blank(sum(p.shape[0] for p in parts), *parts[0].shape[1:])
    return torch.cat(parts, dim=0)
