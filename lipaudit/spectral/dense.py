"""ℓ2 operator norm of a dense matrix, and the Gram iteration shared with the convolution code.

Methods (the result's ``method``):
  exact             singular values in float64 (LAPACK); 'auto' for a smaller side ≤ EXACT_SIDE_LIMIT;
  lanczos-cholesky  'auto' above that: Lanczos on the Gram matrix for the estimate, then a Cholesky
                    certificate that λ_max(WᵀW) < (estimate·(1+tol))² (bnb.py).  Same figure as
                    'exact' within BNB_TOL, several times faster than an SVD at 2048 and above;
  gram              Gram iteration (Delattre et al. 2023);
  frobenius         ‖W‖_F;
  power             power iteration, an estimate from below (not certified).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .bnb import BNB_TOL, matrix_source, max_singular_value
from .power import power_iteration
from .result import NormResult
from .scaling import rescaled, scale_of

# A singular value computed in float64 is backward stable: its relative error is a small multiple
# of n·2⁻⁵³ (about 1e-12 for n in the thousands).  Multiplying by these factors turns the computed
# figure into a guaranteed upper bound with room to spare.
SVD_MARGIN = 1.0 + 1e-9
# Bounds that go through more arithmetic (DFT of the kernel, Gram products) take a wider margin.
ROUNDING_MARGIN = 1.0 + 1e-6

# Up to this smaller side a full singular value decomposition is as cheap as anything for 'auto';
# above it Lanczos + Cholesky wins (2-core CPU: 1000×4096 in 1.1 s by SVD, 0.3 s by Lanczos +
# Cholesky; 4096² in 4.2 s by SVD in float64, ~2 s by Lanczos + Cholesky).
EXACT_SIDE_LIMIT = 512
GRAM_MAX_STEPS = 40
# Stop once a step lowers the bound by less than this (relative).  With a repeated top singular
# value each later step gains half as much as the one before, so all of them together gain about
# this much again: the bound is then within ~2e-8 of where it would converge (always above σ_max).
GRAM_LOG_TOL = 1e-8
DENSE_POWER_ITERATIONS = 100

DENSE_METHODS = ("auto", "exact", "gram", "power", "frobenius")


def as_float64(array, device: torch.device) -> Tensor:
    """Any numpy array or tensor, as a float64 tensor on ``device`` (complex stays complex)."""
    if not isinstance(array, Tensor):
        array = np.asarray(array)
        if not array.flags.writeable:  # torch warns on read-only buffers (e.g. ONNX initialisers)
            array = array.copy()
    tensor = torch.as_tensor(array)
    dtype = torch.complex128 if tensor.is_complex() else torch.float64
    return tensor.detach().to(device=device, dtype=dtype)


def gram_iteration(matrices: Tensor, steps: int = GRAM_MAX_STEPS, *, tol: float = GRAM_LOG_TOL) -> Tensor:
    """Certified upper bounds on σ_max of each matrix in a batch (..., m, n), real or complex.

    Gram iteration (Delattre et al., ICML 2023): T₁ = W, T_{t+1} = T_tᴴT_t has σ_max(T_t) =
    σ_max(W)^{2^{t-1}}, and the Frobenius norm bounds σ_max, so ‖W‖₂ ≤ ‖T_t‖_F^{1/2^{t-1}}.
    The bound only goes down from one step to the next (‖GᴴG‖_F ≤ ‖G‖_F²) and tends to σ_max.
    T_t itself over- or underflows after a few steps, so we keep G = T_t / c with ‖G‖_F = 1 and
    carry ℓ = log(c) / 2^{t-1}, the log of the bound, instead: ℓ_{t+1} = ℓ_t + log‖GᴴG‖_F / 2^t.
    ``steps`` counts the squarings; steps=0 gives the Frobenius norm.  No margin is applied.
    """
    g = matrices
    if g.numel() == 0:
        return torch.zeros(g.shape[:-2], dtype=torch.float64, device=g.device)
    if g.shape[-2] < g.shape[-1]:  # square the smaller side: WWᴴ has the same top singular value
        g = g.mH
    # Divide by the largest entry first, so that not even the first Frobenius norm overflows.
    largest = g.abs().amax(dim=(-2, -1))
    alive = largest > 0
    scale = torch.where(alive, largest, 1.0)
    g = g / scale[..., None, None]
    frob = torch.where(alive, torch.linalg.matrix_norm(g, ord="fro"), 1.0)
    log_bound = torch.where(alive, torch.log(scale) + torch.log(frob), -math.inf)
    g = g / frob[..., None, None]
    for step in range(1, steps + 1):
        g = g.mH @ g
        frob = torch.linalg.matrix_norm(g, ord="fro")
        safe = torch.where(frob > 0, frob, 1.0)
        shrink = torch.where(alive, torch.log(safe), 0.0) / 2.0**step
        log_bound = log_bound + shrink
        g = g / safe[..., None, None]
        if shrink.numel() == 0 or float(shrink.abs().max()) <= tol:
            break
    return torch.exp(log_bound)


def dense_norm(
    weight, method: str = "auto", *, device: torch.device = torch.device("cpu"), tol: float = BNB_TOL
) -> NormResult:
    """ℓ2 operator norm of a 2-D matrix, by one of DENSE_METHODS (docs/design.md, "Per-op factors").

    The result's ``method`` is the one actually used; ``frobenius`` is always ‖W‖_F and
    ``estimate`` a lower estimate (power iteration, or for 'exact' and 'lanczos-cholesky' the
    computed σ_max / Ritz value itself); ``gap`` is value / estimate − 1.
    """
    if method not in DENSE_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(DENSE_METHODS)}")
    device = torch.device(device)
    w = as_float64(weight, device)
    if w.ndim != 2:
        raise ValueError(f"dense_norm needs a 2-D matrix, got shape {tuple(w.shape)}")
    return batched_dense_norm(w[None], method, tol=tol)


def batched_dense_norm(
    matrices: Tensor, method: str = "auto", *, tol: float = BNB_TOL, estimate: bool = True
) -> NormResult:
    """The largest ℓ2 norm among a batch of real float64 matrices (g, m, n), e.g. a grouped 1×1
    convolution's per-group kernels.  Same methods and result fields as dense_norm."""
    scale = scale_of(matrices)  # measured at unit scale: squares of 1e-160 or 1e200 leave float64's range
    return rescaled(_unit_dense_norm(matrices / scale, method, tol=tol, estimate=estimate), scale)


