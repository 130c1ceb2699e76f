"""Linear maps with constant weights: Gemm, MatMul, Conv, ConvTranspose.

Convolutions are measured as operators at the node's real input shape, never as a reshaped kernel.

On a domain, a product of two variable matrices (attention scores, P·V) is bounded by the product
rule: ‖Δ(AB)‖_F ≤ ‖ΔA‖_F·sup‖B‖₂ + sup‖A‖₂·‖ΔB‖_F, per block of a batched product, with the
spectral norms bounded from the entries' ranges (|A_ij| ≤ M_ij gives ‖A‖₂ ≤ ‖M‖₂, certified by
the Collatz–Wielandt inequality). The ranges of every output come from center ± |W|·radius.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import linear_maps as maps
from ..intervals.interval import Interval
from ..intervals.jacobian import Jac, JacobianContext, matmul
from ..intervals.norms import nonnegative_norm_bound
from ..invariants import present
from ..ir import Node
from ..linear_maps import Barrier, Dense, LeftDense, Linear
from ..spectral.conv import conv_norm
from ..spectral.dense import dense_norm
from .context import DOMAIN_HINT, RuleContext, broadcast_copies, broadcast_gain, domain_factor
from .factor import Factor
from .geometry import conv_transpose_layout, kernel_shape, window_geometry
from .interval_rules import bilinear_interval
from .linear_part import const, variable_at
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
            if ctx.on_domain:
                return self._product_rule(node, ctx, alpha, beta)
            return Factor.unbounded(f"Gemm of two variable matrices is not globally Lipschitz; {DOMAIN_HINT}")
        factor: Factor | None = None
        weights: list[float] = []
        if a_const is None or b_const is None:
            # Transposing either side permutes entries, so ‖A'‖ = ‖A‖ and the flags do not change the norm.
            # One of them is constant: both variable returned above.
            const = present(b_const if b_const is not None else a_const, "the constant side of Gemm")
            factor = _dense(ctx, const, scale=alpha)
            weights = [present(factor.value, "the norm of the constant side")]
        if c and not ctx.graph.is_const(c):
            weights.append(beta * math.sqrt(broadcast_copies(ctx.input_shape(node, 2), ctx.output_shape(node))))
        if factor is None:
            return Factor.constant(weights[0], "closed-form", input_weights=weights)
        factor.input_weights = weights
        return factor

    def _product_rule(self, node: Node, ctx: RuleContext, alpha: float, beta: float) -> Factor:
        a, b = node.inputs[:2]
        norms = []
        for name in (b, a):
            size = ctx.range_of(name).broadcast_to(ctx.input_shape(node, node.inputs.index(name))).magnitude
            if not np.all(np.isfinite(size)):
                return Factor.unbounded(
                    f"Gemm of two variable matrices: the range of '{name}' on the input domain is unbounded"
                )
            norms.append(alpha * float(nonnegative_norm_bound(size)))
        weights = norms
        c = node.inputs[2] if len(node.inputs) > 2 else ""
        if c and not ctx.graph.is_const(c):
            weights = weights + [beta * math.sqrt(broadcast_copies(ctx.input_shape(node, 2), ctx.output_shape(node)))]
        return domain_factor(
            max(norms), "product rule ‖Δ(AB)‖ ≤ ‖ΔA‖·sup‖B‖₂ + sup‖A‖₂·‖ΔB‖ over the ranges", input_weights=weights
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [bilinear_interval(self, node, ctx, 0, 1)]

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

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        matrix = const(ctx, node, 1)
        if matrix is None or not variable_at(ctx, node, 0) or node.attr_int("transA"):
            return Barrier("a Gemm that is not x·B with a constant B")
        return Dense.of(node.attr_float("alpha") * (matrix.T if node.attr_int("transB") else matrix))


def _stacked_weights(
    const: np.ndarray, var_batch: int, out_batch: tuple[int, ...], const_on_right: bool
) -> tuple[np.ndarray, float]:
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
            if ctx.on_domain:
                return self._product_rule(node, ctx)
            return Factor.unbounded(
                "MatMul of two variable values (e.g. attention scores) is not globally Lipschitz; " + DOMAIN_HINT
            )
        if left_const is not None and right_const is not None:
            return Factor.constant(0.0, "closed-form")
        const_on_right = right_const is not None
        const = right_const if const_on_right else left_const
        const = present(const, "the constant side of MatMul")  # both variable returned above
        if const.ndim == 1:
            const = const.reshape(-1, 1) if const_on_right else const.reshape(1, -1)
        if const.size == 0:  # a product over no entries (or into none): the zero map
            return Factor.constant(0.0, "closed-form")
        var_shape = ctx.input_shape(node, 0 if const_on_right else 1)
        # The batch axes both operands broadcast to (a 1-D operand has none, and the output then
        # drops an axis: x[4] @ W[2, 4, 3] is 2×3 with a batch of 2).
        out_batch = _batch_shape(ctx.output_shape(node), ctx.input_shape(node, 0), ctx.input_shape(node, 1))
        var_batch = int(np.prod(var_shape[:-2])) if len(var_shape) > 2 else 1
        matrices, scale = _stacked_weights(const, var_batch, out_batch if const.ndim > 2 else (), const_on_right)
        if matrices.ndim == 2:
            factor = _dense(ctx, matrices)
        else:
            # Norms of matrices are finite: every factor has its value.
            factor = max((_dense(ctx, m) for m in matrices), key=lambda f: f.value or 0.0)
        if scale != 1.0:
            factor.value = present(factor.value, "the norm of the constant side") * scale
            factor.notes.append(f"×{scale:.4g} for a partly broadcast batch")
        return factor

    def _product_rule(self, node: Node, ctx: RuleContext) -> Factor:
        """Per output block o = (a(o), b(o)): ‖ΔA_a·B_b‖_F ≤ ‖ΔA_a‖_F‖B_b‖₂, so summing over the blocks
        an A block feeds, A's weight is √(max over A blocks of Σ ‖B_b‖₂²) (broadcast_gain over the
        batch); likewise for B."""
        left, right = node.inputs[:2]
        out_batch = _batch_shape(ctx.output_shape(node), ctx.input_shape(node, 0), ctx.input_shape(node, 1))
        blocks = {}
        for index, name in enumerate((left, right)):
            shape = ctx.input_shape(node, index)
            matrix_shape = _as_matrices(shape, index)
            size = ctx.range_of(name).broadcast_to(shape).magnitude.reshape(matrix_shape)
            if not np.all(np.isfinite(size)):
                return Factor.unbounded(
                    f"MatMul of two variable values: the range of '{name}' on the input domain is unbounded"
                )
            blocks[index] = (nonnegative_norm_bound(size), matrix_shape[:-2])
        weights = []
        for mine, other in ((0, 1), (1, 0)):
            other_norms, other_batch = blocks[other]
            coefficients = np.broadcast_to(other_norms.reshape(_padded(other_batch, len(out_batch))), out_batch)
            weights.append(broadcast_gain(coefficients, blocks[mine][1], out_batch))
        return domain_factor(
            max(weights),
            "product rule ‖Δ(AB)‖_F ≤ ‖ΔA‖_F·sup‖B‖₂ + sup‖A‖₂·‖ΔB‖_F, norms "
            "bounded from the ranges (Collatz–Wielandt)",
            input_weights=weights,
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [bilinear_interval(self, node, ctx, 0, 1)]

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂(AB) = ∂A·B + A·∂B, each operand in its range on the box (a constant: exactly)."""
        left, right = node.inputs[:2]
        shapes = [jctx.rules.input_shape(node, i) for i in (0, 1)]
        if min(len(s) for s in shapes) < 2:
            return super().jacobian(node, jctx)
        boxes = [jctx.box(name).broadcast_to(shape) for name, shape in zip((left, right), shapes)]
        return [matmul(jctx.jac(left), boxes[0], jctx.jac(right), boxes[1], jctx.rules.output_shape(node))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.matmul(*same_kind(args[0], args[1]))

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        matrix = const(ctx, node, 1)
        if matrix is not None and matrix.ndim == 2 and variable_at(ctx, node, 0):
            return Dense.of(matrix)
        left = const(ctx, node, 0)
        if left is not None and left.ndim == 2 and variable_at(ctx, node, 1) and len(ctx.input_shape(node, 1)) >= 2:
            return LeftDense.of(left)
        return Barrier("a MatMul that is not x·B or A·x with a constant matrix")


def _as_matrices(shape: tuple[int, ...], side: int) -> tuple[int, ...]:
    """numpy matmul's view of an operand: a 1-D left operand is a row, a 1-D right one a column."""
    if len(shape) == 1:
        return (1, shape[0]) if side == 0 else (shape[0], 1)
    return tuple(shape)


def _padded(batch: tuple[int, ...], rank: int) -> tuple[int, ...]:
    return (1,) * (rank - len(batch)) + tuple(batch)


def _batch_shape(out_shape: tuple[int, ...], left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, ...]:
    left_batch = _as_matrices(left, 0)[:-2]
    right_batch = _as_matrices(right, 1)[:-2]
    return tuple(np.broadcast_shapes(left_batch, right_batch))


class Convolution(Op):
    family = FAMILY
    resizes = True
    transposed = False

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [bilinear_interval(self, node, ctx, 0, 1)]

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        weight = ctx.const_input(node, 1)
        if weight is None:
            return Factor.unbounded(f"{node.op_type} with a variable kernel multiplies two variable values")
        spatial = ctx.input_shape(node)[2:]
        output_padding = None
        if self.transposed:
            kernel, strides, dilations, output_padding, begins, ends = conv_transpose_layout(
                node, weight.shape, spatial
            )
            pads = tuple(begins + ends)
        else:
            geometry = window_geometry(node, kernel_shape(node, weight.shape), spatial)
            strides, dilations, pads = geometry.strides, geometry.dilations, geometry.pads
        norm = conv_norm(
            weight,
            spatial,
            strides=strides,
            pads=pads,
            dilations=dilations,
            groups=node.attr_int("group"),
            transposed=self.transposed,
            output_padding=output_padding,
            method=ctx.method,
            device=ctx.device,
        )
        factor = Factor.from_norm(norm)
        if len(node.inputs) > 2 and node.inputs[2] and not ctx.graph.is_const(node.inputs[2]):
            # A variable bias b[c] is added at every output position of channel c (in every batch item).
            out_shape = ctx.output_shape(node)
            positions = int(np.prod(out_shape)) // max(1, out_shape[1])
            own_weight = present(factor.value, "the norm of the weight")
            factor.input_weights = [
                own_weight if i == 0 else math.sqrt(positions)
                for i, name in enumerate(node.inputs)
                if name and not ctx.graph.is_const(name)
            ]
        return factor

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        weight = const(ctx, node, 1)
        if weight is None or not variable_at(ctx, node, 0):
            return Barrier("a convolution whose kernel or bias is variable")
        spatial = ctx.input_shape(node)[2:]
        group = node.attr_int("group")
        if node.op_type == "ConvTranspose":
            _, strides, dilations, output_padding, begins, ends = conv_transpose_layout(node, weight.shape, spatial)
            pads = tuple(begins) + tuple(ends)
            return maps.Conv.of(weight, spatial, strides, pads, dilations, group, True, output_padding)
        geometry = window_geometry(node, kernel_shape(node, weight.shape), spatial)
        return maps.Conv.of(weight, spatial, geometry.strides, geometry.pads, geometry.dilations, group)


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
        return spatial_fn("conv", n, node)(
            x,
            weight,
            bias,
            stride=geometry.strides,
            padding=tuple(padding),
            dilation=geometry.dilations,
            groups=node.attr_int("group"),
        )


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
        full = spatial_fn("conv_transpose", n, node)(
            x,
            weight,
            None,
            stride=strides,
            padding=0,
            output_padding=0,
            groups=node.attr_int("group"),
            dilation=dilations,
        )
        # The full output, extended by output_padding, then cropped by the pads (negative F.pad crops).
        out = F.pad(full, torch_pads([-b for b in begins], [p - e for p, e in zip(output_padding, ends)]))
        if bias is not None:
            out = out + bias.reshape((1, -1) + (1,) * n)
        return out
