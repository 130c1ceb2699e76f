"""ℓ2 operator norm of a dense matrix, and the Gram iteration shared with the convolution code."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .power import power_iteration
from .result import NormResult

# A singular value computed in float64 is backward stable: its relative error is a small multiple
# of n·2⁻⁵³ (about 1e-12 for n in the thousands).  Multiplying by these factors turns the computed
# figure into a guaranteed upper bound with room to spare.
SVD_MARGIN = 1.0 + 1e-9
# Bounds that go through more arithmetic (DFT of the kernel, Gram products) take a wider margin.
ROUNDING_MARGIN = 1.0 + 1e-6

# Up to this smaller side a full singular value decomposition is cheap enough for 'auto'.
EXACT_SIDE_LIMIT = 2048
GRAM_MAX_STEPS = 40
# Stop once a step lowers the bound by less than this (relative).  With a repeated top singular
# value each later step gains half as much as the one before, so all of them together gain about
# this much again: the bound is then within ~2e-8 of where it would converge (always above σ_max).
GRAM_LOG_TOL = 1e-8
DENSE_POWER_ITERATIONS = 100

DENSE_METHODS = ("auto", "exact", "gram", "power", "frobenius")


def as_float64(array, device: torch.device) -> Tensor:
    """Any numpy array or tensor, as a float64 tensor on ``device`` (complex stays complex)."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, Tensor) else array)
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


def dense_norm(weight, method: str = "auto", *, device: torch.device = torch.device("cpu")) -> NormResult:
    """ℓ2 operator norm of a 2-D matrix, by one of DENSE_METHODS (see DESIGN.md §4).

    The result's ``method`` is the one actually used; ``frobenius`` is always ‖W‖_F and
    ``estimate`` a power-iteration value from below (for 'exact', the computed σ_max itself).
    """
    if method not in DENSE_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(DENSE_METHODS)}")
    device = torch.device(device)
    w = as_float64(weight, device)
    if w.ndim != 2:
        raise ValueError(f"dense_norm needs a 2-D matrix, got shape {tuple(w.shape)}")
    frobenius = float(torch.linalg.matrix_norm(w, ord="fro")) * SVD_MARGIN
    if w.numel() == 0:
        return NormResult(0.0, "exact", True, estimate=0.0, frobenius=0.0)
    if method == "auto":
        method = "exact" if min(w.shape) <= EXACT_SIDE_LIMIT else "gram"

    if method == "exact":
        sigma = float(torch.linalg.svdvals(w)[0])
        return NormResult(sigma * SVD_MARGIN, "exact", True, estimate=sigma, frobenius=frobenius)
    if method == "frobenius":
        return NormResult(frobenius, "frobenius", True, estimate=_power_estimate(w), frobenius=frobenius)
    estimate = _power_estimate(w)
    if method == "power":
        return NormResult(estimate, "power", False, estimate=estimate, frobenius=frobenius)
    bound = float(gram_iteration(w)) * ROUNDING_MARGIN
    return NormResult(bound, "gram", True, estimate=estimate, frobenius=frobenius)


def _power_estimate(w: Tensor) -> float:
    return power_iteration(lambda v: w @ v, (w.shape[1],), iterations=DENSE_POWER_ITERATIONS,
                           device=w.device, dtype=w.dtype)
