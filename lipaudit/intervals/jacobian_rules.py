"""Interval-Jacobian rules the op classes share: through a linear part, derivative ranges of smooth
activations, normalisations and dot-product attention (lipaudit.intervals.jacobian's primitives).

A rule returns one ``Jac`` per output (None for an output it says nothing about), or None when it
has nothing to say about the node: the engine then gives no interval-Jacobian figure, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from .interval import Interval, product, square
from .jacobian import (
    UNIT,
    Jac,
    JacobianContext,
    amplified,
    combine,
    expand,
    hull,
    matmul,
    rounded,
    scaled,
    selected,
    softmax,
    summed,
    through_map,
    times,
)
from .normalize import mean_square_bounds, variance_lower_bound, variance_upper_bound
from .slopes import SUBNORMAL_SLACK
from .softmax import softmax_range

if TYPE_CHECKING:
    from ..ir import Node
    from ..ops.registry import Op
    from .slopes import SmoothProfile

_EVAL_MARGIN = 1e-9  # relative slack on f' evaluated in float64 (as lipaudit.intervals.slopes)
_EVAL_FLOOR = 1e-12


def through_linear(op: Op, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
    """C' = A C, R' = |A| R through the op's ``linear_part`` (None: it has none)."""
    from ..linear_maps import Barrier, Linear

    found = op.linear_part(node, jctx.rules)
    if isinstance(found, Barrier):
        return None
    maps = found if isinstance(found, tuple) else (found,)
    variables = jctx.rules.graph.variable_inputs(node)
    jacs = [jctx.jac(name) for name in variables]
    if any(j is None for j in jacs):
        return None  # a linear map of a value that does not vary: the engine never asks
    if not described_by(op, node, jctx, maps, variables):
        return None
    results: list[Jac | None] = []
    for index, linear in enumerate(maps):
        if not isinstance(linear, Linear) or index >= len(node.outputs) or not node.outputs[index]:
            results.append(None)
            continue
        results.append(through_map(linear, [j for j in jacs if j is not None], jctx.rules.output_shape(node, index)))
    return results


def described_by(op: Op, node: Node, jctx: JacobianContext, maps: tuple, variables: list[str]) -> bool:
    """Whether the maps do what the op's own run does, at the values' real shapes on a random input
    (lipaudit.ops.linear_part.disagreement): a rule is only as right as its description, and the
    recursion's check (tight.from_graph) does not guard this engine."""
    from ..linear_maps import Linear
    from ..ops.linear_part import disagreement

    graph = jctx.rules.graph
    generator = torch.Generator().manual_seed(0)
    xs = {}
    for name in variables:
        shape = tuple(int(d) for d in graph.shape(name) or ())
        xs[name] = torch.randn(shape, generator=generator, dtype=torch.float64)
    forwards = {i: linear.forward for i, linear in enumerate(maps) if isinstance(linear, Linear)}
    return disagreement(graph, op, node, forwards, variables, xs) == ""


def profile_slope_range(profile: SmoothProfile, x: Interval) -> Interval:
    """[min f', max f'] over each entry's interval: f' is monotone between its critical points, so
    its extremes are at the ends or at a critical point inside (its known value, rounded outwards)."""
    from .slopes import _NEAR

    lo, hi = x.finite_proxy()
    with torch.no_grad():
        ends = [profile.slope(torch.as_tensor(v, dtype=torch.float64)).numpy() for v in (lo, hi)]
    low, high = np.minimum(*ends), np.maximum(*ends)
    slack = _EVAL_MARGIN * np.maximum(np.abs(low), np.abs(high)) + _EVAL_FLOOR
    low, high = low - slack, high + slack
    for at, bound in profile.slope_extremes:
        signed = math.copysign(bound, float(profile.slope(torch.tensor(at, dtype=torch.float64))))
        inside = (lo <= at + _NEAR) & (hi >= at - _NEAR)
        low = np.where(inside, np.minimum(low, signed if signed < 0 else signed * (1 - 1e-6)), low)
        high = np.where(inside, np.maximum(high, signed if signed > 0 else signed * (1 - 1e-6)), high)
    nan = np.isnan(low) | np.isnan(high)
    limits = profile.slope_range
    return Interval(np.where(nan, limits[0], low), np.where(nan, limits[1], high))


