"""ℓ2 operator norms of N-d convolutions, transposed convolutions and average pooling.

A convolution's norm depends on the input size, padding, stride, dilation and groups, so every
figure here is for the operator at a given input size (DESIGN.md §4).  Layouts follow ONNX:
Conv weight (C_out, C_in/g, *k), ConvTranspose weight (C_in, C_out/g, *k), pads
(begin_1..begin_N, end_1..end_N).  Bias is an affine offset and never matters.

Figures (the result's ``method``):
  materialized       exact σ_max of the operator's Gram matrix, for small operators;
  fft-exact          circulant embedding (Sedghi et al. 2019): max over frequencies of σ_max of the
                     c_out×c_in block of the kernel's DFT, a certified bound at this input size;
  kmat-multiplicity  √(most windows an input falls in)·‖K_mat‖₂, certified at every input size;
  fft-gram           the circulant bound with Gram iteration per block instead of an SVD;
  fft-frobenius      the circulant bound with the Frobenius norm per block (loose);
  power              power iteration on the true operator: an estimate from below, not certified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .dense import ROUNDING_MARGIN, SVD_MARGIN, as_float64, gram_iteration
from .materialize import materialized_norm
from .power import forward_and_adjoint, power_iteration
from .result import NormResult

CONV_METHODS = ("auto", "exact", "gram", "power", "frobenius")
MATERIALIZE_LIMIT = 4096
POWER_ITERATIONS = 50
# Memory for one chunk of frequency blocks (complex128) and the work on it; keeps the peak
# well under 1 GB even for 512×512 channels.
FREQUENCY_CHUNK_BYTES = 128 * 2**20

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class ConvOperator:
    """The linear map of one convolution at one input size, as torch functions on batches."""

    forward: Callable[[Tensor], Tensor]  # (B, *input_shape) -> (B, *output_shape)
    input_shape: tuple[int, ...]  # (C, *spatial), no batch
    output_shape: tuple[int, ...]


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
    """
    n = weight.ndim - 2
    begins, ends = pads[:n], pads[n:]
    if not transposed:
        channels = weight.shape[1] * groups
        conv = _CONV[n]
        padding = _torch_pad(begins, ends)

        def forward(x: Tensor) -> Tensor:
            return conv(F.pad(x, padding), weight, stride=strides, dilation=dilations, groups=groups)

        out = tuple((h + b + e - d * (k - 1) - 1) // s + 1 for h, b, e, k, s, d in
                    zip(input_spatial, begins, ends, weight.shape[2:], strides, dilations))
        return ConvOperator(forward, (channels, *input_spatial), (weight.shape[0], *out))

    channels_out = weight.shape[1] * groups
    conv_t = _CONV_TRANSPOSE[n]
    extra = tuple(output_padding) if output_padding is not None else (0,) * n
    crop = _torch_pad([-b for b in begins], [p - e for p, e in zip(extra, ends)])

    def forward(x: Tensor) -> Tensor:
        full = conv_t(x, weight, stride=strides, dilation=dilations, groups=groups)
        return F.pad(full, crop)

    out = tuple(s * (h - 1) + d * (k - 1) + 1 - b - e + p for h, b, e, p, k, s, d in
                zip(input_spatial, begins, ends, extra, weight.shape[2:], strides, dilations))
    return ConvOperator(forward, (weight.shape[0], *input_spatial), (channels_out, *out))


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


