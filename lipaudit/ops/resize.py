"""Resize / Upsample: nearest copies entries, linear and cubic mix them; all act on each axis separately.

A separable resize is a Kronecker product of one matrix per axis, and ‖A ⊗ B‖ = ‖A‖·‖B‖, so the
factor is the product of the per-axis norms: exact, from small matrices. The executor applies the
very same per-axis matrices.

Versions: Upsample (scales attribute, then input from opset 9) and Resize 10 sample at
``asymmetric`` coordinates rounding down; Resize 11 added roi/sizes inputs and the coordinate and
rounding attributes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..intervals.interval import Interval, from_center_radius
from ..ir import Node
from ..spectral.dense import dense_norm
from ..spectral.scaling import sqrt_up
from .context import RuleContext, RuleInputError
from .factor import Factor
from .registry import Op, register
from .runtime import Env, cannot_run, floats, ints

FAMILY = "resize"


def source_coordinate(mode: str, out_size: int, in_size: int, scale: float) -> np.ndarray:
    """Where each output index samples the input, per ONNX coordinate_transformation_mode.

    Computed in float32, in the order onnxruntime computes it: at a tie between two input entries
    the float32 rounding decides which one a nearest resize copies.
    """
    f = np.float32
    o = np.arange(out_size, dtype=np.float32)
    s, half = f(scale), f(0.5)
    if mode == "asymmetric":
        return o / s
    if mode == "align_corners":
        return o * f(in_size - 1) / f(out_size - 1) if out_size > 1 else np.zeros(out_size, np.float32)
    if mode == "pytorch_half_pixel":
        return (o + half) / s - half if out_size > 1 else np.zeros(out_size, np.float32)
    if mode == "tf_half_pixel_for_nn":
        return (o + half) / s
    if mode == "half_pixel_symmetric":  # the offset in float32, the rest in double, then rounded to float32
        adjustment = f(out_size) / (s * f(in_size))
        offset = f(in_size) / f(2) * (f(1) - adjustment)
        return (np.float64(offset) + (o.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(np.float32)
    if mode == "half_pixel":
        return (o + half) / s - half
    raise RuleInputError(f"coordinate_transformation_mode '{mode}' is not supported")


def nearest_index(x: np.ndarray, mode: str, downsampling: bool = False) -> np.ndarray:
    """The input index nearest to each source coordinate, rounded per ONNX nearest_mode (unclipped).

    ``simple`` is Resize 10's and Upsample's rule: up when downsampling, else truncation.
    """
    if mode == "simple":
        return np.ceil(x) if downsampling else np.trunc(x)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    raise RuleInputError(f"nearest_mode '{mode}' is not supported")


def _exact_coordinate(mode: str, out_size: int, in_size: int, scale: float) -> np.ndarray:
    """The source coordinates in float64 throughout (the real-number value the float32 one rounds)."""
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
        return in_size / 2 * (1 - out_size / (scale * in_size)) + (o + 0.5) / scale - 0.5
    return (o + 0.5) / scale - 0.5


def nearest_copies(out_size: int, in_size: int, scale: float, coordinate_mode: str, nearest_mode: str) -> int:
    """The most outputs that may copy one input entry along an axis, ties included.

    Where the float32 coordinate and the same coordinate in float64 (from the float32 scale, and
    from the exact ratio of the sizes) round to different entries, the runtime's arithmetic could
    pick either: the output counts for every entry in between. Sound whichever way it rounds.
    """
    downsampling = bool(np.float32(scale) < 1)
    variants = [
        source_coordinate(coordinate_mode, out_size, in_size, scale).astype(np.float64),
        _exact_coordinate(coordinate_mode, out_size, in_size, float(np.float32(scale))),
        _exact_coordinate(coordinate_mode, out_size, in_size, out_size / in_size),
    ]
    picked = np.clip([nearest_index(x, nearest_mode, downsampling) for x in variants], 0, in_size - 1)
    counts = np.zeros(in_size + 1, np.int64)
    np.add.at(counts, picked.min(axis=0).astype(np.int64), 1)
    np.add.at(counts, picked.max(axis=0).astype(np.int64) + 1, -1)
    return int(np.cumsum(counts)[:in_size].max(initial=0))


def keys_kernel(distance: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel W(s) at |s| = ``distance`` < 2 (ONNX cubic_coeff_a = a)."""
    s = np.abs(distance)
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return np.where(s <= 1, near, far)


