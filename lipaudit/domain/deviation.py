"""A second bound on ‖J − C‖₂ after a nonlinear op: its own Lipschitz factor on the ranges times the
inputs' deviations, plus what the op adds when its inputs' Jacobians are their centres.

For an op with inputs u_i (Jacobians J_i = C_i + E_i on the box, ‖E_i‖₂ ≤ d_i) the output's Jacobian
is Σ_i D_i(u) J_i, D_i the op's partial Jacobians at u(x), in the ranges.  So

    J_out − C′ = (Σ_i D_i C_i − C′) + Σ_i D_i E_i,

the first term is at most what the op's ``jacobian`` rule gives as the deviation when each input's
Jacobian is exactly its centre (radius and deviation 0: what the op's spread adds, w·|C|), and the
second at most the op's certified factor on the ranges (``bound_outputs``: ‖Σ_i D_i E_i‖ ≤ Σ_i w_i
d_i, or the root sum of squares) times the d_i.  Most rules carry an incoming deviation through
their parts one by one, where the op as a whole has a smaller norm (attention's); and their
spread term reads |C| + R, where R is often far above |C| after a few layers.

That second run must read the same inner ranges as the first (with no radius its centred form would
narrow them below the truth, and its centre would move): it reads back the ranges the first run
narrowed (``Recorded``), so its centre is the first run's C′, which it checks.  Linear ops are left
alone: their deviation is already their norm times the input's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..compose.factors import node_factors
from ..intervals.interval import Interval
from ..intervals.jacobian import UNIT, Jac, JacobianContext, nonnegative_norm
from ..linear_maps import Barrier
from ..ops import RuleContext, resolve
from ..spectral.dense import dense_norm
from .curvature import layer_norm_deviation
from .jacobian import Forward, Recorded
from .propagate import RULE_ERRORS
from .selections import Selection, note_selections, shared_deviation

# The joint gain's identity run: at most this many input entries × output entries (float64 tensors
# of that size, a few per step of the rule).
JOINT_LIMIT = 2**20


@dataclass
class _Replayed(JacobianContext):
    """The inner ranges of the node's first run, in the order its rule narrowed them."""

    recorded: list[Interval] = field(default_factory=list)

    def tighten(self, point: Interval, box: Interval, jac: Jac) -> Interval:
        if not self.recorded:
            raise ValueError("the rule narrows more ranges than in its first run")
        found = self.recorded.pop(0)
        if np.broadcast_shapes(found.shape, box.shape) != found.shape:
            raise ValueError("the rule narrows other ranges than in its first run")
        return found


class OpFactorDeviation(Forward):
    """After each nonlinear node, the output's Jacobian from the rule on inputs of deviation 0, with
    the deviation above, where that is lower than the rule's own."""

    def __init__(self, method: str = "auto") -> None:
        self.method = method
        self.improved = 0
        self.selections: dict[str, Selection] = {}  # values that take entries of another

    def after(self, node, jctx: JacobianContext) -> None:
        graph = jctx.rules.graph
        note_selections(node, jctx, self.selections)
        self._turning(node, jctx)
        variables = graph.variable_inputs(node)
        jacs = [jctx.jacobians.get(name) for name in variables]
        if not variables or any(j is None for j in jacs) or all(j.deviation == 0 for j in jacs if j is not None):
            return
        op = resolve(node, graph.opset_of(node))
        if op is None or not _nonlinear(op, node, jctx.rules):
            return
        gains = _gains(node, jctx.rules, self.method)
        if gains is None:
            return
        outputs = [name for name in node.outputs if name and name in jctx.jacobians]
        if not outputs:
            return
        combine, weights = gains
        deviations = [j.deviation for j in jacs if j is not None]
        if combine == "sum":
            incoming = math.fsum(w * d for w, d in zip(weights, deviations))
        else:
            incoming = math.sqrt(math.fsum((w * d) ** 2 for w, d in zip(weights, deviations)))
        if not isinstance(jctx, Recorded):
            return
        name, mine = outputs[0], jctx.jacobians[outputs[0]]
        candidates = [mine.deviation]
        carried, born = math.inf, math.inf
        if len(set(variables)) > 1:  # a sum of weights over inputs: the joint norm may be far lower
            names = list(dict.fromkeys(variables))
            carried, born = _joint(op, node, jctx, names, mine, shared_deviation(names, self.selections))
            candidates.append((carried + born) * (1 + 1e-12))
        incoming = min(incoming, carried) * (1 + 1e-12)
        if math.isfinite(incoming):
            again = _centre_alone(op, node, jctx, variables)
            if again is not None and again.shape == mine.shape and torch.equal(again.centre, mine.centre):
                candidates.append(again.deviation + incoming)
        deviation = min(candidates)
        if deviation < mine.deviation:
            jctx.jacobians[name] = Jac(mine.centre, mine.radius, deviation)
            self.improved += 1

    def _turning(self, node, jctx: JacobianContext) -> None:
        """A LayerNorm's deviation from how fast its Jacobian turns on the range (lipaudit.domain.curvature)."""
        name = node.outputs[0] if node.outputs else ""
        mine = jctx.jacobians.get(name) if name else None
        if node.op_type != "LayerNormalization" or mine is None:
            return
        op = resolve(node, jctx.rules.graph.opset_of(node))
        if op is None:
            return
        deviation = layer_norm_deviation(op, node, jctx, mine)
        if deviation < mine.deviation:
            jctx.jacobians[name] = Jac(mine.centre, mine.radius, deviation)
            self.improved += 1


