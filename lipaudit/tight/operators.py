"""A convolution node's explicit matrix, written from its kernel, for pushing explicit matrices.

An explicit matrix (maps.DenseMap) goes through a node as a batch: one image per anchor entry.
Through a convolution on a small grid that batch costs a whole convolution per row, taps that
read only padding included (a 3×3 on a 1×1 grid computes nine taps and keeps one).  When the
node's own matrix A is small, the rows times Aᵀ cost less: A is written tap by tap,

    A[(o, q), (c, p)] = K[o, c, t]  where p = σ·q + t − pad (per spatial axis), p inside the grid,

one entry of K per (output position, tap) — never a sum, so every entry is exactly the kernel's
(the float32 weights are exact in float64), and each row of the product sums the same nonzero
products as the convolution does (the zeros of A add exactly), in another order: the rounding
allowance of maps.rounding_allowance covers it as it covers the convolution's.

Where the matrix does not pay (a depthwise kernel: few products per image), the convolution runs
on the taps that read the grid from some output position only (``cropped_forward``; conv_maps._crop
says why the others add nothing): a 7×7 depthwise on a 1×1 grid is then one tap, a scaling.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from ..linear_maps.base import torch_pad
from ..linear_maps.convolution import CONV, Conv
from .conv_maps import _full_kernel
from .network import NetworkNode

# Write a node's matrix when it has at most this many entries (32 MiB in float64).
OPERATOR_ENTRIES = 2**22


def conv_operator(node: NetworkNode, in_shape: tuple[int, ...]) -> Tensor | None:
    """The node's matrix (n_out, n_in) when it is a convolution whose matrix pays for itself: at
    most OPERATOR_ENTRIES entries, and fewer than the convolution's products per image (so that a
    row times Aᵀ costs less than the convolution of that row).  None otherwise."""
    op = node.op
    if not isinstance(op, Conv) or op.transposed or in_shape[0] != 1 or node.shape[0] != 1:
        return None
    n_in, n_out = math.prod(in_shape), math.prod(node.shape)
    weight = op.weight
    products = int(weight.shape[0]) * int(weight.shape[1]) * math.prod(weight.shape[2:]) * math.prod(node.shape[2:])
    if n_in * n_out > OPERATOR_ENTRIES or n_in * n_out > products:
        return None
    d = op.dims
    kernel = _full_kernel(weight, op.groups, op.dilations)  # (C_out, C_in, *k) float64
    out_spatial, in_spatial = tuple(node.shape[2:]), tuple(in_shape[2:])
    matrix = torch.zeros((node.shape[1], *out_spatial, in_shape[1], *in_spatial), dtype=torch.float64)
    begins = op.pads[:d]
    for q in itertools.product(*(range(n) for n in out_spatial)):
        for t in itertools.product(*(range(k) for k in kernel.shape[2:])):
            p = tuple(s * qq + tt - b for s, qq, tt, b in zip(op.strides, q, t, begins))
            if all(0 <= pp < n for pp, n in zip(p, in_spatial)):
                entry: tuple[slice | int, ...] = (slice(None), *q, slice(None), *p)
                tap: tuple[slice | int, ...] = (slice(None), slice(None), *t)
                matrix[entry] = kernel[tap]
    return matrix.reshape(n_out, n_in)


def cropped_forward(node: NetworkNode, columns: Tensor, in_shape: tuple[int, ...]) -> Tensor | None:
    """node.forward(columns) for an undilated convolution, with only the taps that read the input
    grid from some output position (per axis t ∈ [pad − σ·(S_out − 1), S_in − 1 + pad]); None when
    that drops no tap (or the node is not such a convolution)."""
    op = node.op
    if not isinstance(op, Conv) or op.transposed or any(d != 1 for d in op.dilations):
        return None
    d = op.dims
    k = tuple(int(n) for n in op.weight.shape[2:])
    in_spatial, out_spatial = tuple(in_shape[2:]), tuple(node.shape[2:])
    begins, index, new_begins, new_ends = op.pads[:d], [slice(None), slice(None)], [], []
    for kk, s, b, n_in, n_out in zip(k, op.strides, begins, in_spatial, out_spatial):
        lo, hi = max(0, b - s * (n_out - 1)), min(kk - 1, n_in - 1 + b)
        if lo > hi:
            return None
        index.append(slice(lo, hi + 1))
        begin = b - lo  # ≥ 0: lo ≤ b
        new_begins.append(begin)
        new_ends.append(s * (n_out - 1) + (hi - lo + 1) - n_in - begin)  # the output keeps S_out
    if all(sl.start == 0 and sl.stop == kk for sl, kk in zip(index[2:], k)):
        return None
    weight = op.weight[tuple(index)].to(torch.float64)
    batch, n = columns.shape[0], columns.shape[1]
    x = columns.reshape(batch * n, *columns.shape[2:])
    padded = torch.nn.functional.pad(x, torch_pad(new_begins, new_ends))  # negative ends crop
    y = CONV[d](padded, weight, stride=op.strides, groups=op.groups)
    return y.reshape(batch, n, *y.shape[1:])
