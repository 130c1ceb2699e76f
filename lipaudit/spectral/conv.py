"""ℓ2 operator norms of N-d convolutions, transposed convolutions and average pooling.

A convolution's norm depends on the input size, padding, stride, dilation and groups, so every
figure here is for the operator at a given input size (DESIGN.md §4).  Layouts follow ONNX:
Conv weight (C_out, C_in/g, *k), ConvTranspose weight (C_in, C_out/g, *k), pads
(begin_1..begin_N, end_1..end_N).  Bias is an affine offset and never matters.

The certified figure is the norm of a circulant embedding that keeps the stride (blocks.py: the
zero-padded convolution embeds with no wrap-around in an N-periodic one with s | N, whose
polyphase frequency blocks give its norm exactly), computed over the blocks by bnb.py.
The result's ``method`` is '<embedding>-<figure>':
  embedding  fft        stride 1: the kernel's DFT blocks, C_out × C_in/g (Sedghi et al. 2019);
             polyphase  stride > 1: polyphase blocks C_out × C_in/g·s^D (Senderovich et al. 2022),
                        exact for the strided circulant, so the stride is not thrown away;
             kmat       every frequency gives the same block (1×1 kernels, stride ≥ kernel span):
                        no FFT, the reshaped kernel's norm, once;
  figure     bnb        'auto': branch and bound over the blocks, within BNB_TOL of 'exact';
             exact      every block through a Hermitian eigensolver;
             gram       Gram iteration per block (blocks leave once below the lower estimate);
             frobenius  Frobenius norm per block (loose).
Plus: materialized (exact σ_max of the operator's Gram matrix, for small operators), power
(power iteration on the true operator: an estimate from below, not certified) and, for average
pooling with partial windows, schur.

``estimate`` is Lanczos on the true operator, started from the embedding's top singular vector
(a plane wave cropped to the input), so a dozen steps suffice; ``gap`` = value / estimate − 1
bounds how far the certified figure can be from the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import PolyphaseKernel, embedding_period
from .bnb import BNB_TOL, BlockSource, max_singular_value
from .dense import SVD_MARGIN, _gap, as_float64
from .materialize import materialized_norm
from .power import forward_and_adjoint, lanczos_operator, power_iteration
from .result import NormResult

CONV_METHODS = ("auto", "exact", "gram", "power", "frobenius")
MATERIALIZE_LIMIT = 4096
POWER_ITERATIONS = 50
# Lanczos on the true operator from the embedding's top singular vector, for the estimate: at
# most this many steps (each one forward and one adjoint), fewer once the Ritz value settles.
WARM_STEPS = 12
WARM_TOL = 1e-6
_FIGURES = {"auto": "bnb", "exact": "exact", "gram": "gram", "frobenius": "frobenius"}

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


def conv_operator(weight: Tensor, input_spatial: tuple[int, ...], *, strides, pads, dilations,
                  groups: int = 1, transposed: bool = False, output_padding=None) -> ConvOperator:
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
        out = tuple((h + b + e - d * (k - 1) - 1) // s + 1 for h, b, e, k, s, d in
                    zip(input_spatial, begins, ends, weight.shape[2:], strides, dilations))
        # conv_transpose maps back onto (H_out − 1)·s + d·(k − 1) + 1 positions; the padded input
        # has H + b + e, the difference (< s) is output_padding; then the pads are cropped.
        extra = tuple(h + b + e - ((o - 1) * s + d * (k - 1) + 1) for h, b, e, o, k, s, d in
                      zip(input_spatial, begins, ends, out, weight.shape[2:], strides, dilations))
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

    def forward(x: Tensor) -> Tensor:
        full = conv_t(x, weight, stride=strides, dilation=dilations, groups=groups)
        return F.pad(full, crop)

    def adjoint(y: Tensor) -> Tensor:
        # back onto the full result (outputs past it were zeros independent of x, so cropped)
        return conv(F.pad(y, uncrop), weight, stride=strides, dilation=dilations, groups=groups)

    out = tuple(s * (h - 1) + d * (k - 1) + 1 - b - e + p for h, b, e, p, k, s, d in
                zip(input_spatial, begins, ends, extra, weight.shape[2:], strides, dilations))
    return ConvOperator(forward, (weight.shape[0], *input_spatial), (channels_out, *out), adjoint)


# ---------------------------------------------------------------------------------------------
# Certified bounds from the kernel alone


def window_multiplicity(kernel, strides, dilations) -> int:
    """The most windows any input position falls in: Π ⌈k / (s / gcd(s, d))⌉.

    Window j reads position j·s + d·t.  For a fixed position p the taps t that can reach it
    satisfy d·t ≡ p (mod s); d·t mod s repeats with period s / gcd(s, d) in t, so at most
    ⌈k / (s / gcd(s, d))⌉ taps (each with one j) reach p.  Dimensions multiply.
    """
    return math.prod(math.ceil(k / (s // math.gcd(s, d))) for k, s, d in zip(kernel, strides, dilations))


def _group_kernel_matrices(weight: Tensor, groups: int) -> Tensor:
    """(groups, C_out/g, C_in/g·Πk): the kernel of each group as the matrix applied to a patch."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def kmat_multiplicity_bound(weight: Tensor, groups: int, strides, dilations) -> float:
    """√multiplicity · max_g ‖K_g‖₂, valid at any input size and padding (no margin applied).

    The output is K_mat · P(x) with P(x) the matrix of patches; ‖K P‖_F ≤ ‖K‖₂‖P‖_F and
    ‖P(x)‖_F² ≤ multiplicity·‖x‖², since each input value sits in at most that many patches.
    Groups are independent blocks, so the worst group decides.
    """
    mult = window_multiplicity(weight.shape[2:], strides, dilations)
    top = torch.linalg.matrix_norm(_group_kernel_matrices(weight, groups), ord=2).max()
    return math.sqrt(mult) * float(top)