def _centre_alone(op, node, jctx: Recorded, variables: list[str]) -> Jac | None:
    """The rule's output for inputs that are exactly their centres, on the first run's inner ranges."""
    exact = _Replayed(
        jctx.rules, jctx.points, dict(jctx.jacobians), jctx.half_widths, set(jctx.constants), list(jctx.record)
    )
    for name in set(variables):
        jac = exact.jacobians[name]
        exact.jacobians[name] = Jac(jac.centre, torch.zeros_like(jac.radius), 0.0)
    try:
        found = op.jacobian(node, exact)
    except RULE_ERRORS:
        return None
    return found[0] if found else None


def _joint(op, node, jctx: Recorded, names: list[str], output: Jac, shared: float = math.inf) -> tuple[float, float]:
    """(carried, born) with ‖J_out − C′‖₂ ≤ carried + born, from the op's Jacobian D(u) in all its
    variable inputs side by side (rows: their entries in order), enclosed on the ranges by the rule
    run on the identity over those entries with the first run's inner ranges: D(u) ∈ [M_c ± M_r].
    With the inputs' centres C = [C_1 ⋯ C_k] and errors E (‖E‖₂ ≤ √(Σ d_i²), blocks side by side),

        (C + E)·D(u) − C′ = C·(D(u) − M_c) + E·D(u) + (C·M_c − C′),

    at most ‖|C|·M_r‖₂ + ‖C·M_c − C′‖₂ (born) + √(Σ d_i²)·(‖M_c‖₂ + ‖M_r‖₂) (carried, which also
    bounds ‖E·D(u)‖₂ beside any other bound on the first two terms); ``shared``: another bound on ‖E‖₂
    (the inputs take disjoint entries of one value, lipaudit.domain.selections).  inf past JOINT_LIMIT."""
    shapes = [jctx.jacobians[name].shape for name in names]
    sizes = [math.prod(shape) for shape in shapes]
    n = sum(sizes)
    if n * max(1, math.prod(output.shape)) > JOINT_LIMIT:
        return math.inf, math.inf
    inputs, offset = {}, 0
    for name, shape, size in zip(names, shapes, sizes):
        eye = torch.zeros(n, size, dtype=torch.float64)
        eye[offset : offset + size] = torch.eye(size, dtype=torch.float64)
        inputs[name] = Jac(eye.reshape((n, *shape)), torch.zeros((n, *shape), dtype=torch.float64), 0.0)
        offset += size
    ones = torch.ones(n, dtype=torch.float64)
    context = _Replayed(jctx.rules, jctx.points, inputs, ones, set(jctx.constants), list(jctx.record))
    try:
        found = op.jacobian(node, context)
    except RULE_ERRORS:
        return math.inf, math.inf
    if not found or found[0] is None or found[0].shape != output.shape:
        return math.inf, math.inf
    m_c, m_r = found[0].centre.reshape(n, -1), found[0].radius.reshape(n, -1)
    c = torch.cat([jctx.jacobians[name].centre.reshape(output.directions, -1) for name in names], dim=1)
    c_out = output.centre.reshape(output.directions, -1)
    if not all(bool(torch.all(torch.isfinite(t))) for t in (m_c, m_r, c)):
        return math.inf, math.inf
    errors = min(math.sqrt(math.fsum(jctx.jacobians[name].deviation ** 2 for name in names)), shared)
    gain = dense_norm(m_c).value * (1 + 1e-12) + nonnegative_norm(m_r)
    rounding = (n + 2) * UNIT
    spread = nonnegative_norm(c.abs() @ m_r) * (1 + rounding)
    product = c @ m_c
    # fl(C·M_c) is within (n + 2)u·|C||M_c| of C·M_c, and the difference's own rounding within u of it
    slack = rounding * (c.abs() @ m_c.abs()) + UNIT * (product.abs() + c_out.abs())
    shift = dense_norm(product - c_out).value * (1 + 1e-12) + nonnegative_norm(slack) * (1 + rounding)
    carried, born = errors * gain * (1 + 1e-12), spread + shift
    return (carried if math.isfinite(carried) else math.inf), (born if math.isfinite(born) else math.inf)


def _nonlinear(op, node, rules: RuleContext) -> bool:
    try:
        found = op.linear_part(node, rules)
    except RULE_ERRORS:
        return True
    return isinstance(found, Barrier)


def _gains(node, rules: RuleContext, method: str) -> tuple[str, list[float]] | None:
    """('sum' or 'rss', one weight per variable input) from the node's certified factor of output 0
    on the ranges, with the checks every factor gets (compose.factors: √copies on an input that
    the op broadcasts, the float32 margin); None where it has none."""
    ctx = RuleContext(rules.graph, method=method, device=rules.device, ranges=rules.ranges)
    factors = node_factors(node, ctx)
    if len([name for name in node.outputs if name]) != 1 or not factors:
        return None  # one factor per output would need the outputs' deviations apart: keep the rule's
    factor = factors[0]
    if factor.status != "bounded" or factor.value is None or not factor.certified:
        return None
    count = len(rules.graph.variable_inputs(node))
    weights = factor.input_weights if factor.input_weights is not None else [factor.value] * count
    if len(weights) != count or not all(math.isfinite(w) and w >= 0 for w in weights):
        return None
    return factor.combine, [float(w) for w in weights]