def monotone_in_magnitude(x: Interval, slope: Callable[[np.ndarray], np.ndarray]) -> Interval:
    """The range of an even slope that falls as |x| grows (tanh', σ', erf'): [slope(max|x|), slope(min|x|)].
    The slope is positive everywhere: its upper end never rounds to 0 (slopes.SUBNORMAL_SLACK)."""
    with np.errstate(over="ignore", under="ignore"):
        return Interval(slope(x.magnitude), slope(x.mignitude) + SUBNORMAL_SLACK).widened()


def grouped_jac(jac: Jac, view: tuple[int, ...], axes: tuple[int, ...]) -> tuple[Jac, Callable[[Jac], Jac]]:
    """The Jacobian as (n0, groups, n): the ``axes`` normalised together last; and the way back."""
    rest = [a for a in range(len(view)) if a not in axes]
    order = [0] + [a + 1 for a in rest + list(axes)]
    n = math.prod(view[a] for a in axes)
    moved = tuple(view[a] for a in rest + list(axes))
    back = list(np.argsort(order))

    def forward(t: torch.Tensor) -> torch.Tensor:
        return t.reshape((t.shape[0],) + view).permute(order).reshape(t.shape[0], -1, n)

    def backward(out: Jac) -> Jac:
        return out.map(lambda t: t.reshape((t.shape[0],) + moved).permute(back).reshape((t.shape[0],) + view))

    return jac.map(forward), backward  # moves entries: the deviation stays


def _grouped_interval(interval: Interval, shape: tuple[int, ...], view, axes) -> Interval:
    from .normalize import grouped

    lo, hi = grouped(interval.broadcast_to(shape).reshape(view), view, axes)
    return Interval(lo, hi)


def normalized(
    jctx: JacobianContext,
    name: str,
    shape: tuple[int, ...],
    view: tuple[int, ...],
    axes: tuple[int, ...],
    epsilon: float,
    centred: bool,
) -> Jac | None:
    """∂z of z = d/√(mean d² + ε) over ``axes`` (d = x − mean x when ``centred``, else x):
    ∂z = (∂d − ẑ·mean(ẑ ⊙ ∂d))/σ, with ẑ = d/σ, σ = √(mean d² + ε), each in its range on the box."""
    x = jctx.jac(name)
    if x is None or not epsilon >= 0:
        return None
    grouped_x, back = grouped_jac(x, view, axes)
    box = _grouped_interval(jctx.box(name), shape, view, axes)
    point = _grouped_interval(jctx.point(name), shape, view, axes)
    if not box.is_finite():
        return None
    n = grouped_x.shape[1]
    if centred:
        mean_centre = grouped_x.centre.mean(dim=2, keepdim=True)
        total = grouped_x.radius.sum(dim=2, keepdim=True)
        scale = grouped_x.magnitude().sum(dim=2, keepdim=True) / n
        # |I − 11ᵀ/n| R = R (1 − 2/n) + ΣR/n
        radius = (grouped_x.radius * (1 - 2 / n) + total / n).clamp_min(0.0) + (n + 4) * UNIT * scale
        d = rounded(grouped_x.centre - mean_centre, radius, grouped_x.deviation)  # a projection: norm 1
        d_box = _centred_values(box)
        d_point = _centred_values(point)
        d_box = jctx.tighten(d_point, d_box, d)
        low, high = variance_lower_bound(box.lo, box.hi), variance_upper_bound(box.lo, box.hi)
    else:
        d, d_box, d_point = grouped_x, box, point
        low, high = mean_square_bounds(box.lo, box.hi)
    var_box = _mean_of_squares(d_box)
    var_box = var_box.intersect(low[:, None], high[:, None])
    var_jac = summed(times(d, Interval(d_box.lo * (2 / n), d_box.hi * (2 / n)).widened()), 1)
    var_box = jctx.tighten(_mean_of_squares(d_point), var_box, var_jac)
    with np.errstate(divide="ignore"):
        inverse = Interval(
            1 / np.sqrt(np.maximum(var_box.hi, 0.0) + epsilon), 1 / np.sqrt(np.maximum(var_box.lo, 0.0) + epsilon)
        ).widened()
    if not inverse.is_finite():
        return None
    z = product(d_box, inverse)
    found = _normalising(d, z, inverse)
    # ‖D(u)‖₂ ≤ 1/√(σ²_min + ε) per group, D = (I − ẑẑᵀ/n)/σ (eigenvalues 1/σ and ε/σ³) and the
    # groups are disjoint; so J − C′ = D(u)(J_d − C_d) + (D(u)C_d − C′), the second term is what
    # the same steps give for the input C_d alone (no radius: its birth is w·|C|, not w·(|C| + R)).
    if x.deviation == 0:
        return back(found)  # the input is its centre: the steps alone already give this
    gain = float(np.max(inverse.hi)) if inverse.hi.size else 0.0
    alone = _normalising(Jac(d.centre, torch.zeros_like(d.radius), 0.0), z, inverse)
    if torch.equal(alone.centre, found.centre):
        deviation = (amplified(gain, d.deviation) + alone.deviation) * (1 + 1e-12)
        if deviation < found.deviation:
            found = Jac(found.centre, found.radius, deviation)
    return back(found)


