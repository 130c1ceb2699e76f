"""Interval Jacobians: for every value v of the graph, an enclosure [C − R, C + R] of ∂v/∂x over the
whole box of inputs, along each of the n0 input directions (forward mode).

``Jac`` holds C and R, float64 tensors of shape (n0, *value_shape) with R ≥ 0.  The primitives
here are the rules the ops compose (each derived in its docstring):

* a linear map A (an op's ``linear_part``): C' = A C, R' = |A| R, plus float64 rounding;
* a product with a value whose range is [m − w, m + w] (an activation's derivative range, the
  other factor of a product): C' = m C, R' = |m| R + w (|C| + R)  (midpoint–radius arithmetic);
* matrix products, softmax (dp = p ⊙ (dz − ⟨p, dz⟩)) and the normalisations
  (dy = (dd − x̂·mean(x̂ ⊙ dd))/σ) from those two.

Every primitive adds STEP_ROUNDING·(|C'| + R') to R' for the float64 rounding of its own steps
(each a few correctly rounded operations, 2⁻⁵³ relative each); sums of k terms add (k + 2)·2⁻⁵³ of
the sum of magnitudes.  ``JacobianContext.tighten`` is the centred form: v(x) ∈ v(x0) ± Σ_i
sup|∂v/∂x_i|·r_i on the box of half-widths r around x0 (the mean value inequality, entry by entry).

Each ``Jac`` also carries ``deviation`` ≥ ‖J − C‖₂ (J as an n0 × #entries matrix): a linear map
multiplies it by its norm, a product with [m ± w] by max|m| and adds ‖w ⊙ (|C| + R)‖₂ (from
J a − C m = (J − C) m + J (a − m)), and it never exceeds ‖R‖₂.  Through a chain of dense layers
this stays far below ‖|A|·R‖₂, which is what makes the final ‖C‖₂ + deviation tight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..spectral.scaling import sqrt_up
from .interval import BeyondStandIn, Interval, outward, restore_infinities, stand_in
from .norms import nonnegative_norm_bound

if TYPE_CHECKING:
    from ..ir import Node
    from ..linear_maps import Linear
    from ..ops.context import RuleContext

UNIT = 2.0**-53
STEP_ROUNDING = 2.0**-48  # a few float64 operations per entry, with room to spare


@dataclass
class Jac:
    """∂v/∂x ∈ [centre − radius, centre + radius] entry by entry, both (n0, *value_shape); and
    ``deviation`` ≥ ‖J − centre‖₂ for every such J on the box, J read as an (n0, #entries) matrix
    (carried through linear maps by their norms, which |A| R alone would overstate)."""

    centre: Tensor
    radius: Tensor
    deviation: float = math.inf

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.centre.shape[1:])

    @property
    def directions(self) -> int:
        return int(self.centre.shape[0])

    def magnitude(self) -> Tensor:
        return self.centre.abs() + self.radius

    def map(self, fn, gain: float = 1.0) -> Jac:
        """The same move of entries (a reshape, a transpose, a slice; ``gain``: √copies for a copy)
        applied to both tensors."""
        return Jac(fn(self.centre), fn(self.radius), self.deviation * gain)


# Above this many entries the radius's spectral norm is bounded by its Frobenius norm (cheaper).
SPECTRAL_ENTRY_LIMIT = 2**22


def nonnegative_norm(t: Tensor) -> float:
    """A certified bound on ‖M‖₂ for a non-negative (n0, …) tensor read as an (n0, #entries) matrix."""
    matrix = t.reshape(t.shape[0], -1)
    if matrix.numel() == 0:
        return 0.0
    if not bool(torch.isfinite(matrix).all()):
        return math.inf
    if matrix.numel() > SPECTRAL_ENTRY_LIMIT:
        return frobenius(matrix)
    return float(nonnegative_norm_bound(matrix.numpy()))


def frobenius(t: Tensor) -> float:
    return float(torch.linalg.vector_norm(t)) * (1 + 1e-12) if t.numel() else 0.0


def settled(centre: Tensor, radius: Tensor, deviation: float) -> Jac:
    """A Jacobian whose deviation is also at most ‖R‖₂ (every J − C in [−R, R] has ‖J − C‖ ≤ ‖R‖)."""
    bound = nonnegative_norm(radius)
    return Jac(centre, radius, deviation if deviation < bound else bound)  # NaN: the radius's bound


def amplified(gain: float, deviation: float) -> float:
    """gain·deviation, 0 for a map that is 0 (whatever the deviation, even unbounded)."""
    return 0.0 if gain == 0 else gain * deviation


def rounded(centre: Tensor, radius: Tensor, deviation: float) -> Jac:
    """The float64 rounding of the step that computed ``centre`` added to the radius (and deviation)."""
    extra = STEP_ROUNDING * (centre.abs() + radius)
    return settled(centre, radius + extra, deviation + frobenius(extra))


def as_tensor(array: np.ndarray | float) -> Tensor:
    """A float64 tensor with ±inf as ±HUGE (``stand_in``), so that arithmetic never meets inf − inf or 0·inf."""
    return torch.as_tensor(stand_in(array))


def mid_rad(interval: Interval, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Midpoint m and radius w ≥ the true one, so that [lo, hi] ⊆ [m − w, m + w]."""
    full = interval.broadcast_to(tuple(shape))
    if not full.is_finite():
        # ±HUGE for an unbounded side, times a Jacobian entry below 1e-10, would be a finite, too small bound
        raise BeyondStandIn("a range with an unbounded side multiplies a Jacobian")
    lo, hi = as_tensor(full.lo), as_tensor(full.hi)
    middle = lo / 2 + hi / 2
    width = torch.maximum(hi - middle, middle - lo).clamp_min(0.0) * (1 + 4 * UNIT)
    return middle, width


def expand(jac: Jac, out_shape: Sequence[int]) -> Jac:
    """The Jacobian of a value broadcast (numpy rules) to ``out_shape``."""
    out_shape = tuple(out_shape)
    if jac.shape == out_shape:
        return jac
    padded = (jac.directions,) + (1,) * (len(out_shape) - len(jac.shape)) + jac.shape
    full = (jac.directions,) + out_shape
    copies = math.prod(out_shape) // max(1, math.prod(jac.shape))  # a broadcast copies whole entries
    return jac.map(lambda t: t.reshape(padded).expand(full), sqrt_up(copies))


def times(jac: Jac, factor: Interval) -> Jac:
    """∂(a·v) where a ∈ ``factor`` entry by entry (a broadcasts to v's shape), v's Jacobian ``jac``:
    J a − C m = (J − C) m + J (a − m), so the deviation grows by max|m| and gains ‖w (|C| + R)‖."""
    # moved outwards to 0 or a magnitude in [FLOOR, CEIL], so that m·C stays in the normal range
    m, w = mid_rad(outward(factor), jac.shape)
    birth = w * jac.magnitude()
    largest = float(m.abs().max()) if m.numel() else 0.0
    deviation = amplified(largest, jac.deviation) + nonnegative_norm(birth)
    return rounded(m * jac.centre, m.abs() * jac.radius + birth, deviation)


def combine(terms: Sequence[Jac], signs: Sequence[float] | None = None) -> Jac:
    """Σ ± terms (of one shape)."""
    signs = signs if signs is not None else [1.0] * len(terms)
    centre = sum((s * t.centre for s, t in zip(signs, terms)), torch.zeros_like(terms[0].centre))
    radius = sum((t.radius for t in terms), torch.zeros_like(terms[0].radius))
    scale = sum((t.magnitude() for t in terms), torch.zeros_like(terms[0].radius))
    extra = (len(terms) + 2) * UNIT * scale
    return rounded(centre, radius + extra, sum(t.deviation for t in terms) + frobenius(extra))


def summed(jac: Jac, dim: int, keepdim: bool = True) -> Jac:
    """Σ over one value axis (``dim`` counts value axes, not the direction axis): norm √k."""
    k = jac.shape[dim] if jac.shape else 1
    centre = jac.centre.sum(dim=dim + 1, keepdim=keepdim)
    radius = jac.radius.sum(dim=dim + 1, keepdim=keepdim)
    extra = (k + 2) * UNIT * jac.magnitude().sum(dim=dim + 1, keepdim=keepdim)
    return settled(centre, radius + extra, amplified(math.sqrt(k), jac.deviation) + frobenius(extra))


def scaled(jac: Jac, factor: float) -> Jac:
    return rounded(jac.centre * factor, jac.radius * abs(factor), amplified(abs(factor), jac.deviation))


def through_map(linear: Linear, jacs: Sequence[Jac], out_shape: Sequence[int]) -> Jac:
    """C' = A C, R' = |A| R + γ_k |A| (|C| + R) for a linear map A of one or several values; the
    deviation through A's certified norm (its product rule for a join)."""
    absolute = linear.absolute()  # the maps act on a batch: here the n0 directions
    centre = linear.forward(*(j.centre for j in jacs))
    radius = absolute.forward(*(j.radius for j in jacs))
    scale = absolute.forward(*(j.magnitude() for j in jacs))
    k = max(1, linear.terms()) * max(1, len(jacs))
    full = (jacs[0].directions,) + tuple(out_shape)
    extra = ((k + 2) * UNIT * scale).reshape(full)
    deviations = [j.deviation for j in jacs]
    try:
        deviation = linear.rule(deviations) if linear.arity != 1 else linear.norm() * deviations[0]
    except (ArithmeticError, RuntimeError, ValueError, NotImplementedError):
        deviation = math.inf
    return rounded(centre.reshape(full), radius.reshape(full) + extra, deviation + frobenius(extra))


def _largest_block_norm(matrices: Tensor) -> float:
    """The largest ‖B_b‖₂ over a batch of blocks (…, k, p)."""
    if matrices.numel() == 0:
        return 0.0
    norms = torch.linalg.matrix_norm(matrices.reshape((-1,) + tuple(matrices.shape[-2:])), ord=2)
    return float(norms.max()) * (1 + 1e-9)


def matmul(
    left: Jac | None, left_range: Interval, right: Jac | None, right_range: Interval, out_shape: Sequence[int]
) -> Jac:
    """∂(A·B) = ∂A·B + A·∂B (numpy matmul, both operands at least 2-D), with A and B in their ranges:
    (C ± R)(m ± w) ⊆ C m ± (R (|m| + w) + |C| w)."""
    out_shape = tuple(out_shape)
    rank = len(out_shape)
    terms = []
    for mine, other, other_range, side in ((left, right, right_range, 0), (right, left, left_range, 1)):
        if mine is None:
            continue
        n0 = mine.directions
        padded = (n0,) + (1,) * (rank - len(mine.shape)) + mine.shape
        c, r = mine.centre.reshape(padded), mine.radius.reshape(padded)
        other_shape = tuple(other_range.shape) if other is None else other.shape
        m, w = mid_rad(other_range, other_shape)
        size = m.abs() + w
        magnitude = c.abs() + r
        if side == 0:
            centre, birth, radius = c @ m, magnitude @ w, r @ m.abs()
            k, scale = m.shape[-2], magnitude @ size
        else:
            centre, birth, radius = m @ c, w @ magnitude, m.abs() @ r
            k, scale = m.shape[-1], size @ magnitude
        extra = (k + 2) * UNIT * scale
        # X ↦ X·B blockwise: the largest block's norm when each X block meets one B block; √(the
        # number of output blocks) times it when X broadcasts (any one X block meets at most that many).
        gain = _largest_block_norm(m)
        if tuple(padded[1:-2]) != tuple(out_shape[:-2]):
            gain *= math.sqrt(math.prod(out_shape[:-2]))
        deviation = amplified(gain, mine.deviation) + nonnegative_norm(birth) + frobenius(extra)
        term = settled(centre, radius + birth + extra, deviation)
        terms.append(expand(term, out_shape))
    return combine(terms)


def hull(lows: Tensor, highs: Tensor) -> Jac:
    """The enclosure [lows, highs] (entrywise, (n0, …)) as centre ± radius: where an output follows
    one of several candidates (a max, a min), its Clarke Jacobian lies in the hull of theirs."""
    centre = lows / 2 + highs / 2
    radius = torch.maximum(highs - centre, centre - lows).clamp_min(0.0) * (1 + 4 * UNIT)
    return rounded(centre, radius, math.inf)


def selected(jacs: Sequence[Jac], candidates: Sequence[Tensor]) -> Jac:
    """The Jacobian of an output that equals one of ``jacs`` (each of the output's shape) wherever
    the value is taken, ``candidates[k]`` (a bool tensor of the value shape) saying where input k
    can be the one taken on the box.  Where one candidate is left, its enclosure; else the hull."""
    lows = highs = None
    for jac, may in zip(jacs, candidates):
        may = may.reshape((1,) + tuple(jac.shape))
        low = torch.where(may, jac.centre - jac.radius, torch.full_like(jac.centre, math.inf))
        high = torch.where(may, jac.centre + jac.radius, torch.full_like(jac.centre, -math.inf))
        lows = low if lows is None else torch.minimum(lows, low)
        highs = high if highs is None else torch.maximum(highs, high)
    if lows is None or highs is None or not bool(torch.isfinite(lows).all() and torch.isfinite(highs).all()):
        raise ValueError("an output with no candidate input on the box")
    return hull(lows, highs)


def log_softmax(z: Jac, p: Interval, axis: int) -> Jac:
    """∂ log p = ∂z − ⟨p, ∂z⟩ along ``axis`` (a value axis), p in its range."""
    shifted = _centred_by(z, p, axis)
    return rounded(shifted.centre, shifted.radius, math.inf)


def _centred_by(z: Jac, p: Interval, axis: int) -> Jac:
    """∂z − ⟨p, ∂z⟩ along ``axis``, with p in its range (no deviation carried)."""
    m, w = mid_rad(p, z.shape)
    m = m.clamp_min(0.0)
    along = axis + 1
    weighted_centre = (m * z.centre).sum(dim=along, keepdim=True)
    weighted_radius = (m.abs() * z.radius + w * z.magnitude()).sum(dim=along, keepdim=True)
    k = z.shape[axis]
    weighted_radius = weighted_radius * (1 + (k + 2) * UNIT) + STEP_ROUNDING * weighted_centre.abs()
    return Jac(z.centre - weighted_centre, z.radius + weighted_radius)


def softmax(z: Jac, p: Interval, axis: int) -> Jac:
    """∂p = p ⊙ (∂z − Σ_j p_j ∂z_j) along ``axis`` (a value axis), p in its range.  Deviation: the map
    at the midpoints pm (norm ≤ Gershgorin's bound of diag(pm) − pm pmᵀ) on J − C, plus
    pw ⊙ |∂z − ⟨p, ∂z⟩| + pm ⊙ ⟨pw, |C| + R⟩ for the spread of p."""
    shifted = _centred_by(z, p, axis)
    m, w = mid_rad(p, z.shape)
    m = m.clamp_min(0.0)
    along = axis + 1
    result = times(shifted, p)
    total = m.sum(dim=axis, keepdim=True)
    gershgorin = float((m * (1 - m).abs() + m * (total - m)).max()) if m.numel() else 0.0
    # J' − C' = m ⊙ (E − ⟨m, E⟩) + (P − m) ⊙ (J − ⟨P, J⟩) − m ⊙ ⟨P − m, J⟩, E = J − C
    birth = w * shifted.magnitude() + m * (w * z.magnitude()).sum(dim=along, keepdim=True)
    deviation = (
        amplified(gershgorin, z.deviation) + nonnegative_norm(birth) + frobenius(STEP_ROUNDING * result.magnitude())
    )
    return Jac(result.centre, result.radius, deviation if deviation < result.deviation else result.deviation)


@dataclass
class JacobianContext:
    """What an op's ``jacobian`` rule reads: the Jacobians of its inputs, their ranges on the box
    (``rules.ranges``, already tightened by the centred form) and at its centre (``points``)."""

    rules: RuleContext
    points: dict[str, Interval]
    jacobians: dict[str, Jac]
    half_widths: Tensor  # (n0,): the box's half-width along each input direction
    constants: set[str] = field(default_factory=set)  # values computed without the input

    @property
    def directions(self) -> int:
        return int(self.half_widths.shape[0])

    def jac(self, name: str) -> Jac | None:
        """The value's Jacobian; None for a value that does not depend on the input. KeyError for
        a variable value with none (an upstream op without a rule)."""
        if not name or self.rules.graph.is_const(name) or name in self.constants:
            return None
        return self.jacobians[name]

    def box(self, name: str) -> Interval:
        return self.rules.range_of(name)

    def point(self, name: str) -> Interval:
        const = self.rules.graph.const(name)
        if const is not None:
            return Interval.exact(const)
        found = self.points.get(name)
        return found if found is not None else Interval.full()

    def spread(self, jac: Jac) -> np.ndarray:
        """Σ_i (|C_i| + R_i)·r_i: how far the value moves from its value at the centre."""
        r = self.half_widths.reshape((-1,) + (1,) * len(jac.shape))
        central = (jac.centre.abs() * r).sum(dim=0)
        # Σ_i |E_ij| r_i ≤ ‖E_:j‖₂‖r‖₂ ≤ deviation·‖r‖₂ for E = J − C
        spread = torch.clamp((jac.radius * r).sum(dim=0), max=amplified(frobenius(self.half_widths), jac.deviation))
        n0 = jac.directions
        return ((central + spread) * (1 + (n0 + 4) * UNIT)).numpy()

    def tighten(self, point: Interval, box: Interval, jac: Jac) -> Interval:
        """The box range ∩ the centred form v(x0) ± spread."""
        spread = self.spread(jac)
        with np.errstate(over="ignore", invalid="ignore"):  # spread ≥ 0: −inf − spread, inf + spread stay infinite
            centred = Interval(restore_infinities(point.lo - spread), restore_infinities(point.hi + spread)).widened()
        shape = np.broadcast_shapes(box.shape, centred.shape)
        outer = box.broadcast_to(shape)
        inner = centred.broadcast_to(shape)
        lo, hi = np.maximum(outer.lo, inner.lo), np.minimum(outer.hi, inner.hi)
        crossed = lo > hi  # only rounding can make them miss each other: keep the box range there
        return Interval(np.where(crossed, outer.lo, lo), np.where(crossed, outer.hi, hi))

    def input_jacs(self, node: Node) -> list[Jac | None]:
        return [self.jac(name) if name else None for name in node.inputs]
