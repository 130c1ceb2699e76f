"""Resize / Upsample: nearest copies entries, linear mixes them; both act on each axis separately.

A separable resize is a Kronecker product of one matrix per axis, and ‖A ⊗ B‖ = ‖A‖·‖B‖, so the
factor is the product of the per-axis norms: exact, from small matrices.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Node
from ..spectral.dense import dense_norm
from .context import AnalysisContext, RuleInputError
from .factor import Factor
from .registry import rule

FAMILY = "resize"


def source_coordinate(mode: str, out_size: int, in_size: int, scale: float) -> np.ndarray:
    """Where each output index samples the input, per ONNX coordinate_transformation_mode."""
    o = np.arange(out_size, dtype=np.float64)
    if mode == "asymmetric":
        return o / scale
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        centre = in_size / 2
        offset = centre * (1 - adjustment)
        return offset + (o + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    raise RuleInputError(f"coordinate_transformation_mode '{mode}' is not supported")


def nearest_index(x: np.ndarray, mode: str) -> np.ndarray:
    """The input index nearest to each source coordinate, rounded per ONNX nearest_mode (unclipped)."""
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    raise RuleInputError(f"nearest_mode '{mode}' is not supported")


def axis_matrix(out_size: int, in_size: int, scale: float, interpolation: str, coordinate_mode: str,
                 nearest_mode: str) -> np.ndarray:
    """The (out_size, in_size) matrix a Resize applies along one axis (the executor runs this very matrix).

    Nearest: one 1 per row. Linear: the two neighbours' weights, summing to 1 (clamped at the edges).
    """
    x = source_coordinate(coordinate_mode, out_size, in_size, scale)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if interpolation == "nearest":
        index = np.clip(nearest_index(x, nearest_mode), 0, in_size - 1).astype(np.int64)
        matrix[rows, index] = 1.0
        return matrix
    x = np.clip(x, 0, in_size - 1)
    low = np.floor(x).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    weight = x - low
    np.add.at(matrix, (rows, low), 1 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix


def _scales(node: Node, ctx: AnalysisContext, in_shape, out_shape) -> list[float]:
    if node.op_type == "Upsample" and ctx.opset < 9:
        given = ctx.attr(node, "scales", None)
    else:
        index = 1 if node.op_type == "Upsample" or ctx.opset < 11 else 2
        given = ctx.const_input(node, index)
    if given is not None and np.asarray(given).size == len(in_shape):
        return [float(s) for s in np.asarray(given).ravel()]
    return [o / i for o, i in zip(out_shape, in_shape)]  # from `sizes`: the scale is their ratio


@rule("Resize", "Upsample", summary="product over axes of each axis's interpolation-matrix norm "
                                    "(nearest: √(most copies); linear: exact SVD)", family=FAMILY)
def resize(node: Node, ctx: AnalysisContext) -> Factor:
    interpolation = ctx.attr(node, "mode", "nearest")
    if interpolation == "bilinear":
        interpolation = "linear"
    if interpolation not in ("nearest", "linear"):
        return Factor.unknown(f"{node.op_type} mode '{interpolation}' has no rule yet")
    if ctx.attr(node, "antialias", 0) or ctx.attr(node, "axes", None) is not None:
        return Factor.unknown(f"{node.op_type} with antialias or axes has no rule yet")
    default_coordinates = "asymmetric" if node.op_type == "Upsample" or ctx.opset < 11 else "half_pixel"
    coordinate_mode = ctx.attr(node, "coordinate_transformation_mode", default_coordinates)
    if coordinate_mode == "tf_crop_and_resize":
        return Factor.unknown("Resize with tf_crop_and_resize has no rule yet")
    default_nearest = "floor" if node.op_type == "Upsample" or ctx.opset < 11 else "round_prefer_floor"
    nearest_mode = ctx.attr(node, "nearest_mode", default_nearest)
    in_shape, out_shape = ctx.input_shape(node), ctx.output_shape(node)
    factor = 1.0
    for out_size, in_size, scale in zip(out_shape, in_shape, _scales(node, ctx, in_shape, out_shape)):
        if out_size == in_size and scale == 1.0:
            continue
        matrix = axis_matrix(out_size, in_size, scale, interpolation, coordinate_mode, nearest_mode)
        if interpolation == "nearest":
            factor *= math.sqrt(float(matrix.sum(axis=0).max(initial=0.0)))
        else:
            factor *= dense_norm(matrix, "exact").value
    return Factor.constant(factor * (1 + 1e-12), "closed-form" if interpolation == "nearest" else "exact",
                           note=f"{interpolation} resize, {coordinate_mode}")
