"""A convolution as a linear operator at one input size, and the bounds that need only its kernel.

Layouts follow ONNX: Conv weight (C_out, C_in/g, *k), ConvTranspose weight (C_in, C_out/g, *k),
pads (begin_1..begin_N, end_1..end_N).  conv.py chooses among the norms built from these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import PolyphaseKernel, embedding_period
from .bnb import BNB_TOL, BlockSource, max_singular_value
from .geometry import window_count

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class ConvOperator:
    """The linear map of one convolution at one input size, as torch functions on batches."""

    forward: Callable[[Tensor], Tensor]  # (B, *input_shape) -> (B, *output_shape)
    input_shape: tuple[int, ...]  # (C, *spatial), no batch
    output_shape: tuple[int, ...]
    adjoint: Callable[[Tensor], Tensor] | None = None  # (B, *output_shape) -> (B, *input_shape)


# ---------------------------------------------------------------------------------------------
# The true operator


def _torch_pad(begins, ends) -> list[int]:
    """ONNX-style per-dimension (begin, end) amounts in F.pad's order: last dimension first."""
    order = []
    for begin, end in reversed(list(zip(begins, ends))):
        order += [int(begin), int(end)]
    return order


def conv_operator(
    weight: Tensor,
    input_spatial: tuple[int, ...],
    *,
    strides,
    pads,
    dilations,
    groups: int = 1,
    transposed: bool = False,
    output_padding=None,
) -> ConvOperator:
    """Build the convolution (or ConvTranspose) at this input size as a forward function.

    ConvTranspose is the adjoint of the unpadded stride-s dilated convolution taken at the
    "full" size F = s·(H−1) + d·(k−1) + 1, followed by dropping pad_begin outputs at the start
    and pad_end at the end, then extending the end by output_padding (PyTorch and onnxruntime
    put the extra outputs there; they hold the full result's values where it has any, else 0).
    F.pad with negative amounts does the cropping.

    ``adjoint`` is the transpose written out (conv_transpose for a Conv, conv for a
    ConvTranspose, with the matching pads and crops), cheaper than autograd in a loop.
    """
    n = weight.ndim - 2
    begins, ends = pads[:n], pads[n:]
    conv, conv_t = _CONV[n], _CONV_TRANSPOSE[n]
    if not transposed:
        channels = weight.shape[1] * groups
        padding = _torch_pad(begins, ends)
        out = tuple(
            window_count(h, b, e, k, s, d)
            for h, b, e, k, s, d in zip(input_spatial, begins, ends, weight.shape[2:], strides, dilations)
        )
        # conv_transpose maps back onto (H_out − 1)·s + d·(k − 1) + 1 positions; the padded input
        # has H + b + e, the difference (< s) is output_padding; then the pads are cropped.
        extra = tuple(
            h + b + e - ((o - 1) * s + d * (k - 1) + 1)
            for h, b, e, o, k, s, d in zip(input_spatial, begins, ends, out, weight.shape[2:], strides, dilations)
        )
        crop = _torch_pad([-b for b in begins], [-e for e in ends])

        def forward(x: Tensor) -> Tensor:
            return conv(F.pad(x, padding), weight, stride=strides, dilation=dilations, groups=groups)

        def adjoint(y: Tensor) -> Tensor:
            full = conv_t(y, weight, stride=strides, dilation=dilations, groups=groups, output_padding=extra)
            return F.pad(full, crop)

        return ConvOperator(forward, (channels, *input_spatial), (weight.shape[0], *out), adjoint)

    channels_out = weight.shape[1] * groups
    extra = tuple(output_padding) if output_padding is not None else (0,) * n
    crop = _torch_pad([-b for b in begins], [p - e for p, e in zip(extra, ends)])
    uncrop = _torch_pad(begins, [e - p for p, e in zip(extra, ends)])

    def transposed_forward(x: Tensor) -> Tensor:
        full = conv_t(x, weight, stride=strides, dilation=dilations, groups=groups)
        return F.pad(full, crop)

    def transposed_adjoint(y: Tensor) -> Tensor:
        # back onto the full result (outputs past it were zeros independent of x, so cropped)
        return conv(F.pad(y, uncrop), weight, stride=strides, dilation=dilations, groups=groups)

    out = tuple(
        s * (h - 1) + d * (k - 1) + 1 - b - e + p
        for h, b, e, p, k, s, d in zip(input_spatial, begins, ends, extra, weight.shape[2:], strides, dilations)
    )
    return ConvOperator(transposed_forward, (weight.shape[0], *input_spatial), (channels_out, *out), transposed_adjoint)