def frequency_blocks(weight: Tensor, sizes: tuple[int, ...], dilations, groups: int,
                     chunk: int | None = None) -> Iterator[Tensor]:
    """The kernel's DFT blocks at the rfftn frequencies of an N-periodic grid, chunk by chunk.

    Yields complex128 tensors (frequencies, groups, C_out/g, C_in/g), in the row-major order of
    the rfftn grid (N_1, …, N_{D−1}, N_D//2 + 1).  Block ω is Σ_t W[:, :, t]·exp(−2πi Σ_i ω_i d_i t_i / N_i),
    exactly rfftn of the dilated kernel zero-padded to ``sizes``; we evaluate that sum directly
    (a real matrix product per chunk) so only one chunk of blocks is ever in memory.  rfftn's
    half grid is enough: the missing frequencies hold complex conjugate blocks, with the same
    singular values.
    """
    device = weight.device
    c_out, c_in_g, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
    taps = math.prod(kernel)
    flat = weight.reshape(groups, (c_out // groups) * c_in_g, taps)
    tap_index = torch.stack(torch.unravel_index(torch.arange(taps, device=device), tuple(kernel)), dim=1)
    grid = (*sizes[:-1], sizes[-1] // 2 + 1)
    total = math.prod(grid)
    if chunk is None:
        per_frequency = 6 * 16 * flat.shape[0] * flat.shape[1] + 16 * taps
        chunk = max(1, FREQUENCY_CHUNK_BYTES // per_frequency)
    for start in range(0, total, chunk):
        frequencies = torch.stack(
            torch.unravel_index(torch.arange(start, min(total, start + chunk), device=device), grid), dim=1)
        # Integer products reduced mod N before the division keep the angles exact to ~1e-16.
        angle = torch.zeros((taps, frequencies.shape[0]), dtype=torch.float64, device=device)
        for axis, (size, dilation) in enumerate(zip(sizes, dilations)):
            residue = (tap_index[:, axis, None] * dilation * frequencies[None, :, axis]) % size
            angle += residue.to(torch.float64) / size
        angle *= 2 * math.pi
        real = flat @ torch.cos(angle)
        imag = -(flat @ torch.sin(angle))
        blocks = torch.complex(real, imag).reshape(groups, c_out // groups, c_in_g, -1)
        yield blocks.permute(3, 0, 1, 2).contiguous()


def circulant_sizes(input_spatial, pads, kernel, strides, dilations) -> tuple[int, ...]:
    """Period N_i of a circular convolution that contains the padded convolution, per dimension.

    Why it is a bound: put the input at offset pad_begin in a zero vector of length N_i ≥
    H_i + pad_begin_i + pad_end_i (an isometry, so norms are kept).  The circular
    cross-correlation z[j] = Σ_t W_t·x[(j + d·t) mod N] agrees with the padded convolution at
    every kept output j = j'·s, j' < H_out, because j + d·t ≤ (H_out − 1)·s + d·(k − 1) < N never
    wraps around and reads the same zeros where the convolution reads padding.  Keeping only
    those outputs is a coordinate projection (norm ≤ 1).  So ‖conv‖ ≤ ‖circular conv‖, and a
    circular convolution is diagonalised by the DFT: its norm is max_ω σ_max(K̂(ω)).  Strides
    only drop outputs, which is why the bound holds but is loose for s > 1.
    """
    n = len(input_spatial)
    sizes = []
    for i in range(n):
        padded = input_spatial[i] + pads[i] + pads[n + i]
        out = (padded - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        sizes.append(max(padded, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1))
    return tuple(sizes)


def circulant_bound(weight: Tensor, sizes: tuple[int, ...], dilations, groups: int, reduce: str = "svd",
                    chunk: int | None = None) -> float:
    """max over frequencies and groups of a per-block norm (no margin applied).

    reduce: 'svd' (σ_max, exact per block), 'gram' (Gram-iteration upper bound per block),
    'frobenius' (Frobenius norm per block).  Each is ≥ σ_max, so the maximum is a certified
    bound on the circular convolution.
    """
    best = 0.0
    for blocks in frequency_blocks(weight, sizes, dilations, groups, chunk):
        if reduce == "svd":
            per_block = torch.linalg.svdvals(blocks)[..., 0]
        elif reduce == "gram":
            per_block = gram_iteration(blocks)
        elif reduce == "frobenius":
            per_block = torch.linalg.matrix_norm(blocks, ord="fro")
        else:
            raise ValueError(f"unknown block reduction {reduce!r}")
        best = max(best, float(per_block.max()))
    return best


# ---------------------------------------------------------------------------------------------
# Public entry points


def conv_norm(weight, input_spatial: tuple[int, ...], *, strides, pads, dilations, groups: int = 1,
              transposed: bool = False, output_padding=None, method: str = "auto",
              device: torch.device = torch.device("cpu"), materialize_limit: int = MATERIALIZE_LIMIT,
              power_iterations: int = POWER_ITERATIONS) -> NormResult:
    """ℓ2 operator norm of an N-d Conv / ConvTranspose at the given input size (N = 1, 2, 3).

    method 'auto' / 'exact': exact ('materialized') when min(input, output dimension) ≤
    ``materialize_limit``, else the smaller of 'fft-exact' and 'kmat-multiplicity'.
    'gram' → 'fft-gram', 'frobenius' → 'fft-frobenius', 'power' → 'power' (not certified).

    ``estimate``: power iteration on the true operator (``power_iterations`` steps; 0 skips it).
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
        return NormResult(sigma * SVD_MARGIN, "materialized", True, estimate=sigma, frobenius=frobenius)

    estimate = _operator_power(operator, device, power_iterations) if power_iterations > 0 else None
    # A ConvTranspose is bounded by the convolution it is (a crop of) the adjoint of, taken
    # unpadded at the full size; the weight is already in that convolution's layout.
    if transposed:
        circ_input = tuple(s * (h - 1) + d * (k - 1) + 1 for h, k, s, d in zip(spatial, w.shape[2:], strides, dilations))
        circ_pads = (0,) * (2 * len(spatial))
    else:
        circ_input, circ_pads = spatial, pads
    sizes = circulant_sizes(circ_input, circ_pads, w.shape[2:], strides, dilations)
    notes = []
    if any(s > 1 for s in strides):
        notes.append("stride > 1: the circulant bound ignores the subsampling and may be loose")

    if method == "gram":
        value = circulant_bound(w, sizes, dilations, groups, "gram") * ROUNDING_MARGIN
        return NormResult(value, "fft-gram", True, estimate=estimate, frobenius=frobenius, notes=notes)
    if method == "frobenius":
        value = circulant_bound(w, sizes, dilations, groups, "frobenius") * ROUNDING_MARGIN
        return NormResult(value, "fft-frobenius", True, estimate=estimate, frobenius=frobenius, notes=notes)

    fft = circulant_bound(w, sizes, dilations, groups, "svd") * ROUNDING_MARGIN
    kmat = kmat_multiplicity_bound(w, groups, strides, dilations) * SVD_MARGIN
    notes.append(f"fft-exact {fft:.6g} (circulant period {'x'.join(map(str, sizes))}), "
                 f"kmat-multiplicity {kmat:.6g} (multiplicity {mult})")
    if kmat < fft:
        return NormResult(kmat, "kmat-multiplicity", True, estimate=estimate, frobenius=frobenius, notes=notes)
    return NormResult(fft, "fft-exact", True, estimate=estimate, frobenius=frobenius, notes=notes)


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
