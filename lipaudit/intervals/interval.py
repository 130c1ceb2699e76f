"""Intervals: per-entry lower and upper bounds on a tensor over the input box.

An ``Interval`` holds two float64 arrays ``lo ≤ hi`` (the shape of the value, or any shape that
broadcasts to it: a 0-d interval bounds every entry alike). ±inf means "no bound on that side";
a rule that cannot say anything returns ``Interval.full()``, never a narrower guess.

Every interval a rule computes is widened outwards by ``widened``: float64 rounding in the
interval arithmetic itself, and the float32 rounding of the runtime that computes the same
values, each move a value by a small multiple of the magnitudes summed to make it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Relative outward margin per op (2⁻²⁰ ≈ 9.5e-7, the compose float32 margin): ranges enclose the
# real-number values, and in practice the float32 values a runtime computes, which differ from them
# by a few float32 ulps of the magnitudes involved.
RANGE_MARGIN = 2.0**-20
# ±inf's stand-in where arithmetic on ±inf would give NaN (inf − inf, 0·inf); results beyond
# _INFINITE_BEYOND count as infinite again. A finite value past HUGE is no infinity: ``stand_in``
# refuses it rather than shrink it to HUGE.
HUGE = 1e300
_INFINITE_BEYOND = 1e290


# The box analysis keeps every magnitude 0, within [FLOOR, CEIL] or infinite, so that no product of
# two leaves float64's normal range (lipaudit.domain.normal_range).
FLOOR = 2.0**-400
CEIL = 2.0**400


class BeyondStandIn(ArithmeticError):
    """A finite value past ±HUGE met arithmetic that stands ±HUGE in for ±inf: clipping it would
    shrink it, so the rule says nothing (an ArithmeticError: the domain engines' rule errors)."""


def stand_in(array: np.ndarray | float) -> np.ndarray:
    """``array`` in float64 with ±inf as ±HUGE (NaN kept). Raises BeyondStandIn where a finite entry
    is past ±HUGE: clipping it as if it were infinite would give a bound below the truth."""
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if np.any(np.abs(array[finite]) > HUGE):
        raise BeyondStandIn(f"a finite value {np.max(np.abs(array[finite])):.3g} is past the ±{HUGE:g} of ±inf")
    return np.where(np.isinf(array), np.copysign(HUGE, array), array)


@dataclass(frozen=True)
class Interval:
    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        lo = np.asarray(self.lo, dtype=np.float64)
        hi = np.asarray(self.hi, dtype=np.float64)
        # NaN (inf − inf, 0·inf, a function off its domain) says nothing: it becomes the full range.
        lo = np.where(np.isnan(lo), -np.inf, lo)
        hi = np.where(np.isnan(hi), np.inf, hi)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def exact(cls, value: np.ndarray) -> Interval:
        array = np.asarray(value, dtype=np.float64)
        return cls(array, array.copy())

    @classmethod
    def full(cls, shape: tuple[int, ...] | None = None) -> Interval:
        shape = () if shape is None else tuple(shape)
        return cls(np.full(shape, -np.inf), np.full(shape, np.inf))

    @classmethod
    def box(cls, low: float, high: float, shape: tuple[int, ...]) -> Interval:
        return cls(np.full(shape, float(low)), np.full(shape, float(high)))

    # ------------------------------------------------------------------ reading

    @property
    def shape(self) -> tuple[int, ...]:
        return np.broadcast_shapes(self.lo.shape, self.hi.shape)

    @property
    def center(self) -> np.ndarray:
        lo, hi = self.finite_proxy()
        return lo / 2 + hi / 2

    @property
    def radius(self) -> np.ndarray:
        lo, hi = self.finite_proxy()
        return hi / 2 - lo / 2

    @property
    def magnitude(self) -> np.ndarray:
        """max |x| per entry."""
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    @property
    def mignitude(self) -> np.ndarray:
        """min |x| per entry: the distance from 0 to the interval (0 when it contains 0)."""
        return np.where(self.lo > 0, self.lo, np.where(self.hi < 0, -self.hi, 0.0))

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.lo)) and np.all(np.isfinite(self.hi)))

    def is_point(self) -> bool:
        return bool(np.all(self.lo == self.hi))

    def contains(self, values: np.ndarray, tolerance: float = 0.0) -> bool:
        values = np.asarray(values, dtype=np.float64)
        slack = tolerance * np.maximum(1.0, np.abs(values))
        return bool(np.all(values >= self.lo - slack) and np.all(values <= self.hi + slack))

    def finite_proxy(self) -> tuple[np.ndarray, np.ndarray]:
        """lo, hi with ±inf replaced by ±HUGE (``stand_in``), so that arithmetic never meets inf − inf or 0·inf."""
        return stand_in(self.lo), stand_in(self.hi)

    def broadcast_to(self, shape: tuple[int, ...]) -> Interval:
        return Interval(np.broadcast_to(self.lo, shape), np.broadcast_to(self.hi, shape))

    def reshape(self, shape: tuple[int, ...]) -> Interval:
        full = self.broadcast_to(self.shape)
        return Interval(full.lo.reshape(shape), full.hi.reshape(shape))

    # ------------------------------------------------------------------ building

    def widened(self, scale: np.ndarray | float | None = None) -> Interval:
        """Outwards by RANGE_MARGIN·(|bound| + scale): ``scale`` is the magnitude of the terms that were
        summed to make each entry (where cancellation may leave a result much smaller than them)."""
        extra = 0.0 if scale is None else np.asarray(scale, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            lo = self.lo - RANGE_MARGIN * (np.abs(self.lo) + extra)
            hi = self.hi + RANGE_MARGIN * (np.abs(self.hi) + extra)
        return Interval(restore_infinities(lo), restore_infinities(hi))

    def intersect(self, lo: np.ndarray | float, hi: np.ndarray | float) -> Interval:
        return Interval(np.maximum(self.lo, lo), np.minimum(self.hi, hi))

    def __repr__(self) -> str:
        return (
            f"Interval(shape={self.shape}, lo∈[{np.min(self.lo, initial=np.inf):.4g}, …], "
            f"hi∈[…, {np.max(self.hi, initial=-np.inf):.4g}])"
        )


def from_center_radius(center: np.ndarray, radius: np.ndarray, scale: np.ndarray | None = None) -> Interval:
    """center ± radius, widened by the rounding margin (``scale``: the magnitudes summed)."""
    with np.errstate(invalid="ignore"):  # inf − inf is NaN, which Interval reads as the whole line
        return Interval(restore_infinities(center - radius), restore_infinities(center + radius)).widened(scale)


def restore_infinities(bound: np.ndarray) -> np.ndarray:
    """Bounds past ±1e290 (what ±HUGE became through arithmetic) back to ±inf."""
    bound = np.asarray(bound, dtype=np.float64)
    return np.where(bound > _INFINITE_BEYOND, np.inf, np.where(bound < -_INFINITE_BEYOND, -np.inf, bound))


def hull(*intervals: Interval) -> Interval:
    """The smallest interval containing all of them."""
    lo = intervals[0].lo
    hi = intervals[0].hi
    for other in intervals[1:]:
        lo, hi = np.minimum(lo, other.lo), np.maximum(hi, other.hi)
    return Interval(lo, hi)


def product(a: Interval, b: Interval) -> Interval:
    """{x·y : x ∈ a, y ∈ b} entrywise (numpy broadcasting): the min and max of the four corners, in
    exact extended arithmetic (0·±inf = 0: an unbounded factor times 0 is 0), never through ±HUGE,
    which a tiny factor would shrink to a finite bound."""
    corners = np.stack(
        np.broadcast_arrays(_times(a.lo, b.lo), _times(a.lo, b.hi), _times(a.hi, b.lo), _times(a.hi, b.hi))
    )
    return Interval(restore_infinities(corners.min(axis=0)), restore_infinities(corners.max(axis=0))).widened()


def float_product(a: Interval, b: Interval) -> Interval:
    """{x·y} as a float runtime computes it: where one factor may be infinite (an overflow) and the
    other may be 0, inf·0 is NaN, so nothing is known of that entry; elsewhere ``product``."""
    found = product(a, b)
    unknown = (_may_be_infinite(a) & _may_be_zero(b)) | (_may_be_infinite(b) & _may_be_zero(a))
    if not np.any(unknown):
        return found
    unknown = np.broadcast_to(unknown, found.shape)
    return Interval(np.where(unknown, -np.inf, found.lo), np.where(unknown, np.inf, found.hi))


def _may_be_infinite(a: Interval) -> np.ndarray:
    return np.isinf(a.lo) | np.isinf(a.hi)


def _may_be_zero(a: Interval) -> np.ndarray:
    return (a.lo <= 0) & (a.hi >= 0)


def _times(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where((x == 0) | (y == 0), 0.0, x * y)


def reciprocal(b: Interval) -> Interval:
    """{1/y : y ∈ b}: full where b contains 0."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        excludes_zero = (b.lo > 0) | (b.hi < 0)
        lo = np.where(excludes_zero, 1.0 / b.hi, -np.inf)
        hi = np.where(excludes_zero, 1.0 / b.lo, np.inf)
    return Interval(lo, hi).widened()


def quotient(a: Interval, b: Interval) -> Interval:
    """{x/y}; where 0/0 or inf/inf may arise (a factor 1/y that may be infinite times one that may
    be 0), nothing is known (float_product)."""
    return float_product(a, reciprocal(b))


def add(a: Interval, b: Interval, sign: float = 1.0) -> Interval:
    """a + b (or a − b with ``sign`` −1), widened by the operands' magnitudes: on the bounds as they are
    (a lower bound is never +inf, an upper one never −inf, so inf − inf cannot arise)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if sign > 0:
            lo, hi = a.lo + b.lo, a.hi + b.hi
        else:
            lo, hi = a.lo - b.hi, a.hi - b.lo
        scale = a.magnitude + b.magnitude
    return Interval(restore_infinities(lo), restore_infinities(hi)).widened(np.where(np.isfinite(scale), scale, 0.0))


def square(a: Interval) -> Interval:
    """{x² : x ∈ a}: tighter than product(a, a), which forgets that both factors are the same x."""
    low, high = a.mignitude, a.magnitude
    with np.errstate(over="ignore"):
        return Interval(low * low, high * high).widened()


# The numpy float type a runtime holds a value of each ONNX float type in: float16 as float16,
# float32 and bfloat16 as float32 (bfloat16's range differs from float32's only below 1e-38 and in
# the top 0.4%: not modelled). Values of unknown type are read as float32.
_HELD_AS: dict[int, type[np.floating]] = {1: np.float32, 10: np.float16, 16: np.float32}


def held_as(types: Mapping[str, int], name: str) -> type[np.floating] | None:
    """The numpy type a runtime holds value ``name`` in (None: float64 and integer values, kept as
    computed), from the ONNX element types the loader recorded (``Graph.metadata["elem_types"]``)."""
    code = types.get(name)
    return np.float32 if code is None else _HELD_AS.get(code)


def float_outward(interval: Interval, dtype: type[np.floating] | None = np.float32) -> Interval:
    """``interval`` with float ends rounded outwards to numbers of ``dtype`` (float32 by default;
    None leaves float64 ranges as they are): the range of the value as a runtime of that type holds
    it, where a result beyond its largest number is infinite, one below its smallest subnormal is 0
    and a cast from a wider type rounds (integer ranges are left as they are). A NaN end (inf·0 on
    the way) leaves that entry unbounded."""
    lo, hi = interval.lo, interval.hi
    if dtype is None or (lo.dtype.kind != "f" and hi.dtype.kind != "f"):
        return interval
    lo = np.where(np.isnan(lo), -np.inf, np.asarray(lo, np.float64))
    hi = np.where(np.isnan(hi), np.inf, np.asarray(hi, np.float64))
    with np.errstate(over="ignore"):
        lo_n, hi_n = lo.astype(dtype), hi.astype(dtype)
    lo_n = np.where(lo_n.astype(np.float64) > lo, np.nextafter(lo_n, dtype(-np.inf)), lo_n)
    hi_n = np.where(hi_n.astype(np.float64) < hi, np.nextafter(hi_n, dtype(np.inf)), hi_n)
    return Interval(lo_n.astype(np.float64), hi_n.astype(np.float64))


def outward(interval: Interval) -> Interval:
    """``interval`` with every bound of magnitude in (0, FLOOR) moved outwards to 0 or ±FLOOR, and
    every finite one above CEIL outwards to ±CEIL or ±inf: a range of all it held."""
    lo, hi = interval.lo, interval.hi
    tiny_lo = (lo != 0) & (np.abs(lo) < FLOOR)
    tiny_hi = (hi != 0) & (np.abs(hi) < FLOOR)
    huge_lo = np.isfinite(lo) & (np.abs(lo) > CEIL)
    huge_hi = np.isfinite(hi) & (np.abs(hi) > CEIL)
    if not (np.any(tiny_lo) or np.any(tiny_hi) or np.any(huge_lo) or np.any(huge_hi)):
        return interval
    lo = np.where(tiny_lo, np.where(lo > 0, 0.0, -FLOOR), np.where(huge_lo, np.where(lo > 0, CEIL, -np.inf), lo))
    hi = np.where(tiny_hi, np.where(hi < 0, 0.0, FLOOR), np.where(huge_hi, np.where(hi < 0, -CEIL, np.inf), hi))
    return Interval(lo, hi)
