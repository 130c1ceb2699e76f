"""Linear maps with constant weights: Gemm, MatMul, Conv, ConvTranspose.

Convolutions are measured as operators at the node's real input shape, never as a reshaped kernel.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Node
from ..spectral.conv import conv_norm
from ..spectral.dense import dense_norm
from .context import AnalysisContext, broadcast_copies
from .conv_attrs import conv_transpose_crop, window_geometry
from .factor import Factor
from .registry import rule

FAMILY = "linear"


def _dense(ctx: AnalysisContext, matrix: np.ndarray, scale: float = 1.0) -> Factor:
    norm = dense_norm(np.asarray(matrix, dtype=np.float64), ctx.method, device=ctx.device)
    return Factor.from_norm(norm, scale=scale)


@rule("Gemm", summary="|alpha|·‖B‖₂ (or ‖A‖₂ when B is the variable); method per --method", family=FAMILY)
def gemm(node: Node, ctx: AnalysisContext) -> Factor:
    a, b = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    alpha = abs(float(ctx.attr(node, "alpha", 1.0)))
    beta = abs(float(ctx.attr(node, "beta", 1.0)))
    a_const, b_const = ctx.graph.const(a), ctx.graph.const(b)
    if a_const is None and b_const is None:
        return Factor.unbounded("Gemm of two variable matrices is not globally Lipschitz")
    if a_const is None or b_const is None:
        # Transposing either side permutes entries, so ‖A'‖ = ‖A‖ and the flags do not change the norm.
        factor = _dense(ctx, b_const if b_const is not None else a_const, scale=alpha)
        weights = [factor.value]
    else:
        factor, weights = None, []
    if c and not ctx.graph.is_const(c):
        weights.append(beta * math.sqrt(broadcast_copies(ctx.input_shape(node, 2), ctx.output_shape(node))))
    if factor is None:
        return Factor.constant(weights[0], "closed-form", input_weights=weights)
    factor.input_weights = weights
    return factor


def _stacked_weights(const: np.ndarray, var_batch: int, out_batch: tuple[int, ...],
                     const_on_right: bool) -> tuple[np.ndarray, float]:
    """The matrix whose norm bounds a batched product, and an extra scale when only a bound is cheap."""
    mats = np.broadcast_to(const, out_batch + const.shape[-2:]).reshape(-1, *const.shape[-2:])
    if len(mats) == 1:
        return mats[0], 1.0
    if var_batch == len(mats):
        return mats, 1.0  # block diagonal: the largest block
    if var_batch == 1:
        # One variable matrix feeds every product: x ↦ x·[B_1 … B_n] (or [W_1; …; W_n]·x).
        return (np.concatenate(list(mats), axis=1) if const_on_right else np.concatenate(list(mats), axis=0)), 1.0
    return mats, math.sqrt(len(mats) // max(var_batch, 1))


@rule("MatMul", summary="‖W‖₂ of the constant side (batched: largest block); two variables: unbounded",
      family=FAMILY, data_inputs=None)
def matmul(node: Node, ctx: AnalysisContext) -> Factor:
    left, right = node.inputs[:2]
    left_const, right_const = ctx.graph.const(left), ctx.graph.const(right)
    if left_const is None and right_const is None:
        return Factor.unbounded("MatMul of two variable values (e.g. attention scores) is not globally Lipschitz")
    if left_const is not None and right_const is not None:
        return Factor.constant(0.0, "closed-form")
    const_on_right = right_const is not None
    const = right_const if const_on_right else left_const
    if const.ndim == 1:
        const = const.reshape(-1, 1) if const_on_right else const.reshape(1, -1)
    var_shape = ctx.input_shape(node, 0 if const_on_right else 1)
    out_shape = ctx.output_shape(node)
    out_batch = tuple(out_shape[:-2]) if len(out_shape) >= 2 else ()
    var_batch = int(np.prod(var_shape[:-2])) if len(var_shape) > 2 else 1
    matrices, scale = _stacked_weights(const, var_batch, out_batch if const.ndim > 2 else (), const_on_right)
    if matrices.ndim == 2:
        factor = _dense(ctx, matrices)
    else:
        factor = max((_dense(ctx, m) for m in matrices), key=lambda f: f.value)
    return _scaled(factor, scale)


def _scaled(factor: Factor, scale: float) -> Factor:
    if scale == 1.0:
        return factor
    factor.value *= scale
    factor.notes.append(f"×{scale:.4g} for a partly broadcast batch")
    return factor


def _conv_factor(node: Node, ctx: AnalysisContext, *, transposed: bool) -> Factor:
    weight = ctx.const_input(node, 1)
    if weight is None:
        return Factor.unbounded(f"{node.op_type} with a variable kernel multiplies two variable values")
    in_shape = ctx.input_shape(node)
    spatial = in_shape[2:]
    kernel = tuple(ctx.attr(node, "kernel_shape", None) or weight.shape[2:])
    geometry = window_geometry(node, ctx, kernel, spatial, transposed=transposed)
    output_padding = None
    pads = geometry.pads
    if transposed:
        output_padding = tuple(ctx.attr(node, "output_padding", None) or (0,) * len(kernel))
        begins, ends = conv_transpose_crop(node, spatial, geometry.kernel, geometry.strides, geometry.dilations,
                                           output_padding)
        pads = tuple(begins + ends)
    norm = conv_norm(weight, spatial, strides=geometry.strides, pads=pads, dilations=geometry.dilations,
                     groups=int(ctx.attr(node, "group", 1)), transposed=transposed,
                     output_padding=output_padding, method=ctx.method, device=ctx.device)
    factor = Factor.from_norm(norm)
    if len(node.inputs) > 2 and node.inputs[2] and not ctx.graph.is_const(node.inputs[2]):
        # A variable bias b[c] is added at every output position of channel c (in every batch item).
        out_shape = ctx.output_shape(node)
        positions = int(np.prod(out_shape)) // max(1, out_shape[1])
        factor.input_weights = [factor.value if i == 0 else math.sqrt(positions)
                                for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
    return factor


@rule("Conv", summary="operator norm at the input shape: materialised SVD, or circulant FFT bound", family=FAMILY)
def conv(node: Node, ctx: AnalysisContext) -> Factor:
    return _conv_factor(node, ctx, transposed=False)


@rule("ConvTranspose", summary="adjoint of a Conv: same operator-norm methods", family=FAMILY)
def conv_transpose(node: Node, ctx: AnalysisContext) -> Factor:
    return _conv_factor(node, ctx, transposed=True)
