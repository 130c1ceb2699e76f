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

from ..intervals.interval import Interval
from ..intervals.jacobian import Jac, JacobianContext
from ..linear_maps import Barrier
from ..ops import RuleContext, resolve
from .jacobian import Forward, Recorded
from .propagate import RULE_ERRORS


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
        if not isinstance(jctx, Recorded):
            return
        exact = _Replayed(
            jctx.rules, jctx.points, dict(jctx.jacobians), jctx.half_widths, set(jctx.constants), list(jctx.record)
        )
        for name in set(variables):
            jac = exact.jacobians[name]
            exact.jacobians[name] = Jac(jac.centre, torch.zeros_like(jac.radius), 0.0)
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
            if not deviation < mine.deviation or not torch.equal(again.centre, mine.centre):
                continue
            jctx.jacobians[name] = Jac(mine.centre, mine.radius, deviation)
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