def _normalising(d: Jac, z: Interval, inverse: Interval) -> Jac:
    """(∂d − z·mean(z ⊙ ∂d))·inverse over the last value axis, z and inverse in their ranges."""
    n = d.shape[1]
    projection = summed(times(d, z), 1)
    correction = times(expand(scaled(projection, 1 / n), d.shape), z)
    moved = combine([d, correction], [1.0, -1.0])
    return times(moved, inverse)


def _centred_values(x: Interval) -> Interval:
    """x − mean(x) along the last axis, by interval arithmetic."""
    mean_lo, mean_hi = x.lo.mean(axis=1, keepdims=True), x.hi.mean(axis=1, keepdims=True)
    return Interval(x.lo - mean_hi, x.hi - mean_lo).widened(x.magnitude + x.magnitude.mean(axis=1, keepdims=True))


def _mean_of_squares(d: Interval) -> Interval:
    squared = square(d)  # a mean of non-negative terms: no cancellation
    return Interval(squared.lo.mean(axis=1, keepdims=True), squared.hi.mean(axis=1, keepdims=True)).widened()


def attention(
    jctx: JacobianContext,
    q: tuple[Jac | None, Interval, Interval],
    k: tuple[Jac | None, Interval, Interval],
    v: tuple[Jac | None, Interval, Interval],
    scale: float,
) -> Jac:
    """∂O of O = softmax(scale·Q Kᵀ) V over (B, H, S, D) heads; each argument (Jacobian, range on
    the box, range at the centre).  ∂S = scale(∂Q Kᵀ + Q ∂Kᵀ), ∂P = P ⊙ (∂S − ⟨P, ∂S⟩), ∂O = ∂P V + P ∂V,
    with the ranges of S and P tightened by the centred form."""
    (dq, q_box, q_point), (dk, k_box, k_point), (dv, v_box) = q, k, v[:2]
    dk_t = dk.map(lambda t: t.transpose(-1, -2)) if dk is not None else None
    k_t_box, k_t_point = _transposed(k_box), _transposed(k_point)
    scores_shape = tuple(q_box.shape[:-1]) + (k_box.shape[-2],)
    # Softmax ignores a constant added to a row of scores, so ∂Q·Kᵀ may use the keys less their
    # mean (their spread, not their distance from 0); and the rows of the true ∂P sum to 0, so
    # ∂P·V may use the values less theirs.
    terms = []
    if dq is not None:
        terms.append(matmul(dq, q_box, None, _transposed(_less_mean(k_box)), scores_shape))
    if dk_t is not None:
        terms.append(matmul(None, q_box, dk_t, k_t_box, scores_shape))
    ds = scaled(combine(terms), scale)
    s_box = _scaled(_interval_matmul(q_box, k_t_box), scale)
    s_point = _scaled(_interval_matmul(q_point, k_t_point), scale)
    s_box = jctx.tighten(s_point, s_box, ds)
    p_box, p_point = _softmax_range(s_box), _softmax_range(s_point)
    dp = softmax(ds, p_box, len(scores_shape) - 1)
    p_box = jctx.tighten(p_point, p_box, dp).intersect(0.0, 1.0)
    out_shape = tuple(scores_shape[:-1]) + (v_box.shape[-1],)
    outputs = [matmul(dp, p_box, None, _less_mean(v_box), out_shape)]
    if dv is not None:
        outputs.append(matmul(None, p_box, dv, v_box, out_shape))
    return combine(outputs)