def circulant_sizes(input_spatial, pads, kernel, strides, dilations, *, keep_stride: bool = True) -> tuple[int, ...]:
    """Period N per dimension of the circulant embedding (blocks.embedding_period; its docstring
    proves the embedding).  ``keep_stride=False`` gives the stride-1 period H + b + e that ignores
    the subsampling (the classical bound, which the polyphase one never exceeds at equal N)."""
    n = len(input_spatial)
    if keep_stride:
        return tuple(embedding_period(input_spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i])
                     for i in range(n))
    return tuple(embedding_period(input_spatial[i] + pads[i] + pads[n + i], 0, 0, kernel[i], 1, dilations[i])
                 for i in range(n))


def circulant_norm(weight: Tensor, input_spatial, pads, strides, dilations, groups: int, *, mode: str = "bnb",
                   periods: tuple[int, ...] | None = None, tol: float = BNB_TOL):
    """(BlockMax, PolyphaseKernel): the norm of the strided circulant embedding (margin applied).

    ``weight`` float64.  mode as in bnb.max_singular_value; ``periods`` overrides N.
    """
    kernel = PolyphaseKernel.from_conv(weight, input_spatial, pads, strides, dilations, groups, periods)
    source = BlockSource(kernel.count, kernel.block_shape, kernel.left, kernel.gram, kernel.profile,
                         lambda i: kernel.blocks(torch.tensor([i]))[0], weight.device, taps=kernel.taps)
    return max_singular_value(source, mode, tol=tol), kernel


# ---------------------------------------------------------------------------------------------
# Public entry points


