"""Linear maps: Gemm, MatMul, Conv and ConvTranspose (auto_pad, asymmetric pads, output_shape)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..analyzers.conv_attrs import conv_transpose_crop
from .core import attr, geometry, op, same_kind, spatial_fn, torch_pads


@op("Gemm")
def _gemm(env, node, args):
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if attr(node, "transA", 0):
        a = a.transpose(-1, -2)
    if attr(node, "transB", 0):
        b = b.transpose(-1, -2)
    out = float(attr(node, "alpha", 1.0)) * (a @ b)
    if c is not None:
        out = out + float(attr(node, "beta", 1.0)) * c
    return out


@op("MatMul")
def _matmul(env, node, args):
    return torch.matmul(*same_kind(args[0], args[1]))


@op("Conv")
def _conv(env, node, args):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    spatial = tuple(x.shape[2:])
    kernel = tuple(int(k) for k in (attr(node, "kernel_shape") or weight.shape[2:]))
    window = geometry(node, kernel, spatial)
    n = len(kernel)
    begins, ends = window.pads[:n], window.pads[n:]
    if tuple(begins) == tuple(ends):
        padding: Sequence[int] = begins
    else:
        x, padding = F.pad(x, torch_pads(begins, ends)), (0,) * n
    conv = spatial_fn("conv", n, node)
    return conv(x, weight, bias, stride=window.strides, padding=tuple(padding), dilation=window.dilations,
                groups=int(attr(node, "group", 1)))


@op("ConvTranspose")
def _conv_transpose(env, node, args):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    spatial = tuple(x.shape[2:])
    n = len(spatial)
    kernel = tuple(int(k) for k in (attr(node, "kernel_shape") or weight.shape[2:]))
    strides = tuple(int(s) for s in (attr(node, "strides") or (1,) * n))
    dilations = tuple(int(d) for d in (attr(node, "dilations") or (1,) * n))
    output_padding = tuple(int(p) for p in (attr(node, "output_padding") or (0,) * n))
    begins, ends = conv_transpose_crop(node, spatial, kernel, strides, dilations, output_padding)
    full = spatial_fn("conv_transpose", n, node)(x, weight, None, stride=strides, padding=0, output_padding=0,
                                                 groups=int(attr(node, "group", 1)), dilation=dilations)
    # The full output, extended by output_padding, then cropped by the pads (negative F.pad crops).
    out = F.pad(full, torch_pads([-b for b in begins], [p - e for p, e in zip(output_padding, ends)]))
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * n)
    return out
