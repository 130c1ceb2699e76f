"""The figure of a chain of segments from their Jacobians' centres: the alignment a product of their
figures loses.

Segment i (cut c_{i−1} → c_i, lipaudit.domain.segments) has on a box that holds the image of B
an enclosure J_i(y) = C_i + E_i with ‖E_i‖₂ ≤ δ_i (its centre and min(‖R‖₂, deviation)). Read
n0-first (A = Jᵀ, as the enclosures are stored), the chain rule at x ∈ B gives A = A_1 A_2 ⋯ A_m,
and telescoping,

    A_1⋯A_m − C_1⋯C_m = Σ_i (A_1⋯A_{i−1}) E_i (C_{i+1}⋯C_m),

so sup_B ‖A‖₂ ≤ ‖C_1⋯C_m‖₂ + Σ_i F_{i−1}·δ_i·‖C_{i+1}⋯C_m‖₂, with F_{i−1} any certified bound on
sup_B ‖A_1⋯A_{i−1}‖₂ (1 for the empty prefix): the same sum one link shorter, or a figure found
otherwise for that prefix. C_1⋯C_m is near the network's Jacobian at the centre, and each δ_i is
weighted by the norm of the centres after it, where the product of the segments' figures pays
‖C_i‖ + δ_i for every link.

The C_i are float64 matrices, exact as stored; their products carry their rounding entrywise
(|fl(XY) − XY| ≤ (k + 2)·2⁻⁵³·|X||Y|, k the inner size), so every norm here is certified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..intervals.jacobian import UNIT, nonnegative_norm
from ..spectral.dense import dense_norm


def chain_figures(
    centres: Sequence[torch.Tensor], deviations: Sequence[float], known: Sequence[float] | None = None
) -> list[float]:
    """F_j ≥ sup_B ‖A_1⋯A_j‖₂ for j = 1..m, from the links' centres (n_in, n_out) and deviations;
    ``known[j − 1]``: another certified figure for the prefix of j links (inf where none)."""
    m = len(centres)
    known = list(known) if known is not None else [math.inf] * m
    figures: list[float] = []
    for j in range(m):
        prefix = _norm(*_product(centres[: j + 1]))
        errors = []
        for i in range(j + 1):
            before = figures[i - 1] if i else 1.0
            after = _norm(*_product(centres[i + 1 : j + 1])) if i < j else 1.0
            errors.append(before * deviations[i] * after)
        chained = (prefix + math.fsum(errors)) * (1 + (2 * j + 4) * UNIT)
        figures.append(min(chained, known[j]) if math.isfinite(chained) else known[j])
    return figures


def _product(matrices: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """fl(X_1⋯X_k) and an entrywise bound on its distance from the exact product (None, None: the
    empty product, the identity)."""
    if not matrices:
        return None, None
    value = matrices[-1].to(torch.float64)
    error = torch.zeros_like(value)
    for left in reversed(matrices[:-1]):
        left = left.to(torch.float64)
        k = left.shape[1]
        size = left.abs()
        # X·(Y + e) = fl(XY) − r + X e with |r| ≤ γ|X||Y| and |X e| ≤ |X| err
        error = (size @ error + (k + 2) * UNIT * (size @ value.abs())) * (1 + (k + 4) * UNIT)
        value = left @ value
    return value, error


def _norm(value: torch.Tensor | None, error: torch.Tensor | None) -> float:
    if value is None or error is None:
        return 1.0
    if value.numel() == 0:
        return 0.0
    return dense_norm(value).value * (1 + 1e-12) + nonnegative_norm(error)