def conv_norm(weight, input_spatial: tuple[int, ...], *, strides, pads, dilations, groups: int = 1,
              transposed: bool = False, output_padding=None, method: str = "auto",
              device: torch.device = torch.device("cpu"), materialize_limit: int = MATERIALIZE_LIMIT,
              power_iterations: int = POWER_ITERATIONS, tol: float = BNB_TOL) -> NormResult:
    """ℓ2 operator norm of an N-d Conv / ConvTranspose at the given input size (N = 1, 2, 3).

    method 'auto' / 'exact': 'materialized' when min(input, output dimension) ≤
    ``materialize_limit``, else the polyphase circulant bound by branch and bound ('auto', within
    ``tol`` of the exact figure) or through every block ('exact').  'gram' and 'frobenius' bound
    the same blocks more cheaply; 'power' is power iteration on the operator (not certified).

    ``estimate``: a lower estimate on the true operator — Lanczos from the embedding's top singular
    vector, at most min(``power_iterations``, WARM_STEPS) steps (0 skips it); for 'power', power
    iteration from a random start.  ``gap`` = value / estimate − 1.
    ``frobenius``: √multiplicity · max_g ‖K_g‖_F, a cheap certified figure for any input size.
    """
    if method not in CONV_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(CONV_METHODS)}")
    device = torch.device(device)
    w = as_float64(weight, device)
    spatial, strides, pads, dilations, output_padding = _check_conv_arguments(
        w, input_spatial, strides, pads, dilations, groups, transposed, output_padding)
    operator = conv_operator(w, spatial, strides=strides, pads=pads, dilations=dilations, groups=groups,
                             transposed=transposed, output_padding=output_padding)
    mult = window_multiplicity(w.shape[2:], strides, dilations)
    frobenius = math.sqrt(mult) * float(
        torch.linalg.matrix_norm(_group_kernel_matrices(w, groups), ord="fro").max()) * SVD_MARGIN

    if method == "power":
        estimate = _operator_power(operator, device, max(1, power_iterations))
        return NormResult(estimate, "power", False, estimate=estimate, frobenius=frobenius)
    if method in ("auto", "exact") and _small(operator, materialize_limit):
        sigma = materialized_norm(operator.forward, operator.input_shape, operator.output_shape, device=device)
        return NormResult(sigma * SVD_MARGIN, "materialized", True, estimate=sigma, frobenius=frobenius,
                          gap=SVD_MARGIN - 1)

    # A ConvTranspose is P·Cᵀ: the adjoint of the unpadded convolution C at the full size
    # F = s·(H−1) + d·(k−1) + 1 (same weight, already in C's layout), then P drops the pads and
    # appends output_padding positions, each a copy of one full-result entry or 0 — a partial
    # coordinate map with ‖P‖ ≤ 1.  So ‖ConvTranspose‖ ≤ ‖Cᵀ‖ = ‖C‖.
    if transposed:
        bound_spatial = tuple(s * (h - 1) + d * (k - 1) + 1
                              for h, k, s, d in zip(spatial, w.shape[2:], strides, dilations))
        bound_pads = (0,) * (2 * len(spatial))
    else:
        bound_spatial, bound_pads = spatial, pads
    found, kernel = circulant_norm(w, bound_spatial, bound_pads, strides, dilations, groups, mode=_FIGURES[method],
                                   tol=tol)
    # "kmat": one block for every frequency, so no FFT and one dense norm.  For a 1×1 kernel with
    # stride 1 the operator is W applied at every pixel (I ⊗ W), norm ‖W‖₂ exactly; padding only
    # adds output pixels that read zeros.  With a stride the kept pixels are a subset: S·(I ⊗ W)
    # with S a coordinate projection, so the norm is ≤ ‖W‖₂ (= as soon as one output pixel reads
    # the input).  Likewise for any kernel with stride ≥ its dilated span: disjoint windows.
    embedding = "kmat" if kernel.is_real else ("polyphase" if any(s > 1 for s in strides) else "fft")
    notes = [f"{embedding} embedding: period {'x'.join(map(str, kernel.periods))}, {kernel.count} block(s) of "
             f"{kernel.block_shape[0]}x{kernel.block_shape[1]}; {found.summary()}"]
    estimate = None
    if power_iterations > 0:
        start = _warm_start(kernel, found, spatial, bound_pads, strides, transposed, device)
        estimate = _warm_estimate(operator, w, spatial, strides, pads, dilations, groups, transposed,
                                  output_padding, start, min(power_iterations, WARM_STEPS))
    return NormResult(found.upper, f"{embedding}-{_FIGURES[method]}", True, estimate=estimate, frobenius=frobenius,
                      notes=notes, gap=_gap(found.upper, estimate))


