"""Window geometry of Conv, ConvTranspose and pooling nodes, and padding maps, ONNX conventions.

Shared by the rules and the executors of the linear, pooling and structural families, so both
read a node identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..ir import Node
from ..spectral.conv import window_multiplicity
from ..spectral.geometry import window_count


@dataclass(frozen=True)
class WindowGeometry:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begin_1..begin_n, end_1..end_n

    @property
    def begins(self) -> tuple[int, ...]:
        return self.pads[: len(self.kernel)]

    @property
    def ends(self) -> tuple[int, ...]:
        return self.pads[len(self.kernel) :]

    def multiplicity(self) -> int:
        """The most windows any one input position falls in."""
        return window_multiplicity(self.kernel, self.strides, self.dilations)


def kernel_shape(node: Node, weight_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """``kernel_shape``, or for a Conv without it the weight's spatial dims."""
    if node.has_attr("kernel_shape") or weight_shape is None:
        return node.attr_ints("kernel_shape")
    return tuple(int(k) for k in weight_shape[2:])


def window_geometry(
    node: Node, kernel: tuple[int, ...], spatial_in: Sequence[int], *, transposed: bool = False
) -> WindowGeometry:
    """Strides, dilations and explicit pads (auto_pad resolved) of a Conv or pooling node.

    ONNX leaves strides and dilations without a schema default: absent means 1 per axis, and
    absent pads mean 0.
    """
    n = len(kernel)
    strides = node.attr_ints("strides", (1,) * n) or (1,) * n
    dilations = node.attr_ints("dilations", (1,) * n) or (1,) * n
    pads = node.attr_ints("pads", (0,) * (2 * n)) or (0,) * (2 * n)
    auto_pad = node.attr_str("auto_pad")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and not transposed:
        begins, ends = [], []
        for size, k, s, d in zip(spatial_in, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
            begins.append(begin)
            ends.append(end)
        pads = tuple(begins + ends)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * n)
    geometry = WindowGeometry(tuple(int(k) for k in kernel), tuple(strides), tuple(dilations), tuple(pads))
    if len(geometry.strides) != n or len(geometry.dilations) != n or len(geometry.pads) != 2 * n:
        raise ValueError(
            f"{node.op_type} '{node.name}': strides, dilations and pads do not match the {n}-d kernel {list(kernel)}"
        )
    if min(geometry.kernel + geometry.strides + geometry.dilations, default=1) < 1:
        raise ValueError(f"{node.op_type} '{node.name}': kernel sizes, strides and dilations must be positive")
    if min(geometry.pads, default=0) < 0:
        raise ValueError(f"{node.op_type} '{node.name}': pads must not be negative, not {list(geometry.pads)}")
    if not transposed:
        for size, k, d, begin, end in zip(
            spatial_in, geometry.kernel, geometry.dilations, geometry.begins, geometry.ends
        ):
            if (k - 1) * d + 1 > size + begin + end:
                raise ValueError(
                    f"{node.op_type} '{node.name}': the window ({(k - 1) * d + 1}) is larger than the "
                    f"padded input ({size + begin + end})"
                )
    return geometry


def pool_output_sizes(node: Node, geometry: WindowGeometry, spatial: Sequence[int]) -> list[int]:
    """Output sizes of a pooling node: floor, or with ceil_mode one more partial window unless it
    would start in the right padding; ``-(-size // s)`` for SAME_* auto padding."""
    auto_pad = node.attr_str("auto_pad")
    ceil_mode = bool(node.attr_int("ceil_mode", 0))
    outs = []
    for size, k, s, d, begin, end in zip(
        spatial, geometry.kernel, geometry.strides, geometry.dilations, geometry.begins, geometry.ends
    ):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
        else:
            out = window_count(size, begin, end, k, s, d, ceil_mode)
        outs.append(max(out, 0))
    return outs


