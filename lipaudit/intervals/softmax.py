"""Softmax on a box, entry by entry, with every other entry of the group at its worst.

p_i = 1/(1 + Σ_{j≠i} exp(x_j − x_i)) is increasing in x_i and decreasing in every other x_j, so
p_i ≥ 1/(1 + Σ_{j≠i} exp(hi_j − lo_i)) and p_i ≤ 1/(1 + Σ_{j≠i} exp(lo_j − hi_i)). The sums over
j ≠ i come from prefix and suffix sums (no subtraction, so no cancellation), shifted by the row's
largest bound so that nothing overflows.
"""

from __future__ import annotations

import numpy as np

from .interval import RANGE_MARGIN, stand_in


def _others_sum(exponents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Σ_{j≠i} exp(e_j − m), m) per row, m the row's largest exponent."""
    m = exponents.max(axis=1, keepdims=True)
    terms = np.exp(exponents - m)
    before = np.concatenate([np.zeros_like(terms[:, :1]), np.cumsum(terms, axis=1)[:, :-1]], axis=1)
    after = np.concatenate([np.cumsum(terms[:, ::-1], axis=1)[:, ::-1][:, 1:], np.zeros_like(terms[:, :1])], axis=1)
    return before + after, m


def log_softmax_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on log p_i for rows of (groups, n): log p_i = −log(1 + Σ_{j≠i} exp(x_j − x_i))."""
    lo, hi = stand_in(lo), stand_in(hi)
    n = lo.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        others_hi, m_hi = _others_sum(hi)
        others_lo, m_lo = _others_sum(lo)
        low = -np.log1p(np.exp(m_hi - lo) * others_hi)
        high = -np.log1p(np.exp(m_lo - hi) * others_lo)
    with np.errstate(invalid="ignore"):
        low = np.where(np.isnan(low), -np.inf, low - RANGE_MARGIN * (1.0 + np.abs(low)) - 4 * n * np.finfo(float).eps)
        high = np.where(np.isnan(high), 0.0, high)
        high = np.where(np.isfinite(high), np.minimum(high + RANGE_MARGIN * (1.0 + np.abs(high)), 0.0), high)
    return low, high


def softmax_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on p_i for rows of (groups, n), within [0, 1]."""
    log_low, log_high = log_softmax_range(lo, hi)
    return np.clip(np.exp(log_low), 0.0, 1.0), np.clip(np.exp(log_high), 0.0, 1.0)
