"""A convolution of a circularly padded input: one circulant operator, measured exactly.

Not an ONNX op: passes/fuse_circular_conv.py makes it from a circular pad (torch writes one as a
Concat of the input between two Slices of its ends per axis at opset ≤ 18, or Pad in wrap mode)
followed by a Conv without padding of its own. Piece by piece the pad copies border entries and
costs √(copies) — 3 for a 3×3 'same' convolution — while an orthogonal kernel's circular
convolution is orthogonal.

Attributes: the Conv's own (kernel_shape, strides, dilations, group) and ``wrap_pads`` (begins…,
ends… per spatial axis). The pass fuses only when, on every spatial axis of size H, the stride s
divides H, the dilated kernel span fits in H, the pads are at most H, and the convolution makes
at most H/s outputs.

Rule: output j reads x[(j·s + d·t − b) mod H], so the operator is the first outputs of the
H-periodic strided convolution composed with a circular shift (a permutation): its norm is at
most the periodic operator's, which the polyphase blocks give exactly (blocks.py, with the
period N = H instead of an embedding period; s | H), and equal when it makes all H/s outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Node
from ..spectral.conv import circulant_norm
from ..spectral.geometry import window_count
from ..spectral.scaling import scale_of
from .context import RuleContext, RuleInputError
from .factor import Factor
from .registry import FUSED_DOMAIN, Op, register
from .runtime import Env, spatial_fn, torch_pads

FAMILY = "linear"
_FIGURES = {"auto": "bnb", "exact": "exact", "gram": "gram", "frobenius": "frobenius", "power": "bnb"}


def _layout(node: Node, spatial: tuple[int, ...], kernel: tuple[int, ...]):
    n = len(spatial)
    strides = tuple(node.attr_ints("strides", (1,) * n) or (1,) * n)
    dilations = tuple(node.attr_ints("dilations", (1,) * n) or (1,) * n)
    pads = tuple(node.attr_ints("wrap_pads"))
    if len(strides) != n or len(dilations) != n or len(pads) != 2 * n or len(kernel) != n:
        raise RuleInputError(f"CircularConv '{node.name}': attributes do not match {n} spatial axes")
    return strides, dilations, pads


def periodic_conditions(spatial, kernel, strides, dilations, pads) -> str:
    """Why the circular convolution is not a part of the H-periodic one ("" when it is)."""
    n = len(spatial)
    for i, (h, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations)):
        begin, end = pads[i], pads[n + i]
        span = d * (k - 1) + 1
        outputs = window_count(h, begin, end, k, s, d) if s >= 1 else 0
        if s < 1 or d < 1 or h % s or span > h or not 0 <= begin <= h or not 0 <= end <= h or outputs > h // s:
            return (
                f"spatial axis {i}: size {h}, kernel span {span}, stride {s}, pads {begin}/{end} "
                f"({outputs} outputs) is not a slice of one period"
            )
    return ""


@register
class CircularConv(Op):
    domain = FUSED_DOMAIN
    family = FAMILY
    resizes = True  # a circulant operator: the polyphase norm covers every output
    summary = "exact norm of the circulant (period = input size) strided convolution"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        weight = ctx.const_input(node, 1)
        if weight is None:
            return Factor.unbounded("CircularConv with a variable kernel multiplies two variable values")
        spatial = ctx.input_shape(node)[2:]
        kernel = tuple(int(k) for k in np.shape(weight)[2:])
        strides, dilations, pads = _layout(node, spatial, kernel)
        why = periodic_conditions(spatial, kernel, strides, dilations, pads)
        if why:
            raise RuleInputError(f"CircularConv '{node.name}': {why}")
        scale = scale_of(weight)  # at unit scale: squares of 1e-170 or 1e200 leave float64's range
        w = torch.as_tensor(np.asarray(weight, dtype=np.float64) / scale, device=ctx.device)
        found, blocks = circulant_norm(
            w,
            spatial,
            (0,) * (2 * len(spatial)),
            strides,
            dilations,
            node.attr_int("group", 1),
            mode=_FIGURES.get(ctx.method, "bnb"),
            periods=tuple(spatial),
        )
        note = (
            f"circulant of period {'x'.join(map(str, spatial))}: {blocks.count} block(s) of "
            f"{blocks.block_shape[0]}x{blocks.block_shape[1]}; {found.summary()}"
        )
        return Factor(
            "bounded",
            float(found.upper) * scale,
            f"circulant-{_FIGURES.get(ctx.method, 'bnb')}",
            True,
            estimate=float(found.lower) * scale,
            notes=[note],
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        n = x.dim() - 2
        pads = node.attr_ints("wrap_pads")
        padded = F.pad(x, torch_pads(pads[:n], pads[n:]), mode="circular") if any(pads) else x
        strides = node.attr_ints("strides", (1,) * n) or (1,) * n
        dilations = node.attr_ints("dilations", (1,) * n) or (1,) * n
        return spatial_fn("conv", n, node)(
            padded, weight, bias, stride=tuple(strides), dilation=tuple(dilations), groups=node.attr_int("group", 1)
        )


__all__ = ["CircularConv", "periodic_conditions"]
