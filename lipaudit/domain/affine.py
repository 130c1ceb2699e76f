"""Value ranges from affine forms (zonotopes, in the manner of DeepZ and DeepT): tighter than the
centred form where the network mixes its values again after a nonlinearity (the residual stream).

Every value v is described over noise symbols e ∈ [−1, 1]^k shared by all values: for each input x
of the box there is one e(x) with

    v(x) − v(x0) = M e(x)   for some M in [C − R, C + R]     (C, R: a ``Jac`` along the k symbols).

The first n0 symbols are the input's own, e_i = (x_i − x0_i)/r_i (so the input's C is diag(r)).  An
op f maps this on: f(v(x)) − f(v(x0)) = J̄ (v(x) − v(x0)) with J̄ the mean of f's Jacobian on the
segment [v(x0), v(x)], which lies in the value's range (both ends are values on the box, the range a
box), so J̄ M lies in what the op's ``jacobian`` rule gives for [C ± R] — the same rules as the
interval-Jacobian bound, with the generators in place of the input's Jacobian.  Where the rule
leaves a radius R′ (a nonlinearity: the spread of its derivative on the range), that entry gets a
fresh symbol of size Σ_k R′_k (row sums, rounded up): (J̄ M − C′) e(x) is, entry by entry, at most
that in magnitude, and naming it a symbol of its own keeps its sign through every later linear map
(a residual sum, a LayerNorm's centring), where a radius would only grow by |A|.

The range of v is then its value at the centre (an interval: interval arithmetic on the point)
± Σ_k (|C_k| + R_k), intersected with what the box's interval arithmetic gives: ``JacobianContext.
tighten`` with every symbol's half-width 1.  The rules' own inner ranges (a LayerNorm's variance,
attention's scores) are tightened the same way.

The number of symbols is capped (``entry_limit`` for symbols × a value's entries): past it an entry
keeps its radius, which is only less tight.  Everything is deterministic (no sampling, no timing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..intervals.interval import Interval
from ..intervals.jacobian import UNIT, Jac, JacobianContext
from ..ir import Graph
from ..ops import RuleContext, resolve
from .jacobian import (
    JACOBIAN_ENTRY_LIMIT,
    Forward,
    JacobianUnavailable,
    _box,
    _check_sizes,
    _input_jacobians,
    forward,
)
from .propagate import RULE_ERRORS, intersected


def affine_ranges(
    graph: Graph,
    bounds: Mapping[str, tuple],
    ranges: Mapping[str, Interval],
    entry_limit: int = JACOBIAN_ENTRY_LIMIT,
) -> AffineRanges:
    """Every value's range on the box ``bounds``, from affine forms, each within its range in
    ``ranges`` (interval arithmetic on the box); and an enclosure of every value at the box's
    centre. Raises JacobianUnavailable with the reason (an op with no rule, the symbols' cap)."""
    centres, half_widths = _box(graph, bounds)
    n0 = int(half_widths.numel())
    _check_sizes(graph, n0, entry_limit)
    inputs = {}
    for name, jac in _input_jacobians(graph, centres, n0).items():
        scale = half_widths.to(torch.float64).reshape((n0,) + (1,) * len(jac.shape))
        inputs[name] = Jac(jac.centre * scale, jac.radius, 0.0)  # diag(r): exact, r·1 and r·0
    largest = max((math.prod(v.shape or ()) for v in graph.values.values() if v.const is None), default=1)
    symbols = _FreshSymbols(n0, max(n0, entry_limit // max(1, largest)), dict(centres))
    jctx = forward(graph, ranges, {}, inputs, torch.ones(n0, dtype=torch.float64), symbols)
    return AffineRanges(dict(jctx.rules.ranges or {}), symbols.at_centre)


@dataclass
class AffineRanges:
    ranges: dict[str, Interval]  # every value's range on the box
    at_centre: dict[str, Interval]  # every value's enclosure at the box's centre x0


class _FreshSymbols(Forward):
    """Keeps each value's centre c_v (float64, the reference point of its form); before each node,
    pads its inputs' Jacobians to the symbols so far and encloses f(c) (the op's interval rule on the
    one-point boxes of its inputs' centres); after it, turns the radius its outputs get, and the
    width of that enclosure, into fresh symbols (while under ``limit`` symbols)."""

    def __init__(self, count: int, limit: int, centres: dict[str, np.ndarray]) -> None:
        self.inputs = count
        self.count = count
        self.limit = limit
        self.centres = centres
        self.at_centre: dict[str, Interval] = {name: Interval(c, c) for name, c in centres.items()}

    def before(self, node, jctx: JacobianContext) -> None:
        graph = jctx.rules.graph
        variables = graph.variable_inputs(node)
        degenerate = {}
        for name in set(variables):
            jac = jctx.jacobians.get(name)
            if jac is not None and jac.directions < self.count:
                jctx.jacobians[name] = _padded(jac, self.count)
            centre = self.centres.get(name)
            if centre is None:
                continue  # a value that does not vary: the rules read it as a constant
            degenerate[name] = Interval(centre, centre)
            jctx.points[name] = degenerate[name]
            # the segment from c to v(x) must lie in the range the rule reads: c joins it
            box = jctx.rules.range_of(name)
            jctx.rules.ranges[name] = Interval(np.minimum(box.lo, centre), np.maximum(box.hi, centre))  # type: ignore[index]
        if jctx.directions != self.count:
            jctx.half_widths = torch.ones(self.count, dtype=torch.float64)
        at_centres = RuleContext(graph, ranges={**(jctx.rules.ranges or {}), **degenerate})
        for name, found in zip(node.outputs, _at(node, at_centres)):
            if name:
                jctx.points[name] = found if found is not None else Interval.full(graph.shape(name))

    def after(self, node, jctx: JacobianContext) -> None:
        for name in node.outputs:
            jac = jctx.jacobians.get(name) if name else None
            if jac is None:
                continue
            if jac.directions != self.count:
                raise JacobianUnavailable(f"'{name}' has {jac.directions} symbols, not {self.count}")
            point = jctx.point(name).broadcast_to(jac.shape)
            if not point.is_finite():
                raise JacobianUnavailable(f"no finite enclosure of '{name}' at the centre")
            centre = point.lo / 2 + point.hi / 2
            # |f(c) − centre| ≤ offset, rounded up
            offset = np.nextafter(np.maximum(point.hi - centre, centre - point.lo), np.inf)
            k = jac.directions
            # Σ_k R_k + offset, rounded up: a float64 sum of k non-negative terms is within (k + 2)·2⁻⁵³
            size = (jac.radius.sum(dim=0) + torch.as_tensor(offset)) * (1 + (k + 3) * UNIT)
            chosen = size > 0
            fresh = int(chosen.sum())
            if self.count + fresh > self.limit:
                raise JacobianUnavailable(f"more than {self.limit} symbols (the memory cap)")
            where = torch.flatten(torch.nonzero(chosen.reshape(-1)))
            rows = torch.zeros(fresh, size.numel(), dtype=torch.float64)
            rows[torch.arange(fresh), where] = size.reshape(-1)[where]
            centre_gens = torch.cat([jac.centre, rows.reshape((fresh,) + jac.shape)])
            jctx.jacobians[name] = Jac(centre_gens, torch.zeros_like(centre_gens), 0.0)
            self.count += fresh
            self.centres[name] = centre
            # at x0 the input's symbols are 0: v(x0) ∈ c ± Σ over the other symbols
            rest = centre_gens[self.inputs :].abs().sum(dim=0).numpy() * (1 + (k + 3) * UNIT)
            rest = np.nextafter(rest, np.inf)
            self.at_centre[name] = Interval(centre - rest, centre + rest).widened()
        jctx.half_widths = torch.ones(self.count, dtype=torch.float64)


def _at(node, ctx: RuleContext) -> list[Interval | None]:
    """The op's interval rule on ``ctx``'s ranges (None where it has nothing to say)."""
    op = resolve(node, ctx.opset(node))
    if op is None:
        return [None] * len(node.outputs)
    try:
        found = op.interval(node, ctx)
    except RULE_ERRORS:
        return [None] * len(node.outputs)
    out: list[Interval | None] = []
    for interval in found:
        if interval is not None and np.any(interval.lo > interval.hi):
            interval = None
        out.append(interval)
    return out + [None] * (len(node.outputs) - len(out))


def _padded(jac: Jac, count: int) -> Jac:
    """The same Jacobian along ``count`` symbols: the later ones do not move it."""
    extra = (count - jac.directions,) + jac.shape
    zeros = torch.zeros(extra, dtype=torch.float64)
    return Jac(torch.cat([jac.centre, zeros]), torch.cat([jac.radius, zeros]), jac.deviation)


__all__ = ["JacobianUnavailable", "affine_ranges", "intersected"]