def conv_transpose_crop(
    node: Node,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
) -> tuple[list[int], list[int]]:
    """(begins, ends) cropped from a ConvTranspose's full output, from pads, output_shape or auto_pad.

    ONNX: with output_shape or SAME_*, total = s·(in−1) + output_padding + (k−1)·d + 1 − out; SAME_UPPER
    puts the larger half at the end, SAME_LOWER and an explicit output_shape at the start.
    """
    n = len(kernel)
    auto_pad = node.attr_str("auto_pad")
    output_shape = node.attr_ints("output_shape", None)
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        if auto_pad == "VALID":
            return [0] * n, [0] * n
        pads = list(node.attr_ints("pads", (0,) * (2 * n)) or (0,) * (2 * n))
        return pads[:n], pads[n:]
    if output_shape is not None:
        targets = [int(v) for v in list(output_shape)[-n:]]
    else:
        targets = [size * s for size, s in zip(spatial, strides)]
    begins, ends = [], []
    for size, target, k, s, d, extra in zip(spatial, targets, kernel, strides, dilations, output_padding):
        total = max(0, s * (size - 1) + extra + (k - 1) * d + 1 - target)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return begins, ends


def conv_transpose_layout(node: Node, weight_shape: Sequence[int], spatial: Sequence[int]):
    """(kernel, strides, dilations, output_padding, begins, ends) of a ConvTranspose node."""
    kernel = kernel_shape(node, weight_shape)
    n = len(kernel)
    strides = node.attr_ints("strides", (1,) * n) or (1,) * n
    dilations = node.attr_ints("dilations", (1,) * n) or (1,) * n
    output_padding = node.attr_ints("output_padding", (0,) * n) or (0,) * n
    begins, ends = conv_transpose_crop(node, spatial, kernel, strides, dilations, output_padding)
    return kernel, strides, dilations, output_padding, begins, ends


def pad_source_index(length: int, begin: int, end: int, mode: str) -> np.ndarray:
    """For each position of one padded (or, for negative amounts, cropped) axis, the source index it
    copies in reflect, edge or wrap mode."""
    source = np.arange(length)
    source = source[max(-begin, 0) : len(source) - max(-end, 0)]
    numpy_modes: dict[str, Literal["reflect", "edge", "wrap"]] = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}
    numpy_mode = numpy_modes[mode]
    if numpy_mode == "reflect" and len(source) == 1:
        numpy_mode = "edge"
    return np.pad(source, (max(begin, 0), max(end, 0)), mode=numpy_mode)


def pad_multiplicity(length: int, begin: int, end: int, mode: str) -> int:
    """The most times one source index appears after padding one axis."""
    return int(np.bincount(pad_source_index(length, begin, end, mode)).max(initial=1))


def spatial_count(shape: Sequence[int]) -> int:
    return int(math.prod(shape[2:]))


def patch_picks(channels: int, kernel: Sequence[int], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The one-hot convolution weight of im2col: output channel c·K + k (K = ∏ kernel, k the kernel
    position in row-major order) reads channel c at position k. As a Conv it is F.unfold; as a
    ConvTranspose, its adjoint F.fold (col2im), which sums the patches that overlap."""
    taps = math.prod(kernel)
    picks = np.zeros((channels * taps, channels, *kernel), dtype=dtype)
    for c in range(channels):
        for k in range(taps):
            position = tuple(int(i) for i in np.unravel_index(k, tuple(kernel)))
            picks[(c * taps + k, c, *position)] = 1
    return picks


def block_counts(
    sizes: Sequence[int], kernel: Sequence[int], dilations: Sequence[int], pads: Sequence[int], strides: Sequence[int]
) -> list[int]:
    """Sliding blocks per spatial axis; ``pads``: begin…, end…."""
    n = len(sizes)
    return [(sizes[i] + pads[i] + pads[n + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(n)]


def fold_attributes(
    sizes: Sequence[int],
    blocks: Sequence[int],
    kernel: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    strides: Sequence[int],
) -> dict[str, Any]:
    """ConvTranspose attributes that fold ``blocks`` back to ``sizes``: the output padding makes up
    for the rows no block reached (fewer than a stride)."""
    n = len(sizes)
    reached = [
        (blocks[i] - 1) * strides[i] - pads[i] - pads[n + i] + dilations[i] * (kernel[i] - 1) + 1 for i in range(n)
    ]
    return dict(
        kernel_shape=list(kernel),
        strides=list(strides),
        pads=list(pads),
        dilations=list(dilations),
        output_padding=[size - r for size, r in zip(sizes, reached)],
        group=1,
    )
