"""Pooling: max pools by how often windows overlap, average pools as linear operators.

ONNX pooling semantics (explicit pads, ``auto_pad``, ``ceil_mode``, ``count_include_pad``, the
flat ``Indices`` output) are read here once, through ops.geometry, for the rule and the run alike.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from ..spectral.conv import avgpool_norm
from .context import RuleContext
from .factor import Factor
from .geometry import WindowGeometry, kernel_shape, pool_output_sizes, window_geometry
from .registry import Op, register
from .runtime import Env, spatial_fn, torch_pads

FAMILY = "pooling"


def _layout(node: Node, spatial: Sequence[int]) -> tuple[WindowGeometry, list[int]]:
    geometry = window_geometry(node, kernel_shape(node), spatial)
    return geometry, pool_output_sizes(node, geometry, spatial)


def _padded_input(x: Tensor, geometry: WindowGeometry, outs: Sequence[int], value: float) -> tuple[Tensor, list[int]]:
    """Pad by the explicit pads, plus what ceil_mode windows overhang, with ``value``."""
    extras = []
    for size, k, s, d, begin, end, out in zip(x.shape[2:], geometry.kernel, geometry.strides, geometry.dilations,
                                              geometry.begins, geometry.ends, outs):
        needed = (out - 1) * s + (k - 1) * d + 1
        extras.append(max(0, needed - (size + begin + end)))
    padded = F.pad(x, torch_pads(geometry.begins, [e + extra for e, extra in zip(geometry.ends, extras)]),
                   value=value)
    return padded, extras


def _crop_to(t: Tensor, outs: Sequence[int]) -> Tensor:
    return t[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]


@register
class MaxPool(Op):
    family = FAMILY
    resizes = True  # the multiplicity counts every window an entry falls in
    exact_in_float = True
    monotone = True  # the values; the Indices output has no range rule
    summary = "√(most windows one input falls in) = √Π⌈k/(s/gcd(s,d))⌉"

    def interval(self, node: Node, ctx: RuleContext) -> list:
        return super().interval(node, ctx)[:1] + [None] * (len(node.outputs) - 1)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        geometry = window_geometry(node, kernel_shape(node), ctx.input_shape(node)[2:])
        # |max a − max b| ≤ ‖a − b‖ per window; summing over windows counts each input ≤ m times.
        m = geometry.multiplicity()
        return Factor.constant(math.sqrt(m), "closed-form", note=f"each input in at most {m} windows")

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        indices = Factor.unbounded("MaxPool's Indices output is a step function of the input (it jumps)")
        return [self.bound(node, ctx), indices][: max(1, len(node.outputs))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        geometry, outs = _layout(node, x.shape[2:])
        kernel, n = geometry.kernel, len(geometry.kernel)
        fill = -math.inf if x.is_floating_point() else int(torch.iinfo(x.dtype).min)
        padded, _ = _padded_input(x, geometry, outs, fill)
        pool = spatial_fn("max_pool", n, node)
        window = dict(stride=geometry.strides, padding=0, dilation=geometry.dilations)
        if not (len(node.outputs) > 1 and node.outputs[1]):
            return _crop_to(pool(padded, kernel, **window), outs)
        values, flat = pool(padded, kernel, return_indices=True, **window)
        values, flat = _crop_to(values, outs), _crop_to(flat, outs)
        # torch indexes the padded plane; ONNX the whole input tensor, row-major (or column-major).
        coords = []
        for size in reversed(padded.shape[2:]):
            coords.append(flat % size)
            flat = flat // size
        coords = [c - b for c, b in zip(reversed(coords), geometry.begins)]
        sizes = list(x.shape[2:])
        order = range(n) if not node.attr_int("storage_order") else reversed(range(n))
        index = torch.zeros_like(coords[0])
        for axis in order:
            index = index * sizes[axis] + coords[axis]
        plane = int(np.prod(sizes))
        batch = torch.arange(x.shape[0], device=x.device).reshape((-1, 1) + (1,) * n)
        channel = torch.arange(x.shape[1], device=x.device).reshape((1, -1) + (1,) * n)
        return values, index + (batch * x.shape[1] + channel) * plane


def _window_sum(t: Tensor, geometry: WindowGeometry, node: Node) -> Tensor:
    """Sum over each window: a depthwise convolution with a kernel of ones."""
    kernel = geometry.kernel
    flat = t.reshape((-1, 1) + tuple(t.shape[2:]))
    ones = torch.ones((1, 1) + tuple(kernel), dtype=t.dtype, device=t.device)
    summed = spatial_fn("conv", len(kernel), node)(flat, ones, stride=geometry.strides, dilation=geometry.dilations)
    return summed.reshape(tuple(t.shape[:2]) + tuple(summed.shape[2:]))


@register
class AveragePool(Op):
    family = FAMILY
    resizes = True
    monotone = True  # non-negative weights
    sums = True
    summary = "a linear operator at the input shape (count_include_pad honoured)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        shape = ctx.input_shape(node)
        geometry = window_geometry(node, kernel_shape(node), shape[2:])
        norm = avgpool_norm(geometry.kernel, shape[2:], strides=geometry.strides, pads=geometry.pads,
                            dilations=geometry.dilations,
                            count_include_pad=bool(node.attr_int("count_include_pad", 0)), channels=shape[1],
                            ceil_mode=bool(node.attr_int("ceil_mode", 0)), method=ctx.method, device=ctx.device)
        return Factor.from_norm(norm)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        geometry, outs = _layout(node, x.shape[2:])
        padded, extras = _padded_input(x, geometry, outs, 0.0)
        # The divisor counts the input entries of each window, and the explicit pads with count_include_pad,
        # never what a ceil_mode window overhangs.
        mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        if node.attr_int("count_include_pad", 0):
            mask = F.pad(mask, torch_pads(geometry.begins, geometry.ends), value=1.0)
            mask = F.pad(mask, torch_pads([0] * len(extras), extras), value=0.0)
        else:
            mask = F.pad(mask, torch_pads(geometry.begins, [e + x_ for e, x_ in zip(geometry.ends, extras)]),
                         value=0.0)
        total = _crop_to(_window_sum(padded, geometry, node), outs)
        count = _crop_to(_window_sum(mask, geometry, node), outs)
        return total / count


@register
class GlobalAveragePool(Op):
    family = FAMILY
    monotone = True
    sums = True
    summary = "1/√(H·W) (mean over the spatial positions)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        positions = int(np.prod(ctx.input_shape(node)[2:]))
        return Factor.constant(1.0 / math.sqrt(positions), "closed-form", note=f"mean of {positions} positions")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register
class GlobalMaxPool(Op):
    family = FAMILY
    exact_in_float = True
    identity = True
    monotone = True
    summary = "1 (max over all positions of a channel)"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