# ---------------------------------------------------------------------------------------------
# Certified bounds from the kernel alone


def window_multiplicity(kernel, strides, dilations) -> int:
    """The most windows any input position falls in: Π ⌈k / (s / gcd(s, d))⌉.

    Window j reads position j·s + d·t.  For a fixed position p the taps t that can reach it
    satisfy d·t ≡ p (mod s); d·t mod s repeats with period s / gcd(s, d) in t, so at most
    ⌈k / (s / gcd(s, d))⌉ taps (each with one j) reach p.  Dimensions multiply.
    """
    return math.prod(math.ceil(k / (s // math.gcd(s, d))) for k, s, d in zip(kernel, strides, dilations))


def group_kernel_matrices(weight: Tensor, groups: int) -> Tensor:
    """(groups, C_out/g, C_in/g·Πk): the kernel of each group as the matrix applied to a patch."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def kmat_multiplicity_bound(weight: Tensor, groups: int, strides, dilations) -> float:
    """√multiplicity · max_g ‖K_g‖₂, valid at any input size and padding (no margin applied).

    The output is K_mat · P(x) with P(x) the matrix of patches; ‖K P‖_F ≤ ‖K‖₂‖P‖_F and
    ‖P(x)‖_F² ≤ multiplicity·‖x‖², since each input value sits in at most that many patches.
    Groups are independent blocks, so the worst group decides.
    """
    mult = window_multiplicity(weight.shape[2:], strides, dilations)
    top = torch.linalg.matrix_norm(group_kernel_matrices(weight, groups), ord=2).max()
    return math.sqrt(mult) * float(top)


def circulant_sizes(input_spatial, pads, kernel, strides, dilations, *, keep_stride: bool = True) -> tuple[int, ...]:
    """Period N per dimension of the circulant embedding (blocks.embedding_period; its docstring
    proves the embedding).  ``keep_stride=False`` gives the stride-1 period H + b + e that ignores
    the subsampling (the classical bound, which the polyphase one never exceeds at equal N)."""
    n = len(input_spatial)
    if keep_stride:
        return tuple(
            embedding_period(input_spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i])
            for i in range(n)
        )
    return tuple(
        embedding_period(input_spatial[i] + pads[i] + pads[n + i], 0, 0, kernel[i], 1, dilations[i]) for i in range(n)
    )


def circulant_norm(
    weight: Tensor,
    input_spatial,
    pads,
    strides,
    dilations,
    groups: int,
    *,
    mode: str = "bnb",
    periods: tuple[int, ...] | None = None,
    tol: float = BNB_TOL,
):
    """(BlockMax, PolyphaseKernel): the norm of the strided circulant embedding (margin applied).

    ``weight`` float64.  mode as in bnb.max_singular_value; ``periods`` overrides N.
    """
    kernel = PolyphaseKernel.from_conv(weight, input_spatial, pads, strides, dilations, groups, periods)
    return max_singular_value(block_source(kernel), mode, tol=tol), kernel


def block_source(kernel: PolyphaseKernel) -> BlockSource:
    return BlockSource(
        kernel.count,
        kernel.block_shape,
        kernel.left,
        kernel.gram,
        kernel.profile,
        lambda i: kernel.blocks(torch.tensor([i]))[0],
        kernel.weight.device,
        taps=kernel.taps,
    )


def adjoint_conv_geometry(spatial, pads, output_padding, kernel, strides, dilations):
    """(input size, pads) of the Conv whose adjoint a ConvTranspose is, up to maps that keep the norm.

    The ConvTranspose is P·Cᵀ (conv_operator): Cᵀ the adjoint of the unpadded convolution C at
    the full size F = s·(H−1) + d·(k−1) + 1, then P keeps the full positions [b, F − max(0, e − p))
    and appends max(0, p − e) zeros (b, e the pads, p the output padding).  So ‖ConvTranspose‖ =
    ‖C·Sᵀ‖ with S that selection: C applied to L = F − b − max(0, e − p) values placed at offset b
    — a Conv of input size L with pads (b, max(0, e − p)).  Per axis; axes are independent.
    Returns None when some L ≤ 0 (every output is an appended zero: the zero map).
    """
    n = len(spatial)
    sizes, begins, ends = [], [], []
    for i in range(n):
        full = strides[i] * (spatial[i] - 1) + dilations[i] * (kernel[i] - 1) + 1
        end = max(0, pads[n + i] - output_padding[i])
        sizes.append(full - pads[i] - end)
        begins.append(pads[i])
        ends.append(end)
    if min(sizes) < 1:
        return None
    return tuple(sizes), tuple(begins + ends)
