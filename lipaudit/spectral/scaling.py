"""Norms taken at unit scale, so that squares neither underflow nor overflow.

A float64 weight of 1e-160 has a square of 1e-320, below the smallest normal float64: the
Frobenius norm underflows to 0 (or to a subnormal with a few digits left), and a rule then
certifies an exact 0, or a figure below the truth. A weight of 1e200 squares to infinity. Every
norm here is homogeneous (‖cW‖ = |c|·‖W‖), so it is taken of W / c, with c the power of two just
above W's largest entry (dividing by it is exact), and multiplied back by c. A norm is then 0 only
when the matrix is exactly zero.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch

from .result import NormResult


def unit_scale(largest: float) -> float:
    """The power of two 2^e with largest < 2^e ≤ 2·largest (1 for 0, inf or NaN)."""
    if not (largest > 0 and math.isfinite(largest)):
        return 1.0
    return math.ldexp(1.0, math.frexp(largest)[1])


def scale_of(array: torch.Tensor | np.ndarray) -> float:
    """unit_scale of the largest absolute entry."""
    if isinstance(array, torch.Tensor):
        largest = float(array.detach().abs().max()) if array.numel() else 0.0
    else:
        values = np.asarray(array)
        largest = float(np.abs(values).max()) if values.size else 0.0
    return unit_scale(largest)


def rescaled(result: NormResult, scale: float) -> NormResult:
    """A norm measured on W / scale, as the norm of W."""
    if scale == 1.0:
        return result

    def times(value: float | None) -> float | None:
        return None if value is None else value * scale

    return replace(
        result,
        value=result.value * scale,
        estimate=times(result.estimate),
        frobenius=times(result.frobenius),
    )


# Figures the recursion may take as they are: inside this range its products of norms, sums of
# squares and Gram matrices neither underflow (a map that moves certified 0) nor overflow.  Outside
# it a figure keeps the product rule's, whose every factor was measured at unit scale.
SAFE_LOW = 2.0**-900
SAFE_HIGH = 2.0**900


def in_safe_range(figure: float) -> bool:
    """Whether a recursion figure lies where float64 products of its parts kept their digits."""
    return SAFE_LOW <= figure <= SAFE_HIGH


def sqrt_up(count: int) -> float:
    """√count for a count of copies, never below the exact root: math.sqrt rounds to nearest, and
    the product of two such roots (√3·√3 = 2.9999999999999996) can fall below the exact figure of
    ops that round nothing (copies carry no float32 margin)."""
    root = math.sqrt(count)
    return root if math.isqrt(count) ** 2 == count else math.nextafter(root, math.inf)


def sqrt_ratio_up(numerator: int, denominator: int) -> float:
    """√(numerator / denominator) for counts (copies of an entry on average), never below the exact
    root: sqrt_up where the ratio is a whole number, else rounded up twice (the quotient, the root)."""
    if numerator % denominator == 0:
        return sqrt_up(numerator // denominator)
    return math.nextafter(math.sqrt(math.nextafter(numerator / denominator, math.inf)), math.inf)


def root_sum_squares(values: Iterable[float]) -> float:
    """√(Σ v²) without squaring small or large values out of range."""
    listed = [abs(float(v)) for v in values]
    if not listed:
        return 0.0
    scale = unit_scale(max(listed))
    return scale * math.sqrt(sum((v / scale) ** 2 for v in listed))


def product_up(a: float, b: float) -> float:
    """a·b for a, b ≥ 0, never below the exact product: below float64's normal range a product keeps
    few digits (1e-170·1e-170 rounds to 0), so it is rounded up by one step there."""
    product = a * b
    if 0.0 <= product < sys.float_info.min and a != 0.0 and b != 0.0:
        return math.nextafter(product, math.inf)
    return product
