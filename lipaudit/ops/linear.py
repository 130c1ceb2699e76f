"""Linear maps with constant weights: Gemm, MatMul, Conv, ConvTranspose.

Convolutions are measured as operators at the node's real input shape, never as a reshaped kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Node
from ..spectral.conv import conv_norm
from ..spectral.dense import dense_norm
from .context import RuleContext, broadcast_copies
from .factor import Factor
from .geometry import conv_transpose_layout, kernel_shape, window_geometry
from .registry import Op, register
from .runtime import Env, same_kind, spatial_fn, torch_pads

FAMILY = "linear"


def _dense(ctx: RuleContext, matrix: np.ndarray, scale: float = 1.0) -> Factor:
    norm = dense_norm(np.asarray(matrix, dtype=np.float64), ctx.method, device=ctx.device)
    return Factor.from_norm(norm, scale=scale)


@register
class Gemm(Op):
    family = FAMILY
    resizes = True
    summary = "|alpha|·‖B‖₂ (or ‖A‖₂ when B is the variable); method per --method"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        a, b = node.inputs[:2]
        c = node.inputs[2] if len(node.inputs) > 2 else ""
        alpha, beta = abs(node.attr_float("alpha")), abs(node.attr_float("beta"))
        a_const, b_const = ctx.graph.const(a), ctx.graph.const(b)
        if a_const is None and b_const is None:
            return Factor.unbounded("Gemm of two variable matrices is not globally Lipschitz")
        factor: Factor | None = None
        weights: list[float] = []
        if a_const is None or b_const is None:
            # Transposing either side permutes entries, so ‖A'‖ = ‖A‖ and the flags do not change the norm.
            factor = _dense(ctx, b_const if b_const is not None else a_const, scale=alpha)
            weights = [factor.value]
        if c and not ctx.graph.is_const(c):
            weights.append(beta * math.sqrt(broadcast_copies(ctx.input_shape(node, 2), ctx.output_shape(node))))
        if factor is None:
            return Factor.constant(weights[0], "closed-form", input_weights=weights)
        factor.input_weights = weights
        return factor

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        if node.attr_int("transA"):
            a = a.transpose(-1, -2)
        if node.attr_int("transB"):
            b = b.transpose(-1, -2)
        out = node.attr_float("alpha") * (a @ b)
        if c is not None:
            out = out + node.attr_float("beta") * c
        return out


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


@register
class MatMul(Op):
    family = FAMILY
    resizes = True
    summary = "‖W‖₂ of the constant side (batched: largest block); two variables: unbounded"
    data_inputs = None

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
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
        if scale != 1.0:
            factor.value *= scale
            factor.notes.append(f"×{scale:.4g} for a partly broadcast batch")
        return factor

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.matmul(*same_kind(args[0], args[1]))


class Convolution(Op):
    family = FAMILY
    resizes = True
    transposed = False

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        weight = ctx.const_input(node, 1)
        if weight is None:
            return Factor.unbounded(f"{node.op_type} with a variable kernel multiplies two variable values")
        spatial = ctx.input_shape(node)[2:]
        output_padding = None
        if self.transposed:
            kernel, strides, dilations, output_padding, begins, ends = conv_transpose_layout(node, weight.shape, spatial)
            pads = tuple(begins + ends)
        else:
            geometry = window_geometry(node, kernel_shape(node, weight.shape), spatial)
            strides, dilations, pads = geometry.strides, geometry.dilations, geometry.pads
        norm = conv_norm(weight, spatial, strides=strides, pads=pads, dilations=dilations,
                         groups=node.attr_int("group"), transposed=self.transposed,
                         output_padding=output_padding, method=ctx.method, device=ctx.device)
        factor = Factor.from_norm(norm)
        if len(node.inputs) > 2 and node.inputs[2] and not ctx.graph.is_const(node.inputs[2]):
            # A variable bias b[c] is added at every output position of channel c (in every batch item).
            out_shape = ctx.output_shape(node)
            positions = int(np.prod(out_shape)) // max(1, out_shape[1])
            factor.input_weights = [factor.value if i == 0 else math.sqrt(positions)
                                    for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        return factor


@register
class Conv(Convolution):
    summary = "operator norm at the input shape: materialised SVD, or circulant FFT bound"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        geometry = window_geometry(node, kernel_shape(node, weight.shape), x.shape[2:])
        n = len(geometry.kernel)
        if geometry.begins == geometry.ends:
            padding = geometry.begins
        else:
            x, padding = F.pad(x, torch_pads(geometry.begins, geometry.ends)), (0,) * n
        return spatial_fn("conv", n, node)(x, weight, bias, stride=geometry.strides, padding=tuple(padding),
                                           dilation=geometry.dilations, groups=node.attr_int("group"))


@register
class ConvTranspose(Convolution):
    summary = "adjoint of a Conv: same operator-norm methods"
    transposed = True

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        spatial = tuple(x.shape[2:])
        n = len(spatial)
        kernel, strides, dilations, output_padding, begins, ends = conv_transpose_layout(node, weight.shape, spatial)
        full = spatial_fn("conv_transpose", n, node)(x, weight, None, stride=strides, padding=0, output_padding=0,
                                                     groups=node.attr_int("group"), dilation=dilations)
        # The full output, extended by output_padding, then cropped by the pads (negative F.pad crops).
        out = F.pad(full, torch_pads([-b for b in begins], [p - e for p, e in zip(output_padding, ends)]))
        if bias is not None:
            out = out + bias.reshape((1, -1) + (1,) * n)
        return out
