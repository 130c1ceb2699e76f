"""Midpoint–radius products for the switching bound: enclosures (centre ± radius, radius ≥ 0 entry
by entry) of products of enclosed matrices, with the float64 rounding of the sums in the radius."""

from __future__ import annotations

from torch import Tensor

from ..intervals.jacobian import STEP_ROUNDING, UNIT


def product(p: tuple[Tensor, Tensor], q: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(P ± Pr) @ (Q ± Qr) ⊆ PQ ± (|P| Qr + Pr (|Q| + Qr)) + the float64 rounding of k-term sums."""
    (pc, pr), (qc, qr) = p, q
    centre = pc @ qc
    k = pc.shape[-1]
    magnitude = (pc.abs() + pr) @ (qc.abs() + qr)
    radius = pc.abs() @ qr + pr @ (qc.abs() + qr) + (k + 2) * UNIT * magnitude + STEP_ROUNDING * centre.abs()
    return centre, radius


def times_slope(u_c: Tensor, u_r: Tensor, d_c: Tensor, d_r: Tensor) -> tuple[Tensor, Tensor]:
    """(U ± Ur)·(δ ± δr) entry by entry (δ broadcast over the rows)."""
    centre = u_c * d_c
    radius = u_c.abs() * d_r + u_r * (d_c.abs() + d_r) + UNIT * centre.abs()
    return centre, radius


__all__ = ["product", "times_slope"]
