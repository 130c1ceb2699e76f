"""Pooling: max pools by how often windows overlap, average pools as linear operators."""

from __future__ import annotations

import math

import numpy as np

from ..ir import Node
from ..spectral.conv import avgpool_norm
from .context import AnalysisContext
from .conv_attrs import window_geometry
from .factor import Factor
from .registry import identity, rule

FAMILY = "pooling"

identity("GlobalMaxPool", summary="1 (max over all positions of a channel)", family=FAMILY)


@rule("MaxPool", summary="√(most windows one input falls in) = √Π⌈k/(s/gcd(s,d))⌉", family=FAMILY)
def max_pool(node: Node, ctx: AnalysisContext) -> Factor:
    kernel = tuple(ctx.attr(node, "kernel_shape"))
    geometry = window_geometry(node, ctx, kernel, ctx.input_shape(node)[2:])
    # |max a − max b| ≤ ‖a − b‖ per window; summing over windows counts each input ≤ m times.
    m = geometry.multiplicity()
    return Factor.constant(math.sqrt(m), "closed-form", note=f"each input in at most {m} windows")


@rule("AveragePool", summary="a linear operator at the input shape (count_include_pad honoured)", family=FAMILY)
def average_pool(node: Node, ctx: AnalysisContext) -> Factor:
    shape = ctx.input_shape(node)
    kernel = tuple(ctx.attr(node, "kernel_shape"))
    geometry = window_geometry(node, ctx, kernel, shape[2:])
    # Opsets before 7 had no count_include_pad and excluded the padding, as the default still does.
    norm = avgpool_norm(kernel, shape[2:], strides=geometry.strides, pads=geometry.pads,
                        dilations=geometry.dilations,
                        count_include_pad=bool(ctx.attr(node, "count_include_pad", 0)), channels=shape[1],
                        ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)), method=ctx.method, device=ctx.device)
    return Factor.from_norm(norm)


@rule("GlobalAveragePool", summary="1/√(H·W) (mean over the spatial positions)", family=FAMILY)
def global_average_pool(node: Node, ctx: AnalysisContext) -> Factor:
    positions = int(np.prod(ctx.input_shape(node)[2:]))
    return Factor.constant(1.0 / math.sqrt(positions), "closed-form", note=f"mean of {positions} positions")
