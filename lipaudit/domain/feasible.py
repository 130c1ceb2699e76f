"""Which pairs of switch settings no input of the box reaches (the switching bound's pruning).

The switching bound (switching.py) takes the sup of ‖J‖₂ over every vertex of the switches' slopes,
but a vertex is an activation pattern, and around a real input many patterns are out of reach: two
ReLU entries whose pre-activations move almost together cannot sit on opposite sides of their kinks
anywhere in a small box.  Pruning those patterns is sound because ‖J(x)‖ at any point x where the
network is differentiable is the norm at x's own pattern, and x's pattern satisfies every test below.

Each switch j reads a pre-activation z_j (an activation's input entry; for a MaxPool switch, its
candidate minus its window's base).  Over the box x0 + h, |h| ≤ r (entry by entry),

    z_j(x0 + h) ∈ z_j(x0) + (g_j ± ρ_j)·h,

where g_j ± ρ_j encloses ∂z_j/∂x at every point of the box with every slope anywhere in its range
(mean value theorem along the segment from x0).  A setting of switch j asks σ·z_j ≥ 0 for a sign σ
(a ReLU entry on: z ≥ 0; off: z ≤ 0; a MaxPool candidate taken: candidate ≥ base; a candidate not
taken asks nothing), so it is reachable only if  σ·g_j·h + c_j ≥ 0  for some h, with
c_j = sup σ·z_j(x0) + ρ_j·r.  Two settings are out of reach together where some t ∈ [0, 1] gives

    t·c_i + (1 − t)·c_j + Σ_k r_k·|t·σ_i·g_ik + (1 − t)·σ_j·g_jk| < 0

(Farkas: the weighted sum of the two constraints is negative at every h of the box).  Any t gives a
valid proof, so t is found by bisection on the convex left side and only the test itself carries a
rounding margin.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..intervals.jacobian import UNIT
from .midpoint_radius import product, times_slope

BISECTIONS = 40
CHUNK = 4096  # pairs of settings per step: CHUNK × n0 float64 entries, a few MiB
# Floating-point operations for the pair tests (about 4·n0 per pair and bisection step): past it only
# the most influential switches are paired, so the work, never the time, sets what is pruned.
PAIR_WORK = 2e9


def gradient_enclosure(b: tuple[Tensor, Tensor], m: tuple[Tensor, Tensor], width: Tensor) -> tuple[Tensor, Tensor]:
    """∂z/∂x for every switch (n0 × K, centre and radius) with every switch's slope anywhere in
    [low, low + width]: z = Bᵀx + Σ_i δ_i·z_i·(injection i's row of Mᵀ), row i read before row j."""
    g_c, g_r = b[0].clone(), b[1].clone()
    for j in range(1, g_c.shape[1]):
        through_c, through_r = times_slope(g_c[:, :j], g_r[:, :j], width[:j] / 2, width[:j] / 2)
        inner_c, inner_r = product((through_c, through_r), (m[0][:j, j : j + 1], m[1][:j, j : j + 1]))
        g_c[:, j : j + 1] += inner_c
        g_r[:, j : j + 1] += inner_r + 2 * UNIT * (g_c[:, j : j + 1].abs() + inner_c.abs())
    return g_c, g_r


def conflicts(
    gradient: tuple[Tensor, Tensor],
    at_centre: tuple[Tensor, Tensor],
    signs: Tensor,
    half_widths: Tensor,
    priority: Tensor,
) -> Tensor:
    """(K, 2, K, 2) booleans: [i, a, j, b] where switch i at setting a (0: δ = 0, 1: δ full) and
    switch j at setting b are reached by no input of the box together.  ``signs`` (K, 2) is σ for
    each setting, 0 where the setting asks nothing; ``at_centre`` encloses z(x0) (lo, hi).  Where
    PAIR_WORK does not cover every pair, only the switches of highest ``priority`` are paired."""
    g_c, g_r = gradient
    k = g_c.shape[1]
    lo, hi = at_centre
    out = torch.zeros(k, 2, k, 2, dtype=torch.bool)
    per_pair = 4.0 * g_c.shape[0] * (BISECTIONS + 4)
    paired = max(2, int(math.sqrt(PAIR_WORK / per_pair / 2)))  # switches: about 2·paired² pairs of settings
    chosen = torch.zeros(k, dtype=torch.bool)
    chosen[torch.argsort(-priority, stable=True)[:paired]] = True
    sigma = torch.where(chosen[:, None], signs, torch.zeros_like(signs)).reshape(-1).to(torch.float64)
    constrained = torch.nonzero(sigma != 0).flatten()  # setting s = 2·switch + value
    if len(constrained) < 2:
        return out
    switch = constrained // 2
    s = sigma[constrained]
    a = g_c[:, switch] * s  # n0 × S: the constraint's direction
    centre_sup = torch.where(s > 0, hi[switch], -lo[switch])
    slack = centre_sup + half_widths @ g_r[:, switch]
    scale = centre_sup.abs() + half_widths @ (g_r[:, switch] + g_c[:, switch].abs())
    first, second = torch.triu_indices(len(constrained), len(constrained), offset=1)
    first, second = first[switch[first] != switch[second]], second[switch[first] != switch[second]]
    found = torch.zeros(len(first), dtype=torch.bool)
    n0 = a.shape[0]
    for start in range(0, len(first), CHUNK):
        i, j = first[start : start + CHUNK], second[start : start + CHUNK]
        value, magnitude = _weighted_sup(a[:, i].T, a[:, j].T, slack[i], slack[j], half_widths)
        margin = (n0 + 8) * 4 * UNIT * (magnitude + scale[i] + scale[j])
        found[start : start + CHUNK] = value + margin < 0
    i, j = constrained[first[found]], constrained[second[found]]
    out[i // 2, i % 2, j // 2, j % 2] = True
    out[j // 2, j % 2, i // 2, i % 2] = True
    return out


def _weighted_sup(a_i: Tensor, a_j: Tensor, c_i: Tensor, c_j: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """min over t ∈ [0, 1] (by bisection on the slope) of f(t) = t·c_i + (1 − t)·c_j + r·|t·a_i + (1 − t)·a_j|,
    returned as f at the t found (a proof whatever t is) and the size of its terms."""
    low = torch.zeros(len(c_i), dtype=torch.float64)
    high = torch.ones(len(c_i), dtype=torch.float64)
    step = a_i - a_j
    for _ in range(BISECTIONS):
        t = (low + high) / 2
        combined = t[:, None] * step + a_j
        slope = c_i - c_j + (r * step * torch.sign(combined)).sum(dim=1)
        rising = slope > 0
        high = torch.where(rising, t, high)
        low = torch.where(rising, low, t)
    best = None
    for t in (low, high, torch.zeros_like(low), torch.ones_like(low)):
        combined = t[:, None] * step + a_j
        value = t * c_i + (1 - t) * c_j + (r * combined.abs()).sum(dim=1)
        best = value if best is None else torch.minimum(best, value)
    assert best is not None
    magnitude = c_i.abs() + c_j.abs() + (r * (a_i.abs() + a_j.abs())).sum(dim=1)
    return best, magnitude


def reachable(conflict: Tensor, fixed: Tensor, split: Tensor, value: Tensor) -> Tensor:
    """For boxes ``fixed`` (V × K: −1 free, else the setting) just made by setting ``split`` to
    ``value``: False where that setting conflicts with another switch already set in the box."""
    rows = conflict[split, value.long()]  # V × K × 2
    settled = fixed >= 0
    hits = torch.gather(rows, 2, fixed.clamp(min=0).long()[:, :, None])[:, :, 0] & settled
    return ~hits.any(dim=1)


__all__ = ["conflicts", "gradient_enclosure", "reachable"]
