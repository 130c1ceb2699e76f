"""The norm of a small linear operator from its Gram matrix, certified.

The Gram matrix G of the operator's smaller side (AᵀA or AAᵀ, n×n, one per independent block such
as a convolution's group) comes either from the kernel's tap pairs (conv_gram.py, for
convolutions) or from pushing chunks of basis vectors through the operator and its adjoint
(``operator_gram``, for anything else linear, e.g. an average pool with partial windows).

σ_max² = λ_max(G) is then certified by
  * a symmetric eigensolver for small ones (cost.uses_eigensolver; backward stable: ~n²·u·‖G‖,
    which the margin covers), blocks whose ‖A_b‖_F is already below the best value skipped;
  * otherwise a Cholesky certificate that λ_max(G) < (L·(1 + tol))² for a lower estimate L:
    within ``tol`` of the exact figure at a third of the eigensolver's cost.  L best comes from
    the caller — Lanczos on the convolution itself costs a few convolutions per step instead of
    an n² pass over G, and 80 steps reach ~1e-12 on convolutions' clustered spectra.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .bnb import BNB_TOL, LANCZOS_LONG, certify_below, lanczos_top, rounding_margin
from .cost import OPERATOR_LANCZOS_STEPS, OPERATOR_LANCZOS_TOL, uses_eigensolver
from .device import one_thread
from .power import forward_and_adjoint, lanczos_operator

# Memory for one chunk of basis vectors pushed through the operator (input and output copies).
CHUNK_BYTES = 256 * 2**20
# Memory for one chunk of Gram matrices handed to the eigensolver (with its workspace).
EIGEN_CHUNK_BYTES = 256 * 2**20
# A float64 eigensolver's σ_max is accurate to ~1e-13 at these sizes; the figure is multiplied by
# at least 1 + this (the Gram matrix's own rounding may ask for more: bnb.rounding_margin).
EIGEN_MARGIN = 1e-9
# The Cholesky threshold's relative excess over the estimate: tol·FIRST_STEP first (the
# caller's estimate is usually converged to ~1e-12, so the figure then matches an eigensolver's
# to ~1e-8), a hundred times more after each failure, up to this; a block that still fails goes
# to the eigensolver.
FIRST_STEP = 1e-2
ESCALATION_LIMIT = 1e-2
# Up to this side a Cholesky factorisation runs on one thread (device.one_thread): on a loaded
# 2-core machine, n = 1024 took 0.04 s on one thread and 0.12 s on two; from n ≈ 4096 on, two
# threads pay on a machine of one's own.
SMALL_CHOLESKY_SIDE = 2048


@dataclass(frozen=True)
class GramSource:
    """The Gram matrices of independent blocks A_b (a convolution's groups), formed on demand.

    ``gram(index)``: (len, side, side) float64 for block indices (int64).  ``profile()``: per
    block (‖A_b‖_F, a lower estimate of σ_max(A_b)) on the CPU.  ``inner``: the most products
    summed into one Gram entry, for the rounding margin (bnb.rounding_margin).
    """

    count: int
    side: int
    inner: int
    gram: Callable[[Tensor], Tensor]
    profile: Callable[[], tuple[Tensor, Tensor]]


@dataclass
class GramNorm:
    """max over the blocks of σ_max: a certified ``upper`` (margin applied) and a ``lower`` estimate."""

    upper: float
    lower: float
    notes: list[str] = field(default_factory=list)


def gram_norm(source: GramSource, *, tol: float = BNB_TOL, estimate: float | None = None) -> GramNorm:
    """max_b σ_max(A_b) over a source of Gram matrices, certified (margin applied).

    ``estimate``: a lower estimate of the answer (e.g. from Lanczos on the operator itself); the
    Cholesky certificate is first tried at (estimate·(1 + tol))², so a good one saves the work.
    """
    if source.count == 0 or source.side == 0:
        return GramNorm(0.0, 0.0)
    if uses_eigensolver(source.count, source.side):
        return _eigen_norm(source)
    return _cholesky_norm(source, estimate, tol)


def _cholesky_norm(source: GramSource, estimate: float | None, tol: float) -> GramNorm:
    """Cholesky certificates at (L·(1 + τ))², τ = tol·FIRST_STEP first, 100× more per failure.

    L is the best lower estimate: the caller's, the largest diagonal entry, or (when the caller
    had none) Lanczos on the largest block's Gram matrix.  Every block ends certified: by its
    Frobenius norm when that is already below the threshold, by a Cholesky factorisation that ran
    to completion, or — only if even τ = ESCALATION_LIMIT fails — by the eigensolver.  One
    factorisation costs n³/3, a third of an eigensolver, and a failed one stops at its first
    negative pivot.  The rounding margin is bnb.rounding_margin's analysis (Cholesky backward
    error ~(n+1)·n·u, the Gram matrix's formation error), here ~1e-9 to 1e-8.
    """
    side = source.side
    margin = rounding_margin(side, source.inner, floor=EIGEN_MARGIN)
    frobenius, lower = source.profile()
    best = max(float(lower.max()), estimate or 0.0)
    order = torch.argsort(frobenius, descending=True)
    notes: dict[str, int] = {}
    if estimate is None:
        values, _ = lanczos_top(source.gram(order[:1]), LANCZOS_LONG, tol=tol / 8)
        best = max(best, math.sqrt(float(values.max())))
        _count(notes, "Lanczos", 1)
    figure = 0.0
    chunk = max(1, EIGEN_CHUNK_BYTES // (8 * side * side))
    for start in range(0, source.count, chunk):
        index = order[start : start + chunk]
        small = frobenius[index] <= best * (1 + tol)
        if small.any():
            figure = max(figure, float(frobenius[index[small]].max()))
            _count(notes, "certified: Frobenius", int(small.sum()))
        index = index[~small]
        if index.numel() == 0:
            continue
        grams = source.gram(index)
        pending = torch.arange(index.numel(), device=grams.device)
        step = tol * FIRST_STEP
        while pending.numel() and step <= ESCALATION_LIMIT:
            mu = (best * (1 + step)) ** 2
            with one_thread(side <= SMALL_CHOLESKY_SIDE):
                ok = certify_below(grams if pending.numel() == grams.shape[0] else grams[pending], mu)
            if ok.any():
                figure = max(figure, math.sqrt(mu))
                _count(notes, f"certified: Cholesky at +{step:.0e}", int(ok.sum()))
            pending, step = pending[~ok], step * 100
        if pending.numel():
            with one_thread():
                top = torch.linalg.eigvalsh(grams[pending])[:, -1].clamp_min(0.0).sqrt()
            figure, best = max(figure, float(top.max())), max(best, float(top.max()))
            _count(notes, "exact: eigensolver", pending.numel())
    summary = ", ".join(f"{v} {k}" for k, v in notes.items())
    return GramNorm(
        max(figure, best) * (1 + margin),
        best,
        [f"Lanczos + Cholesky on {source.count} Gram matrix(es) of side {side}: {summary}"],
    )


def _count(counts: dict[str, int], key: str, amount: int) -> None:
    counts[key] = counts.get(key, 0) + amount


def _eigen_norm(source: GramSource) -> GramNorm:
    side = source.side
    margin = rounding_margin(side, source.inner, floor=EIGEN_MARGIN)
    frobenius, lower = source.profile()
    order = torch.argsort(frobenius, descending=True)
    chunk = max(1, EIGEN_CHUNK_BYTES // (24 * side * side))
    best, solved = float(lower.max()), 0
    for start in range(0, source.count, chunk):
        index = order[start : start + chunk]
        # σ_b ≤ ‖A_b‖_F: blocks whose Frobenius norm is below the best σ so far cannot win.
        index = index[frobenius[index] > best]
        if index.numel() == 0:
            break
        # LAPACK's eigensolver gains little from a second thread and suffers badly when the cores
        # are shared (32 Gram matrices of side 256: 0.2 s on one thread, up to 8 s on two).
        with one_thread():
            top = torch.linalg.eigvalsh(source.gram(index))[:, -1]
        best = max(best, math.sqrt(max(float(top.max()), 0.0)))
        solved += index.numel()
    return GramNorm(
        best * (1 + margin), best, [f"eigensolver on {solved} of {source.count} Gram matrix(es) of side {side}"]
    )


def operator_gram(
    forward: Callable[[Tensor], Tensor],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Gram matrix of the smaller side of the linear map ``forward``, from chunks of basis vectors.

    ``forward`` takes a batch (B, *input_shape) to (B, *output_shape).  Only min(m, n)² numbers are
    kept, never the m×n matrix.
    """
    n_in, n_out = math.prod(input_shape), math.prod(output_shape)
    on_input_side = n_in <= n_out
    side = n_in if on_input_side else n_out
    bytes_per_vector = 4 * (n_in + n_out) * torch.finfo(dtype).bits // 8
    chunk = max(1, min(side, CHUNK_BYTES // bytes_per_vector))
    gram = torch.empty((side, side), device=device, dtype=dtype)
    for start in range(0, side, chunk):
        stop = min(side, start + chunk)
        basis = torch.zeros((stop - start, side), device=device, dtype=dtype)
        rows = torch.arange(stop - start, device=device)
        basis[rows, rows + start] = 1.0
        if on_input_side:  # AᵀA e_i for input basis vectors e_i
            _, columns = forward_and_adjoint(forward, basis.reshape(-1, *input_shape))
        else:  # A Aᵀ e_j for output basis vectors e_j: the adjoint first, at any point (here 0)
            zero = torch.zeros((stop - start, *input_shape), device=device, dtype=dtype)
            _, pulled_back = forward_and_adjoint(forward, zero, basis.reshape(-1, *output_shape))
            with torch.no_grad():
                columns = forward(pulled_back)
        gram[:, start:stop] = columns.reshape(stop - start, side).T
    return (gram + gram.T) / 2  # exact symmetry, removing rounding noise


def matrix_gram_source(gram: Tensor, inner: int) -> GramSource:
    """A GramSource over one explicit Gram matrix (side, side); ``inner``: the most products
    summed into one of its entries."""
    side = gram.shape[-1]
    grams = gram.reshape(1, side, side)

    def profile() -> tuple[Tensor, Tensor]:
        diagonal = grams.diagonal(dim1=-2, dim2=-1).clamp_min(0.0)
        return diagonal.sum(-1).sqrt().cpu(), diagonal.amax(-1).sqrt().cpu()

    return GramSource(1, side, inner, lambda index: grams[index.to(gram.device)], profile)


def materialized_norm(
    forward: Callable[[Tensor], Tensor],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    *,
    device: torch.device,
    tol: float = BNB_TOL,
) -> GramNorm:
    """σ_max of a small operator known only through ``forward``: certified upper and lower figures.

    When the Gram matrix is past the eigensolver, Lanczos on the operator itself (passes through
    ``forward`` and autograd, far cheaper than passes over the dense Gram matrix) gives the
    estimate the Cholesky certificate is tried at.  Smoothing operators such as average pools
    have a very clustered top spectrum: on a 70×70 pool 80 steps left the estimate 9e-5 low
    (three Cholesky attempts), 160 steps 6e-14.
    """
    gram = operator_gram(forward, input_shape, output_shape, device=device)
    if gram.numel() == 0:
        return GramNorm(0.0, 0.0)
    inner = max(math.prod(input_shape), math.prod(output_shape))
    source = matrix_gram_source(gram, inner)
    estimate = None
    if not uses_eigensolver(1, source.side):
        generator = torch.Generator(device="cpu").manual_seed(0)
        start = torch.randn((1, *input_shape), generator=generator, dtype=torch.float64).to(device)
        v = lanczos_operator(forward, start, steps=2 * OPERATOR_LANCZOS_STEPS, tol=OPERATOR_LANCZOS_TOL, check_every=4)
        with torch.no_grad():
            estimate = float(torch.linalg.vector_norm(forward(v)) / torch.linalg.vector_norm(v))
    return gram_norm(source, tol=tol, estimate=estimate)