def avgpool_norm(kernel: tuple[int, ...], input_spatial, *, strides, pads, count_include_pad: bool,
                 channels: int, ceil_mode: bool = False, method: str = "auto",
                 device: torch.device = torch.device("cpu"), dilations=None,
                 materialize_limit: int = MATERIALIZE_LIMIT, power_iterations: int = POWER_ITERATIONS) -> NormResult:
    """ℓ2 norm of AveragePool as a linear operator (ONNX attributes; torch's ceil_mode rule).

    Every channel is pooled the same way and independently, so the norm is that of one channel
    (``channels`` only has to be positive).  When every window has the full divisor Πk the
    operator is a convolution with the uniform kernel 1/Πk and conv_norm measures it.  Otherwise
    (count_include_pad=0 at the borders, or ceil_mode's partial windows) the operator is
    materialized when small, or bounded by Schur's test: ‖A‖₂ ≤ √(max row sum · max column sum)
    of |A|, computed on the true operator (method 'schur').
    """
    if method not in CONV_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(CONV_METHODS)}")
    if channels < 1:
        raise ValueError(f"AveragePool needs at least one channel, got {channels}")
    device = torch.device(device)
    kernel, spatial = tuple(int(k) for k in kernel), tuple(int(h) for h in input_spatial)
    n = len(kernel)
    dilations = (1,) * n if dilations is None else tuple(int(d) for d in dilations)
    strides, pads = tuple(int(s) for s in strides), tuple(int(p) for p in pads)
    if len(spatial) != n or len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
        raise ValueError(f"AveragePool attributes disagree in rank: kernel {kernel}, input {spatial}, "
                         f"strides {strides}, dilations {dilations}, pads {pads}")
    operator, divisors = _avgpool_operator(kernel, spatial, strides, pads, dilations, count_include_pad,
                                           ceil_mode, device)
    window = math.prod(kernel)
    if bool((divisors == window).all()):
        uniform = torch.full((1, 1, *kernel), 1.0 / window, dtype=torch.float64, device=device)
        return conv_norm(uniform, spatial, strides=strides, pads=pads, dilations=dilations, method=method,
                         device=device, materialize_limit=materialize_limit, power_iterations=power_iterations)

    notes = ["border windows average fewer cells, so the pool is not a plain convolution"]
    if method == "power":
        estimate = _operator_power(operator, device, max(1, power_iterations))
        return NormResult(estimate, "power", False, estimate=estimate, notes=notes)
    if method in ("auto", "exact") and _small(operator, materialize_limit):
        sigma = materialized_norm(operator.forward, operator.input_shape, operator.output_shape, device=device)
        return NormResult(sigma * SVD_MARGIN, "materialized", True, estimate=sigma, notes=notes)
    estimate = _operator_power(operator, device, power_iterations) if power_iterations > 0 else None
    # All entries of the operator are ≥ 0, so A·1 and Aᵀ·1 are exactly the row and column sums of |A|.
    ones_in = torch.ones((1, *operator.input_shape), dtype=torch.float64, device=device)
    ones_out = torch.ones((1, *operator.output_shape), dtype=torch.float64, device=device)
    row_sums, column_sums = forward_and_adjoint(operator.forward, ones_in, ones_out)
    value = math.sqrt(float(row_sums.max()) * float(column_sums.max())) * SVD_MARGIN
    return NormResult(value, "schur", True, estimate=estimate, notes=notes)


# ---------------------------------------------------------------------------------------------
# Helpers