def _less_mean(x: Interval) -> Interval:
    """x − c with c the mean over axis −2 of x's midpoints (a constant), rounded outwards."""
    centre = x.center.mean(axis=-2, keepdims=True)
    return Interval(x.lo - centre, x.hi - centre).widened(np.abs(centre))


def _transposed(x: Interval) -> Interval:
    return Interval(np.swapaxes(x.lo, -1, -2), np.swapaxes(x.hi, -1, -2))


def _scaled(x: Interval, scale: float) -> Interval:
    return Interval(x.lo * scale, x.hi * scale).widened()


def _interval_matmul(a: Interval, b: Interval) -> Interval:
    """Midpoint–radius A·B (Rump): A_m B_m ± (|A_m| B_w + A_w (|B_m| + B_w)), rounded outwards."""
    am, aw = a.center, a.radius
    bm, bw = b.center, b.radius
    centre = am @ bm
    k = a.shape[-1]
    radius = np.abs(am) @ bw + aw @ (np.abs(bm) + bw) + (k + 2) * UNIT * ((np.abs(am) + aw) @ (np.abs(bm) + bw))
    return Interval(centre - radius, centre + radius).widened()


def _softmax_range(s: Interval) -> Interval:
    shape = s.shape
    lo, hi = softmax_range(s.lo.reshape(-1, shape[-1]), s.hi.reshape(-1, shape[-1]))
    return Interval(lo.reshape(shape), hi.reshape(shape))


def _zero(jctx: JacobianContext, shape: tuple[int, ...]) -> Jac:
    zeros = torch.zeros((jctx.directions,) + shape, dtype=torch.float64)
    return Jac(zeros, zeros.clone(), 0.0)


def extreme(node: Node, jctx: JacobianContext, largest: bool) -> list[Jac | None]:
    """Elementwise max (or min) of inputs that broadcast: where an input's range lies wholly below
    another's lowest value (above its highest, for min) it is never the one taken; the output's
    Jacobian is in the hull of the rest's."""
    shape = tuple(jctx.rules.output_shape(node, 0))
    ranges = [jctx.box(name).broadcast_to(shape) for name in node.inputs if name]
    jacs = []
    for name in node.inputs:
        if name:
            found = jctx.jac(name)
            jacs.append(expand(found, shape) if found is not None else _zero(jctx, shape))
    if largest:
        threshold = np.maximum.reduce([r.lo for r in ranges])
        candidates = [torch.as_tensor(np.asarray(r.hi >= threshold)) for r in ranges]
    else:
        threshold = np.minimum.reduce([r.hi for r in ranges])
        candidates = [torch.as_tensor(np.asarray(r.lo <= threshold)) for r in ranges]
    return [selected(jacs, candidates)]


def reduced_extreme(jac: Jac, box: Interval, axes: tuple[int, ...], keepdims: bool, largest: bool) -> Jac:
    """max (or min) over ``axes`` (value axes) of each group: the hull of the Jacobians of the group's
    entries that can be the one taken (those whose range reaches the group's largest lowest value)."""
    full = box.broadcast_to(jac.shape)
    if largest:
        threshold = np.max(full.lo, axis=axes, keepdims=True)
        may = torch.as_tensor(np.asarray(full.hi >= threshold))
    else:
        threshold = np.min(full.hi, axis=axes, keepdims=True)
        may = torch.as_tensor(np.asarray(full.lo <= threshold))
    may = may.reshape((1,) + jac.shape)
    dims = tuple(a + 1 for a in axes)
    low = torch.where(may, jac.centre - jac.radius, torch.full_like(jac.centre, math.inf)).amin(dim=dims, keepdim=True)
    high = torch.where(may, jac.centre + jac.radius, torch.full_like(jac.centre, -math.inf)).amax(
        dim=dims, keepdim=True
    )
    if not keepdims:
        low, high = low.squeeze(dims), high.squeeze(dims)
    return hull(low, high)
