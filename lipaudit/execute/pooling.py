"""Pooling: MaxPool (with ONNX indices), AveragePool (count_include_pad, ceil_mode), the global pools."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..analyzers.conv_attrs import WindowGeometry
from ..ir import Node
from .core import attr, geometry, op, spatial_fn, torch_pads


def _pool_layout(node: Node, x: Tensor) -> tuple[tuple[int, ...], WindowGeometry, list[int], list[int], list[int]]:
    """kernel, geometry, begins, ends (the explicit pads) and the output sizes, ONNX rules."""
    kernel = tuple(int(k) for k in attr(node, "kernel_shape"))
    n = len(kernel)
    spatial = tuple(x.shape[2:])
    window = geometry(node, kernel, spatial)
    begins, ends = list(window.pads[:n]), list(window.pads[n:])
    auto_pad = attr(node, "auto_pad", "NOTSET")
    ceil_mode = bool(attr(node, "ceil_mode", 0))
    outs = []
    for size, k, s, d, begin, end in zip(spatial, kernel, window.strides, window.dilations, begins, ends):
        span = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
        else:
            room = size + begin + end - span
            out = (-(-room // s) if ceil_mode else room // s) + 1
            if ceil_mode and (out - 1) * s >= size + begin:
                out -= 1  # a window may not start in the right padding
        outs.append(max(out, 0))
    return kernel, window, begins, ends, outs


def _pool_input(x: Tensor, window: WindowGeometry, kernel, begins, ends, outs,
                value: float) -> tuple[Tensor, list[int]]:
    """Pad by the explicit pads, plus what ceil_mode windows overhang, with ``value``."""
    extras = []
    for size, k, s, d, begin, end, out in zip(x.shape[2:], kernel, window.strides, window.dilations, begins,
                                              ends, outs):
        needed = (out - 1) * s + (k - 1) * d + 1
        extras.append(max(0, needed - (size + begin + end)))
    padded = F.pad(x, torch_pads(begins, [e + extra for e, extra in zip(ends, extras)]), value=value)
    return padded, extras


def _crop_to(t: Tensor, outs: Sequence[int]) -> Tensor:
    index = (slice(None), slice(None)) + tuple(slice(0, o) for o in outs)
    return t[index]


@op("MaxPool")
def _max_pool(env, node, args):
    x = args[0]
    kernel, window, begins, ends, outs = _pool_layout(node, x)
    n = len(kernel)
    fill = -math.inf if x.is_floating_point() else int(torch.iinfo(x.dtype).min)
    padded, _ = _pool_input(x, window, kernel, begins, ends, outs, fill)
    pool = spatial_fn("max_pool", n, node)
    want_indices = len(node.outputs) > 1 and bool(node.outputs[1])
    if not want_indices:
        return _crop_to(pool(padded, kernel, stride=window.strides, padding=0, dilation=window.dilations), outs)
    values, flat = pool(padded, kernel, stride=window.strides, padding=0, dilation=window.dilations,
                        return_indices=True)
    values, flat = _crop_to(values, outs), _crop_to(flat, outs)
    # torch indexes the padded plane; ONNX the whole input tensor, row-major (or column-major).
    padded_sizes = padded.shape[2:]
    coords = []
    for size in reversed(padded_sizes):
        coords.append(flat % size)
        flat = flat // size
    coords = [c - b for c, b in zip(reversed(coords), begins)]
    sizes = list(x.shape[2:])
    order = range(n) if not attr(node, "storage_order", 0) else reversed(range(n))
    index = torch.zeros_like(coords[0])
    for axis in order:
        index = index * sizes[axis] + coords[axis]
    plane = int(np.prod(sizes))
    batch = torch.arange(x.shape[0], device=x.device).reshape((-1, 1) + (1,) * n)
    channel = torch.arange(x.shape[1], device=x.device).reshape((1, -1) + (1,) * n)
    return values, index + (batch * x.shape[1] + channel) * plane


def _window_sum(t: Tensor, kernel, window: WindowGeometry, node: Node) -> Tensor:
    """Sum over each window: a depthwise convolution with a kernel of ones."""
    n = len(kernel)
    flat = t.reshape((-1, 1) + tuple(t.shape[2:]))
    ones = torch.ones((1, 1) + tuple(kernel), dtype=t.dtype, device=t.device)
    summed = spatial_fn("conv", n, node)(flat, ones, stride=window.strides, dilation=window.dilations)
    return summed.reshape(tuple(t.shape[:2]) + tuple(summed.shape[2:]))


@op("AveragePool")
def _average_pool(env, node, args):
    x = args[0]
    kernel, window, begins, ends, outs = _pool_layout(node, x)
    padded, extras = _pool_input(x, window, kernel, begins, ends, outs, 0.0)
    # The divisor counts the input entries of each window, and the explicit pads with count_include_pad,
    # never what a ceil_mode window overhangs.
    mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    if attr(node, "count_include_pad", 0):
        mask = F.pad(mask, torch_pads(begins, ends), value=1.0)
        mask = F.pad(mask, torch_pads([0] * len(kernel), extras), value=0.0)
    else:
        mask = F.pad(mask, torch_pads(begins, [e + extra for e, extra in zip(ends, extras)]), value=0.0)
    total = _crop_to(_window_sum(padded, kernel, window, node), outs)
    count = _crop_to(_window_sum(mask, kernel, window, node), outs)
    return total / count


@op("GlobalAveragePool")
def _global_average_pool(env, node, args):
    x = args[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _global_max_pool(env, node, args):
    x = args[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