def _unit_dense_norm(w: Tensor, method: str, *, tol: float, estimate: bool) -> NormResult:
    frobenius = float(torch.linalg.matrix_norm(w, ord="fro").max()) * SVD_MARGIN if w.numel() else 0.0
    if w.numel() == 0 or frobenius == 0.0:
        return NormResult(0.0, "exact", True, estimate=0.0, frobenius=0.0, gap=0.0)
    side = min(w.shape[-2:])
    if method == "auto":
        method = "exact" if side <= EXACT_SIDE_LIMIT else "lanczos-cholesky"

    if method == "exact":
        sigma = float(torch.linalg.svdvals(w)[..., 0].max())
        return NormResult(sigma * SVD_MARGIN, "exact", True, estimate=sigma, frobenius=frobenius, gap=SVD_MARGIN - 1)
    if method == "lanczos-cholesky":
        source = matrix_source(w)
        found = max_singular_value(source, "bnb", tol=tol)
        return NormResult(
            found.upper,
            "lanczos-cholesky",
            True,
            estimate=found.lower,
            frobenius=frobenius,
            gap=_gap(found.upper, found.lower),
            notes=[f"certificate: {found.summary()}"],
        )
    low = _power_estimate(w) if estimate else None
    if method == "frobenius":
        return NormResult(frobenius, "frobenius", True, estimate=low, frobenius=frobenius, gap=_gap(frobenius, low))
    if method == "power":
        power_value = low if low is not None else _power_estimate(w)
        return NormResult(power_value, "power", False, estimate=power_value, frobenius=frobenius)
    bound = float(gram_iteration(w).max()) * ROUNDING_MARGIN
    return NormResult(bound, "gram", True, estimate=low, frobenius=frobenius, gap=_gap(bound, low))


def _gap(upper: float | None, lower: float | None) -> float | None:
    """Relative gap upper / lower − 1 between a bound and a lower estimate (None when unknown)."""
    if upper is None or lower is None or lower <= 0:
        return None
    return max(0.0, upper / lower - 1.0)


def _power_estimate(w: Tensor) -> float:
    """Largest power-iteration estimate over a batch of matrices (g, m, n)."""
    return max(
        power_iteration(m.matmul, (m.shape[1],), iterations=DENSE_POWER_ITERATIONS, device=m.device, dtype=m.dtype)
        for m in w
    )
