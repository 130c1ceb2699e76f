"""Scalar functions on an interval: the sup of |f'| and the range of f, entry by entry.

For a smooth f whose slope f' is monotone between a few known critical points c_k (the zeros of
f''), sup |f'| over [lo, hi] is the largest of |f'(lo)|, |f'(hi)| and |f'(c_k)| for the c_k inside.
Likewise a unimodal f (decreasing, then increasing past its minimum at m) has range
[min(f(lo), f(hi)) or f(m) when m is inside, max(f(lo), f(hi))]. The critical points are known to
about 1e-12; an interval counts as containing one when it comes within ``_NEAR`` of it, and the
value used there is the known extreme rounded outwards, so the result never falls short.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .interval import Interval, stand_in

_NEAR = 1e-3
_EVAL_MARGIN = 1e-9  # relative slack on f' evaluated in float64 at the endpoints
_EVAL_FLOOR = 1e-12  # and absolute: in the tails the formulas cancel (1 + erf(x)), losing relative accuracy


def _t(x: np.ndarray) -> Tensor:
    return torch.as_tensor(stand_in(x), dtype=torch.float64)


def _n(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass(frozen=True)
class SmoothProfile:
    """f and f' (on float64 tensors), the critical points of f' with |f'| there rounded up, and f's
    minimum (at ``minimum_at``, value rounded down) when f is unimodal."""

    f: Callable[[Tensor], Tensor]
    slope: Callable[[Tensor], Tensor]
    slope_extremes: tuple[tuple[float, float], ...]
    minimum_at: float
    minimum: float
    slope_limits: tuple[float, float] = (0.0, 1.0)  # f' at −∞ and +∞

    @property
    def slope_range(self) -> tuple[float, float]:
        """[inf f', sup f'] over the line, quoted to 5 decimals rounded outwards: f' is monotone
        between its critical points, so its extremes are there (signed, from the rounded |f'|) or
        its limits at ±∞.  The one source of these activations' slope ranges and factors."""
        signed = [
            math.copysign(bound, float(self.slope(torch.tensor(at, dtype=torch.float64))))
            for at, bound in self.slope_extremes
        ]
        return _outward(min(*signed, *self.slope_limits), -1), _outward(max(*signed, *self.slope_limits), 1)

    def slope_sup(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            ends = np.maximum(np.abs(_n(self.slope(_t(lo)))), np.abs(_n(self.slope(_t(hi)))))
        sup = ends * (1 + _EVAL_MARGIN) + _EVAL_FLOOR
        for at, bound in self.slope_extremes:
            inside = (lo <= at + _NEAR) & (hi >= at - _NEAR)
            sup = np.where(inside, np.maximum(sup, bound), sup)
        # f' at ±1e300 may be 0·inf = NaN: there the global sup (the largest extreme) holds.
        return np.where(np.isnan(sup), max(bound for _, bound in self.slope_extremes), sup)

    def value_range(self, interval: Interval) -> Interval:
        lo, hi = interval.lo, interval.hi
        f_lo, f_hi = _n(self.f(_t(lo))), _n(self.f(_t(hi)))
        low = np.minimum(f_lo, f_hi)
        inside = (lo <= self.minimum_at + _NEAR) & (hi >= self.minimum_at - _NEAR)
        low = np.where(inside, np.minimum(low, self.minimum), low)
        # x·Φ(x) and friends lose relative accuracy in their tails (1 + erf(x) cancels): the margin
        # scales with |x|, the size of what is multiplied.
        scale = np.minimum(np.maximum(np.abs(lo), np.abs(hi)), 1e300)
        return Interval(low, np.maximum(f_lo, f_hi)).widened(scale)


def _outward(value: float, direction: int, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` decimals away from it in ``direction`` (never past it)."""
    step = 10.0**-digits
    rounded = (math.ceil if direction > 0 else math.floor)(value / step) * step
    while (rounded < value) if direction > 0 else (rounded > value):
        rounded += direction * step
    return round(rounded, digits) if (round(rounded, digits) - value) * direction >= 0 else rounded


def closest_to_zero(interval: Interval) -> np.ndarray:
    """|x| at the point of each entry's interval nearest 0 (where an even, bell-shaped slope peaks)."""
    return interval.mignitude


def hardswish_slope_sup(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """HardSwish' is 0 below −3, (2x + 3)/6 on (−3, 3), 1 above 3."""
    a, b = np.clip(lo, -3.0, 3.0), np.clip(hi, -3.0, 3.0)
    inner = np.maximum(np.abs((2 * a + 3) / 6), np.abs((2 * b + 3) / 6))
    sup = np.where(hi <= -3, 0.0, np.where(lo >= 3, 1.0, inner))
    return np.where(hi > 3, np.maximum(sup, 1.0), sup)


# Added to a slope's upper end (and taken from its lower end): a slope positive in real arithmetic
# never rounds to 0 as an upper end (a factor 0 would certify a moving function as constant), and
# where exp lands among the subnormals, whose spacing is absolute, its error of a few spacings is
# covered: eight of the smallest positive float64.
SUBNORMAL_SLACK = 8 * float(np.nextafter(0.0, 1.0))
# 4e/(1 + e)² and e/(1 + e)² after exp: a few roundings, each of half an ulp
_SLOPE_ROUNDING = 1 + 8 * float(np.finfo(np.float64).eps)


def _rounded(value: np.ndarray, upper: bool) -> np.ndarray:
    if upper:
        return value * _SLOPE_ROUNDING + SUBNORMAL_SLACK
    return np.maximum(value * (2.0 - _SLOPE_ROUNDING) - SUBNORMAL_SLACK, 0.0)


def sech_squared(m: np.ndarray, *, upper: bool) -> np.ndarray:
    """tanh'(m) = sech²(m) = 4e/(1 + e)² with e = exp(−2|m|): 1/cosh(m)² overflows to 0 past
    |m| ≈ 355, where sech² is still 1e-308 (redteam19: a Tanh at 357 certified 0).  ``upper``: rounded
    up, else down (never below 0), each by a relative margin and SUBNORMAL_SLACK."""
    with np.errstate(under="ignore"):
        e = np.exp(-2.0 * np.abs(np.asarray(m, dtype=np.float64)))
        value = 4.0 * e / (1.0 + e) ** 2
    return _rounded(value, upper)


def logistic_slope(m: np.ndarray, *, upper: bool) -> np.ndarray:
    """σ'(m) = σ(m)σ(−m) = e/(1 + e)² with e = exp(−|m|), no cancellation; ``upper`` as in sech_squared."""
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(np.asarray(m, dtype=np.float64)))
        value = e / (1.0 + e) ** 2
    return _rounded(value, upper)
