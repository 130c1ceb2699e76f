"""Reading the geometry of Conv, ConvTranspose and pooling nodes, ONNX conventions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..ir import Node
from .context import AnalysisContext


@dataclass(frozen=True)
class WindowGeometry:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begin_1..begin_n, end_1..end_n

    def multiplicity(self) -> int:
        """The most windows any one input position falls in.

        Window o covers o·s + d·j for j < k; a position p is hit by the j with p ≡ d·j (mod s),
        and those j are spaced s / gcd(s, d) apart.
        """
        count = 1
        for k, s, d in zip(self.kernel, self.strides, self.dilations):
            count *= math.ceil(k / (s // math.gcd(s, d)))
        return count


def window_geometry(node: Node, ctx: AnalysisContext, kernel: tuple[int, ...],
                    spatial_in: tuple[int, ...], *, transposed: bool = False) -> WindowGeometry:
    n = len(kernel)
    strides = tuple(ctx.attr(node, "strides", None) or (1,) * n)
    dilations = tuple(ctx.attr(node, "dilations", None) or (1,) * n)
    pads = tuple(ctx.attr(node, "pads", None) or (0,) * (2 * n))
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
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
    return WindowGeometry(tuple(int(k) for k in kernel), tuple(int(s) for s in strides),
                          tuple(int(d) for d in dilations), tuple(int(p) for p in pads))


def conv_transpose_crop(node: Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                        dilations: Sequence[int], output_padding: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begins, ends) cropped from a ConvTranspose's full output, from pads, output_shape or auto_pad.

    ONNX: with output_shape or SAME_*, total = s·(in−1) + output_padding + (k−1)·d + 1 − out; SAME_UPPER
    puts the larger half at the end, SAME_LOWER and an explicit output_shape at the start.
    """
    n = len(kernel)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    output_shape = node.attrs.get("output_shape")
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        if auto_pad == "VALID":
            return [0] * n, [0] * n
        pads = [int(p) for p in (node.attrs.get("pads") or [0] * (2 * n))]
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
