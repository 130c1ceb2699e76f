"""Normalisations on a box: bounds on the variance (or mean square) of each group, and the range
of the normalised vector z = (x − μ)/√(σ² + ε) (or x/√(mean x² + ε)).

The smallest variance over a box is exact: σ²(x) = min_c (1/n)Σ(x_j − c)², so its minimum over the
box is min_c g(c) with g(c) = (1/n)Σ dist(c, [lo_j, hi_j])², a convex function of one variable.
Bisection on g' brackets the minimiser in [a, b]; by convexity g ≥ g(a) + g'(a)(b − a) on [a, b]
(g'(a) ≤ 0), a sound lower bound however narrow the bracket.
"""

from __future__ import annotations

import numpy as np

from .interval import RANGE_MARGIN, Interval, stand_in

_BISECTIONS = 60


def grouped(interval: Interval, shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """lo, hi as (groups, n): the ``axes`` (normalised together) last, flattened."""
    full = interval.broadcast_to(shape)
    rest = [a for a in range(len(shape)) if a not in axes]
    order = rest + list(axes)
    n = int(np.prod([shape[a] for a in axes])) if axes else 1
    lo = np.transpose(full.lo, order).reshape(-1, n)
    hi = np.transpose(full.hi, order).reshape(-1, n)
    return stand_in(lo), stand_in(hi)


def ungrouped(values: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``grouped`` for an array of (groups, n) values."""
    rest = [a for a in range(len(shape)) if a not in axes]
    order = rest + list(axes)
    moved = values.reshape([shape[a] for a in order])
    return np.transpose(moved, np.argsort(order))


def _distance_slope(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """g'(c)·n/2 = Σ (c − hi_j)₊ − (lo_j − c)₊, per group."""
    c = c[:, None]
    return (np.maximum(c - hi, 0.0) - np.maximum(lo - c, 0.0)).sum(axis=1)


def _distance_square(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """g(c)·n = Σ dist(c, [lo_j, hi_j])², per group."""
    c = c[:, None]
    gap = np.maximum(c - hi, 0.0) + np.maximum(lo - c, 0.0)
    return (gap * gap).sum(axis=1)


def variance_lower_bound(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A sound lower bound of min over the box of the (population) variance of each row."""
    n = lo.shape[1]
    a = np.minimum(hi.min(axis=1), lo.max(axis=1))
    b = np.maximum(lo.max(axis=1), hi.min(axis=1))
    separated = lo.max(axis=1) > hi.min(axis=1)  # otherwise one c lies in every interval: min 0
    for _ in range(_BISECTIONS):
        mid = a / 2 + b / 2
        rising = _distance_slope(mid, lo, hi) >= 0
        b = np.where(rising, mid, b)
        a = np.where(rising, a, mid)
    slope = np.minimum(_distance_slope(a, lo, hi), 0.0)
    bound = (_distance_square(a, lo, hi) + 2 * slope * (b - a)) / n
    bound = np.maximum(bound * (1 - 1e-9), 0.0)  # float64 rounding in the sums
    return np.where(separated, bound, 0.0)


def variance_upper_bound(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """σ² ≤ (1/n)Σ(x_j − c)² for any c; take c the mean of the centres and the far end of each box."""
    c = (lo / 2 + hi / 2).mean(axis=1, keepdims=True)
    far = np.maximum((lo - c) ** 2, (hi - c) ** 2)
    return far.mean(axis=1) * (1 + 1e-9)


def mean_square_bounds(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = np.where(lo > 0, lo, np.where(hi < 0, -hi, 0.0))
    high = np.maximum(np.abs(lo), np.abs(hi))
    return (low * low).mean(axis=1) * (1 - 1e-9), (high * high).mean(axis=1) * (1 + 1e-9)


def _ratio(v_max: np.ndarray, epsilon: float) -> np.ndarray:
    """ρ = σ²/(σ² + ε) at the largest variance, ≤ 1 (1 where it is not a number: ε = 0, σ² = inf)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = v_max / (v_max + epsilon)
    return np.where(np.isnan(rho), 1.0, np.minimum(rho, 1.0))


def normalized_range(
    lo: np.ndarray, hi: np.ndarray, epsilon: float, centered: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on z = (x − μ)/√(σ² + ε) (``centered``) or x/√(mean x² + ε), entrywise, rows as groups.

    z_i − its deviation d_i bounded by interval arithmetic and divided by √(σ² + ε) ∈ [s_lo, s_hi];
    and since Σ z = 0 and Σ z² = n·ρ with ρ = σ²/(σ² + ε) ≤ 1, |z_i| ≤ √((n − 1)·ρ_max)
    (√(n·ρ_max) without centring).
    """
    n = lo.shape[1]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if centered:
            total_lo, total_hi = lo.sum(axis=1, keepdims=True), hi.sum(axis=1, keepdims=True)
            d_lo = lo * (1 - 1 / n) - (total_hi - hi) / n
            d_hi = hi * (1 - 1 / n) - (total_lo - lo) / n
            scale = np.maximum(np.abs(lo), np.abs(hi))
            slack = RANGE_MARGIN * (scale + scale.sum(axis=1, keepdims=True) / n)
            d_lo, d_hi = d_lo - slack, d_hi + slack
            v_min, v_max = variance_lower_bound(lo, hi), variance_upper_bound(lo, hi)
            cap = np.sqrt((n - 1) * _ratio(v_max, epsilon))
        else:
            d_lo, d_hi = lo, hi
            v_min, v_max = mean_square_bounds(lo, hi)
            cap = np.sqrt(n * _ratio(v_max, epsilon))
        s_lo = np.sqrt(v_min + epsilon)[:, None]
        s_hi = np.sqrt(v_max + epsilon)[:, None]
        # d/s with s in [s_lo, s_hi], s > 0: the extremes are at the ends of both intervals.
        corners = np.stack([d_lo / s_lo, d_lo / s_hi, d_hi / s_lo, d_hi / s_hi])
        z_lo = np.where(np.isnan(corners).any(axis=0), -np.inf, corners.min(axis=0))
        z_hi = np.where(np.isnan(corners).any(axis=0), np.inf, corners.max(axis=0))
        cap = cap[:, None] * (1 + 1e-9)
    return np.maximum(z_lo, -cap), np.minimum(z_hi, cap)
