"""A LayerNorm's deviation from how fast its Jacobian can turn on its input's range, not from the
widths its interval rule multiplies.

Per group t of n entries normalised together, y ↦ γ ⊙ g(y) with g(y) = Py/σ(y), P the centring,
σ² = ‖Py‖²/n + ε, has Jacobian D_t = diag(γ)(P − ẑẑᵀ/n)/σ (ẑ = Py/σ, ‖ẑ‖² ≤ n).  Along h,

    dD_t[h] = −diag(γ)·(ẑᵀh/(nσ))·(P − ẑẑᵀ/n)/σ − diag(γ)·(dẑ ẑᵀ + ẑ dẑᵀ)/(nσ),  ‖dẑ‖ ≤ ‖h‖/σ,

with ‖dẑ‖‖ẑ‖ ≤ √n‖h‖/σ and |dẑᵀẑ| = |hᵀẑ|·ε/σ³ (Qẑ = ẑ·ε/σ² for Q = P − ẑẑᵀ/n), and the
symmetric rank-2 ‖abᵀ + baᵀ‖ = ‖a‖‖b‖ + |aᵀb|; so ‖D_t(y) − D_t(y′)‖₂ ≤ L_t‖y − y′‖₂ with
L_t = (2 + ε/s_t²)·max|γ_t|/(√n·s_t²) wherever σ ≥ s_t, and
s_t² = σ²_min + ε over the group's range box (lipaudit.intervals.normalize: exact), which is convex.
With the input's Jacobian J = C + E (‖E‖ ≤ d) and u_c the centre of the input's range,

    J·D(u) − C′ = E·D(u) + C·(D(u) − D(u_c)) + (C·D(u_c) − C′),

at most d·max_t max|γ_t|/s_t + min(√(Σ_t (‖C_t‖₂·L_t·ρ_t)²), ‖C‖₂·max_t L_t·ρ_t) + ‖C·D(u_c) − C′‖₂, C_t the columns of
group t (D is block diagonal over the groups) and ρ_t the largest distance from u_c within the
group's box.  D(u_c) is enclosed by the op's own rule on the one-point range {u_c} with the
identity for input Jacobian, [M₀ ± R₀], so the last term is at most ‖C·M₀ − C′‖₂ + ‖|C|·R₀‖₂ plus
the float64 rounding of C·M₀.  The interval rule's own deviation grows with every width it meets
(0.74 against ‖C‖ 3.6 on the tiny ViT's second block, where autograd finds 0.044 on the image);
this one grows with ρ·L, first order in the box and with no sum of entrywise widths.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..intervals.interval import Interval
from ..intervals.jacobian import UNIT, Jac, JacobianContext, nonnegative_norm
from ..intervals.jacobian_rules import grouped_jac
from ..intervals.normalize import grouped, ungrouped, variance_lower_bound
from ..ops import RuleContext
from ..spectral.dense import dense_norm
from .propagate import RULE_ERRORS

# The identity run: at most this many input entries × output entries.
CURVATURE_LIMIT = 2**20


def layer_norm_deviation(op, node, jctx: JacobianContext, output: Jac) -> float:
    """A bound on ‖J_out − C_out‖₂ for a LayerNormalization node whose output Jacobian ``output``
    the rule has just given; inf where the bound does not apply (a variable scale, an unbounded
    range, too many entries)."""
    rules = jctx.rules
    graph = rules.graph
    name = node.inputs[0]
    jac = jctx.jacobians.get(name)
    scale = rules.const_input(node, 1)
    if node.op_type != "LayerNormalization" or jac is None or scale is None or graph.variable_inputs(node) != [name]:
        return math.inf
    shape = tuple(rules.input_shape(node))
    size = math.prod(shape)
    if size * math.prod(output.shape) > CURVATURE_LIMIT or not math.isfinite(jac.deviation):
        return math.inf
    view, axes = op.grouping(node, shape)
    box = rules.range_of(name).broadcast_to(shape)
    lo, hi = grouped(box, shape, axes)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return math.inf
    n = lo.shape[1]
    epsilon = node.attr_float("epsilon")
    floor = variance_lower_bound(lo, hi) + epsilon  # s_t², rounded down by variance_lower_bound
    if not np.all(floor > 0):
        return math.inf
    gamma = np.abs(np.broadcast_to(op.channel_values(node, np.asarray(scale, np.float64), shape), shape))
    gamma_max = grouped(Interval.exact(np.ascontiguousarray(gamma)), shape, axes)[1].max(axis=1)
    gain = float(np.max(gamma_max / np.sqrt(floor), initial=0.0)) * (1 + 1e-12)
    centre = np.clip(lo / 2 + hi / 2, lo, hi)
    reach = np.nextafter(np.maximum(hi - centre, centre - lo), np.inf)
    with np.errstate(over="ignore"):  # an overflow is an inf reach: the bound below is then inf, never a warning
        rho = np.sqrt(np.sum(reach * reach, axis=1)) * (1 + 1e-12)
    turn = (2 + epsilon / floor) * gamma_max / (math.sqrt(n) * floor) * (1 + 1e-12) * rho  # L_t·ρ_t per group
    columns, _ = grouped_jac(Jac(jac.centre, jac.radius, jac.deviation), view, axes)
    group_norms = [dense_norm(columns.centre[:, t, :]).value * (1 + 1e-12) for t in range(columns.centre.shape[1])]
    # C·blockdiag(Δ_t) is [C_1Δ_1 ⋯ C_GΔ_G]: at most √(Σ‖C_t‖²‖Δ_t‖²), and at most ‖C‖·max‖Δ_t‖
    spread = min(
        math.sqrt(math.fsum((c * float(w)) ** 2 for c, w in zip(group_norms, turn))),
        dense_norm(jac.centre.reshape(jac.directions, -1)).value * (1 + 1e-12) * float(np.max(turn, initial=0.0)),
    ) * (1 + 1e-12)
    shift = _centre_shift(op, node, jctx, centre, shape, axes, jac, output)
    total = (amplified(gain, jac.deviation) + spread + shift) * (1 + 1e-12)
    return total if math.isfinite(total) else math.inf


def amplified(gain: float, deviation: float) -> float:
    return 0.0 if gain == 0 else gain * deviation


def _centre_shift(op, node, jctx: JacobianContext, centre: np.ndarray, shape, axes, jac: Jac, output: Jac) -> float:
    """‖C·D(u_c) − C′‖₂, D(u_c) enclosed by the rule on the one-point range {u_c} (inf where it fails)."""
    name = node.inputs[0]
    point = np.ascontiguousarray(ungrouped(centre, shape, axes).reshape(shape))
    at_point = Interval(point, point)
    size = int(point.size)
    eye = torch.eye(size, dtype=torch.float64).reshape((size, *shape))
    ranges = dict(jctx.rules.ranges or {})
    ranges[name] = at_point
    rules = RuleContext(jctx.rules.graph, method=jctx.rules.method, device=jctx.rules.device, ranges=ranges)
    context = JacobianContext(
        rules,
        {name: at_point},
        {name: Jac(eye, torch.zeros_like(eye), 0.0)},
        torch.zeros(size, dtype=torch.float64),
    )
    try:
        found = op.jacobian(node, context)
    except RULE_ERRORS:
        return math.inf
    if not found or found[0] is None or found[0].shape != output.shape:
        return math.inf
    m0, r0 = found[0].centre.reshape(size, -1), found[0].radius.reshape(size, -1)
    c = jac.centre.reshape(jac.directions, -1)
    c_out = output.centre.reshape(output.directions, -1)
    if not all(bool(torch.all(torch.isfinite(t))) for t in (m0, r0, c)):
        return math.inf
    rounding = (size + 2) * UNIT
    product = c @ m0
    slack = rounding * (c.abs() @ m0.abs()) + UNIT * (product.abs() + c_out.abs())
    return (
        dense_norm(product - c_out).value * (1 + 1e-12)
        + nonnegative_norm(c.abs() @ r0) * (1 + rounding)
        + nonnegative_norm(slack) * (1 + rounding)
    )