def _avgpool_operator(kernel, spatial, strides, pads, dilations, count_include_pad, ceil_mode, device):
    """One channel of AveragePool as (operator, divisor per output).

    Output count per dimension follows torch (and onnxruntime): floor, or with ceil_mode one more
    partial window unless it would start past the input and the begin padding.  Each output is
    the window's sum over the zero-padded input divided by the number of cells it covers among
    the counted ones: the real input cells, or with count_include_pad the padded region too
    (never the cells a ceil_mode window hangs out past the padding).
    """
    n = len(kernel)
    outs, extended_ends = [], []
    for i in range(n):
        span = dilations[i] * (kernel[i] - 1) + 1
        room = spatial[i] + pads[i] + pads[n + i] - span
        if room < 0:
            raise ValueError(f"AveragePool window {span} is larger than the padded input "
                             f"{spatial[i] + pads[i] + pads[n + i]} along spatial axis {i}")
        out = room // strides[i] + 1
        if ceil_mode:
            out = -(-room // strides[i]) + 1
            if (out - 1) * strides[i] >= spatial[i] + pads[i]:
                out -= 1
        outs.append(out)
        extended_ends.append(max(pads[n + i], (out - 1) * strides[i] + span - spatial[i] - pads[i]))
    begins = pads[:n]
    padding = _torch_pad(begins, extended_ends)
    counted = torch.zeros((1, 1, *(h + b + e for h, b, e in zip(spatial, begins, extended_ends))),
                          dtype=torch.float64, device=device)
    region = [slice(None), slice(None)]
    for i in range(n):
        first = 0 if count_include_pad else begins[i]
        last = spatial[i] + begins[i] + (pads[n + i] if count_include_pad else 0)
        region.append(slice(first, last))
    counted[tuple(region)] = 1.0
    ones = torch.ones((1, 1, *kernel), dtype=torch.float64, device=device)
    conv = _CONV[n]

    def window_sums(padded: Tensor) -> Tensor:
        sums = conv(padded, ones, stride=strides, dilation=dilations)
        return sums[(slice(None), slice(None), *(slice(0, o) for o in outs))]

    divisors = window_sums(counted)
    # A window with nothing counted sums only padding zeros; dividing by 1 keeps that output 0.
    safe = divisors.clamp(min=1.0)

    def forward(x: Tensor) -> Tensor:
        return window_sums(F.pad(x, padding)) / safe

    return ConvOperator(forward, (1, *spatial), (1, *outs)), divisors


def _check_conv_arguments(w, input_spatial, strides, pads, dilations, groups, transposed, output_padding):
    n = w.ndim - 2
    if n not in (1, 2, 3):
        raise ValueError(f"convolution weight must have 3 to 5 dimensions, got shape {tuple(w.shape)}")
    spatial = tuple(int(h) for h in input_spatial)
    strides, dilations = tuple(int(s) for s in strides), tuple(int(d) for d in dilations)
    pads = tuple(int(p) for p in pads)
    output_padding = (0,) * n if output_padding is None else tuple(int(p) for p in output_padding)
    if len(spatial) != n or len(strides) != n or len(dilations) != n or len(pads) != 2 * n \
            or len(output_padding) != n:
        raise ValueError(f"{n}-d convolution needs {n} input sizes, strides, dilations and output paddings and "
                         f"{2 * n} pads; got input {spatial}, strides {strides}, dilations {dilations}, "
                         f"pads {pads}, output_padding {output_padding}")
    if min(strides + dilations) < 1 or min(spatial) < 1 or groups < 1:
        raise ValueError("input sizes, strides, dilations and groups must be positive")
    if w.shape[0] % groups:
        raise ValueError(f"weight dimension 0 ({w.shape[0]}) is not divisible by groups={groups}")
    for i in range(n):
        span = dilations[i] * (w.shape[2 + i] - 1) + 1
        if transposed:
            size = strides[i] * (spatial[i] - 1) + span - pads[i] - pads[n + i] + output_padding[i]
        else:
            size = (spatial[i] + pads[i] + pads[n + i] - span) // strides[i] + 1
        if size < 1:
            raise ValueError(f"the convolution has no output along spatial axis {i} "
                             f"(input {spatial[i]}, kernel span {span}, pads {pads[i]}/{pads[n + i]})")
    return spatial, strides, pads, dilations, output_padding


def _small(operator: ConvOperator, limit: int) -> bool:
    return min(math.prod(operator.input_shape), math.prod(operator.output_shape)) <= limit


def _operator_power(operator: ConvOperator, device: torch.device, iterations: int) -> float:
    return power_iteration(operator.forward, (1, *operator.input_shape), iterations=iterations, device=device)


def _warm_start(kernel: PolyphaseKernel, found, spatial, pads, strides, transposed: bool,
                device: torch.device) -> Tensor | None:
    """The embedding's top singular vector, as an input of the true operator (None if unknown).

    For a Conv: the right singular vector's plane wave, cropped to the input.  For a
    ConvTranspose (the adjoint of the bounding conv): the left singular vector's plane wave on
    the bounding conv's output grid, which is the ConvTranspose's input.
    """
    if found.argmax is None or found.vector is None:
        return None
    if not transposed:
        return kernel.plane_wave(found.argmax, found.vector, spatial, pads, strides)
    block = kernel.blocks(torch.tensor([found.argmax], device=device))[0]
    u = block @ found.vector.to(block.dtype)
    return kernel.output_wave(found.argmax, u, spatial)


def _warm_estimate(operator: ConvOperator, w: Tensor, spatial, strides, pads, dilations, groups, transposed,
                   output_padding, start: Tensor | None, steps: int) -> float:
    """Lower estimate of the true operator's norm: Lanczos from ``start``, then ‖A v‖/‖v‖.

    The Lanczos steps run in float32 (several times faster on a CPU); the figure returned is
    ‖A v‖/‖v‖ for the Ritz vector v, evaluated in float64, so it never exceeds ‖A‖ beyond
    float64 rounding.
    """
    fast = conv_operator(w.to(torch.float32), spatial, strides=strides, pads=pads, dilations=dilations,
                         groups=groups, transposed=transposed, output_padding=output_padding)
    if start is None or float(torch.linalg.vector_norm(start)) == 0.0:
        generator = torch.Generator(device="cpu").manual_seed(0)
        start = torch.randn(operator.input_shape, generator=generator, dtype=torch.float64).to(w.device)
    v = lanczos_operator(fast.forward, start.to(torch.float32)[None], steps=steps, tol=WARM_TOL,
                         adjoint=fast.adjoint)
    v = v.to(torch.float64)
    with torch.no_grad():
        return float(torch.linalg.vector_norm(operator.forward(v)) / torch.linalg.vector_norm(v))