def axis_matrix(
    out_size: int,
    in_size: int,
    scale: float,
    interpolation: str,
    coordinate_mode: str,
    nearest_mode: str,
    cubic_a: float = -0.75,
    exclude_outside: bool = False,
) -> np.ndarray:
    """The (out_size, in_size) matrix a Resize applies along one axis.

    Nearest: one 1 per row. Linear: the two neighbours' weights, summing to 1 (clamped at the edges).
    Cubic: the four neighbours' Keys weights (some negative), an index past an edge reading the edge
    entry, or with ``exclude_outside`` weighing 0 and the row renormalised.
    """
    x = source_coordinate(coordinate_mode, out_size, in_size, scale).astype(np.float64)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if interpolation == "nearest":
        index = np.clip(nearest_index(x, nearest_mode, bool(np.float32(scale) < 1)), 0, in_size - 1).astype(np.int64)
        matrix[rows, index] = 1.0
        return matrix
    if interpolation == "cubic":
        base = np.floor(x)
        t = x - base
        for offset, distance in ((-1, t + 1), (0, t), (1, 1 - t), (2, 2 - t)):
            index = base.astype(np.int64) + offset
            weight = keys_kernel(distance, cubic_a)
            if exclude_outside:
                weight = np.where((index < 0) | (index >= in_size), 0.0, weight)
            np.add.at(matrix, (rows, np.clip(index, 0, in_size - 1)), weight)
        if exclude_outside:
            with np.errstate(divide="ignore", invalid="ignore"):
                matrix /= matrix.sum(axis=1, keepdims=True)
        if not np.all(np.isfinite(matrix)):
            raise RuleInputError(f"cubic weights with cubic_coeff_a={cubic_a} are not finite along an axis")
        return matrix
    x = np.clip(x, 0, in_size - 1)
    low = np.floor(x).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    weight = x - low
    np.add.at(matrix, (rows, low), 1 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix


@dataclass(frozen=True)
class ResizeMode:
    interpolation: str  # nearest | linear | cubic
    coordinates: str
    rounding: str
    cubic_a: float = -0.75
    exclude_outside: bool = False

    def axis_matrix(self, out_size: int, in_size: int, scale: float) -> np.ndarray:
        return axis_matrix(
            out_size,
            in_size,
            scale,
            self.interpolation,
            self.coordinates,
            self.rounding,
            self.cubic_a,
            self.exclude_outside,
        )


class Resizing(Op):
    family = FAMILY
    resizes = True
    # Nearest copies entries, linear mixes them with weights in [0, 1]: both monotone in the data (cubic
    # is not: its own interval rule below).
    monotone = True
    sums = True
    summary = "product over axes of each axis's interpolation-matrix norm (nearest: √(most copies); else exact SVD)"
    scales_input: int | None = 1  # the input index of the scales (None: an attribute)
    sizes_input: int | None = None
    coordinates = "asymmetric"
    rounding = "simple"

    def mode(self, node: Node) -> ResizeMode:
        interpolation = node.attr_str("mode")
        return ResizeMode("linear" if interpolation == "bilinear" else interpolation, self.coordinates, self.rounding)

    def unsupported(self, node: Node, mode: ResizeMode) -> str:
        """Why this node's form has no rule or run yet ("" when it has both)."""
        if mode.interpolation not in ("nearest", "linear"):
            return f"{node.op_type} mode '{mode.interpolation}' has no rule yet"
        return ""

    def given_scales(self, node: Node, scales: Sequence[float] | None, rank: int | None = None) -> list[float] | None:
        return list(scales) if scales is not None else None

    def given_sizes(self, node: Node, sizes: Sequence[int] | None, in_shape: Sequence[int]) -> list[int] | None:
        return list(sizes) if sizes is not None else None

    def resized_axes(self, node: Node, ctx: RuleContext) -> list[tuple[int, int, int, float]]:
        """(axis, out size, in size, scale) of every axis the node changes, from its constant scales
        or else from its shapes."""
        scale_const = ctx.const_input(node, self.scales_input) if self.scales_input is not None else None
        in_shape, out_shape = ctx.input_shape(node), ctx.output_shape(node)
        given = None if scale_const is None or not scale_const.size else [float(s) for s in scale_const.ravel()]
        scales = self.given_scales(node, given, len(in_shape))
        if scales is None or len(scales) != len(in_shape):
            scales = [o / i for o, i in zip(out_shape, in_shape)]
        axes = enumerate(zip(out_shape, in_shape, scales))
        return [(axis, o, i, s) for axis, (o, i, s) in axes if not (o == i and s == 1.0)]

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        mode = self.mode(node)
        why = self.unsupported(node, mode)
        if why:
            return Factor.unknown(why)
        factor = 1.0
        for _, out_size, in_size, scale in self.resized_axes(node, ctx):
            if mode.interpolation == "nearest":
                factor *= sqrt_up(nearest_copies(out_size, in_size, scale, mode.coordinates, mode.rounding))
            else:
                factor *= dense_norm(mode.axis_matrix(out_size, in_size, scale), "exact").value
        return Factor.constant(
            factor * (1 + 1e-12),
            "closed-form" if mode.interpolation == "nearest" else "exact",
            note=f"{mode.interpolation} resize, {mode.coordinates}",
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        """Nearest and linear are monotone (weights ≥ 0); cubic weighs some neighbours negatively, so its
        range is centre·W ± radius·|W|, axis by axis."""
        mode = self.mode(node)
        if mode.interpolation != "cubic":
            return super().interval(node, ctx)
        x = ctx.range_of(node.inputs[0]).broadcast_to(ctx.input_shape(node))
        if self.unsupported(node, mode) or not x.is_finite():
            return [None]
        center, radius, magnitude = x.center, x.radius, x.magnitude
        for axis, out_size, in_size, scale in self.resized_axes(node, ctx):
            matrix = mode.axis_matrix(out_size, in_size, scale)
            center = _along(center, matrix, axis)
            radius = _along(radius, np.abs(matrix), axis)
            magnitude = _along(magnitude, np.abs(matrix), axis)
        return [from_center_radius(center, radius, scale=4 * magnitude)]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        mode = self.mode(node)
        if self.unsupported(node, mode):
            raise cannot_run(node, f"in this form (mode '{mode.interpolation}', coordinates '{mode.coordinates}')")
        scale_arg = args[self.scales_input] if self.scales_input is not None and len(args) > self.scales_input else None
        given = floats(scale_arg) if scale_arg is not None and scale_arg.numel() else None
        scales = self.given_scales(node, given, x.dim())
        size_arg = args[self.sizes_input] if self.sizes_input is not None and len(args) > self.sizes_input else None
        sizes = self.given_sizes(node, ints(size_arg) if size_arg is not None and size_arg.numel() else None, x.shape)
        # onnxruntime multiplies in float32: 5 × 1.4f is 7, not 6.9999999.
        if sizes:
            out_shape = sizes
        elif scales is not None:
            out_shape = [int(np.floor(np.float32(i) * np.float32(s))) for i, s in zip(x.shape, scales)]
        else:
            raise cannot_run(node, "without scales or sizes")
        for axis, (in_size, out_size) in enumerate(zip(list(x.shape), out_shape)):
            scale = out_size / in_size if sizes or scales is None else scales[axis]
            if out_size == in_size and scale == 1.0:
                continue
            matrix = mode.axis_matrix(out_size, in_size, scale)
            if mode.interpolation == "nearest":
                # One 1 per row: picking those entries is the product, exact for any dtype and for ±inf.
                x = x.index_select(axis, torch.as_tensor(matrix.argmax(axis=1), device=x.device))
            else:
                weights = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
                x = torch.movedim(torch.movedim(x, axis, -1) @ weights.T, -1, axis)
        return x


@register
class Upsample(Resizing):
    scales_input = None

    def given_scales(self, node: Node, scales: Sequence[float] | None, rank: int | None = None) -> list[float] | None:
        return list(node.attr_floats("scales"))


@register
class Upsample_9(Resizing):
    op_type = "Upsample"


@register
class Resize_10(Resizing):
    op_type = "Resize"


@register
class Resize_11(Resizing):
    op_type = "Resize"
    scales_input = 2
    sizes_input = 3

    def mode(self, node: Node) -> ResizeMode:
        base = super().mode(node)
        return ResizeMode(
            base.interpolation,
            node.attr_str("coordinate_transformation_mode"),
            node.attr_str("nearest_mode"),
            node.attr_float("cubic_coeff_a"),
            bool(node.attr_int("exclude_outside")),
        )

    def given_scales(self, node: Node, scales: Sequence[float] | None, rank: int | None = None) -> list[float] | None:
        """From opset 18 ``axes`` names the axes the scales are for; the others keep scale 1."""
        return _on_all_axes(node, scales, rank, 1.0)

    def given_sizes(self, node: Node, sizes: Sequence[int] | None, in_shape: Sequence[int]) -> list[int] | None:
        return _on_all_axes(node, sizes, len(in_shape), list(in_shape))

    def unsupported(self, node: Node, mode: ResizeMode) -> str:
        if node.attr_int("antialias", 0):
            return f"{node.op_type} with antialias has no rule yet"
        if mode.coordinates == "tf_crop_and_resize":
            return "Resize with tf_crop_and_resize has no rule yet"
        if node.attr_str("keep_aspect_ratio_policy", "stretch") != "stretch":
            return f"{node.op_type} with keep_aspect_ratio_policy has no rule yet"
        if mode.interpolation == "cubic":  # from opset 11 (earlier: nearest and linear only)
            return "" if math.isfinite(mode.cubic_a) else f"Resize with cubic_coeff_a={mode.cubic_a}"
        return super().unsupported(node, mode)


def _along(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` (out, in) applied along ``axis`` of ``x``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.moveaxis(np.moveaxis(x, axis, -1) @ matrix.T, -1, axis)


def _on_all_axes(node: Node, values: Sequence[Any] | None, rank: int | None, fill: Any) -> list[Any] | None:
    """Scales or sizes given for the node's ``axes`` (opset 18), spread over all ``rank`` axes; the
    other axes take ``fill`` (one value, or one per axis)."""
    if values is None or not node.has_attr("axes") or rank is None:
        return list(values) if values is not None else None
    axes = [a % rank for a in node.attr_ints("axes")]
    if len(axes) != len(values) or len(set(axes)) != len(axes):
        raise RuleInputError(f"{node.op_type} '{node.name}' gives {len(values)} values for the axes {list(axes)}")
    full = list(fill) if isinstance(fill, list) else [fill] * rank
    for axis, value in zip(axes, values):
        full[axis] = value
    return full
