"""A second bound on ‖J − C‖₂ after a nonlinear op: its own Lipschitz factor on the ranges times the
inputs' deviations, plus what the op adds when its inputs' Jacobians are their centres.

For an op with inputs u_i (Jacobians J_i = C_i + E_i on the box, ‖E_i‖₂ ≤ d_i) the output's Jacobian
is Σ_i D_i(u) J_i, D_i the op's partial Jacobians at u(x), in the ranges.  So

    J_out − C′ = (Σ_i D_i C_i − C′) + Σ_i D_i E_i,

the first term is at most what the op's ``jacobian`` rule gives as the deviation when every input
deviation is 0 (its inputs then are exactly their centres: the rule's deviation is the gain times
the input's plus what the op's spread adds, from |C| + R), and the second at most the op's certified
factor on the ranges (``bound_outputs``: ‖Σ_i D_i E_i‖ ≤ Σ_i w_i d_i, or the root sum of squares)
times the d_i.  Most rules carry an incoming deviation through their parts one by one, where the op
as a whole has a smaller norm (attention's); the normalisations' rule already takes max|γ|/σ_min.

That second run must not narrow the rule's inner ranges: ``JacobianContext.spread`` caps the
radius's share by the deviation, so the run uses a context whose spread reads the radius alone
(always sound, only less tight).  Linear ops are left alone: their deviation is already their norm
times the input's.
"""

from __future__ import annotations

import math

import torch

from ..intervals.jacobian import Jac, JacobianContext
from ..linear_maps import Barrier
from ..ops import RuleContext, resolve
from .jacobian import Forward, Uncentred
from .propagate import RULE_ERRORS


class _RadiusSpread(JacobianContext):
    """The centred form from the radius alone (no cap by the deviation, which is 0 in this run)."""

    def spread(self, jac: Jac):
        r = self.half_widths.reshape((-1,) + (1,) * len(jac.shape))
        n0 = jac.directions
        total = ((jac.centre.abs() + jac.radius) * r).sum(dim=0)
        return (total * (1 + (n0 + 4) * 2.0**-53)).numpy()


class OpFactorDeviation(Forward):
    """After each nonlinear node, the output's Jacobian from the rule on inputs of deviation 0, with
    the deviation above, where that is lower than the rule's own."""

    def __init__(self, method: str = "auto") -> None:
        self.method = method
        self.improved = 0

    def after(self, node, jctx: JacobianContext) -> None:
        graph = jctx.rules.graph
        variables = graph.variable_inputs(node)
        jacs = [jctx.jacobians.get(name) for name in variables]
        if not variables or any(j is None for j in jacs) or all(j.deviation == 0 for j in jacs if j is not None):
            return
        op = resolve(node, graph.opset_of(node))
        if op is None or not _nonlinear(op, node, jctx.rules):
            return
        gains = _gains(op, node, jctx.rules, self.method)
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
        incoming *= 1 + 1e-12
        if not math.isfinite(incoming):
            return
        context = Uncentred if isinstance(jctx, Uncentred) else _RadiusSpread
        exact = context(jctx.rules, jctx.points, dict(jctx.jacobians), jctx.half_widths, set(jctx.constants))
        for name in set(variables):
            jac = exact.jacobians[name]
            exact.jacobians[name] = Jac(jac.centre, jac.radius, 0.0)
        try:
            found = op.jacobian(node, exact)
        except RULE_ERRORS:
            return
        if found is None:
            return
        for index, name in enumerate(node.outputs):
            again = found[index] if index < len(found) else None
            mine = jctx.jacobians.get(name) if name else None
            if again is None or mine is None or again.shape != mine.shape:
                continue
            deviation = again.deviation + incoming
            if not deviation < mine.deviation:
                continue
            if not (torch.all(torch.isfinite(again.centre)) and torch.all(torch.isfinite(again.radius))):
                continue
            jctx.jacobians[name] = Jac(again.centre, again.radius, deviation)
            self.improved += 1


def _nonlinear(op, node, rules: RuleContext) -> bool:
    try:
        found = op.linear_part(node, rules)
    except RULE_ERRORS:
        return True
    return isinstance(found, Barrier)


def _gains(op, node, rules: RuleContext, method: str) -> tuple[str, list[float]] | None:
    """('sum' or 'rss', one weight per variable input) from the op's certified factor of output 0
    on the ranges; None where it has none."""
    ctx = RuleContext(rules.graph, method=method, device=rules.device, ranges=rules.ranges)
    try:
        factors = op.bound_outputs(node, ctx)
    except (*RULE_ERRORS, NotImplementedError):
        return None
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
