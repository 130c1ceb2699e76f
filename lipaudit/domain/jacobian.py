"""The interval-Jacobian (centred form) local bound: sup over the box of ‖J(x)‖₂.

On a box B with centre x0 the ℓ2 Lipschitz constant of the network on B is at most sup_{x∈B} ‖J(x)‖₂
(mean value inequality; Clarke Jacobians at kinks).  Forward mode over the n0 input directions,
every value v gets an enclosure [C_v − R_v, C_v + R_v] ∋ ∂v/∂x for every x in B (each op's
``jacobian`` rule, lipaudit.intervals.jacobian); every J in [C − R, C + R] has
‖J‖₂ ≤ ‖C‖₂ + ‖|J − C|‖₂ ≤ ‖C‖₂ + ‖R‖₂.

As it goes, each value's range is tightened to v(x0) ± Σ_i sup|∂v/∂x_i|·r_i (the centred form,
r the box's half-widths), intersected with the interval-arithmetic range: on a small box this keeps
a LayerNorm's variance, and a softmax's logits, near their values at the centre.  v(x0) is itself
an interval: interval arithmetic on the one-point box {x0} (rounding margins included).

The figure is certified like the domain mode's: the norms are certified (lipaudit.spectral), the
float64 steps carry their rounding in R, and every node that computes (not one that only moves
entries) adds FLOAT32_MARGIN (relative) for the float32 runtime (lipaudit.compose.float32_margin).
An op with no rule, a value of unknown shape, or an input with no finite box means no figure
(JacobianUnavailable), never a guess; so does a size past ``entry_limit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..compose import float32_margin
from ..intervals.interval import FLOOR, Interval, outward
from ..intervals.jacobian import Jac, JacobianContext
from ..ir import Graph
from ..ops import RuleContext, resolve
from ..spectral.dense import dense_norm
from .normal_range import flushed
from .propagate import RULE_ERRORS, intersected, value_ranges

METHOD = "interval-jacobian"
# n0 × the entries of one value: above this (128 MiB per float64 tensor) the method is skipped.
JACOBIAN_ENTRY_LIMIT = 2**24


class JacobianUnavailable(Exception):
    """The graph has something the interval-Jacobian bound cannot enclose (the message says what)."""


@dataclass
class JacobianBound:
    upper_bound: float
    outputs: dict[str, float]  # graph output -> its own figure
    directions: int  # n0: the number of input entries
    seconds: float
    enclosures: dict[str, Jac]  # graph output -> its Jacobian's enclosure (n0 first, input entries in order)
    ranges: dict[str, Interval] = field(default_factory=dict)  # every value's range, as tightened on the way
    # where the figure is a product over segments (lipaudit.domain.segments): (input cut, output cut, figure)
    segments: list[tuple[str, str, float]] = field(default_factory=list)
    # where it is the chain of the segments' centres (lipaudit.domain.telescope): (input cut, output
    # cut, ‖C‖₂, δ) of each
    chain: list[tuple[str, str, float, float]] = field(default_factory=list)


def interval_jacobian_bound(
    graph: Graph,
    bounds: Mapping[str, tuple],
    ranges: Mapping[str, Interval],
    entry_limit: int = JACOBIAN_ENTRY_LIMIT,
    at_centre: Mapping[str, Interval] | None = None,
    hooks: Forward | None = None,
    centred: bool = True,
) -> JacobianBound:
    """sup over the box ``bounds`` of ‖J‖₂, for the graph whose value ranges on that box are
    ``ranges`` (lipaudit.domain.value_ranges); ``at_centre``: enclosures of values at the box's
    centre, narrower than interval arithmetic's (lipaudit.domain.affine). Not ``centred``: no
    range is narrowed by the centred form, for ``ranges`` that hold on a part of the box only
    (``Recorded``). Raises JacobianUnavailable with the reason."""
    start = time.perf_counter()
    centres, half_widths = _box(graph, bounds)
    n0 = int(half_widths.numel())
    _check_sizes(graph, n0, entry_limit)
    points = _centre_values(graph, centres)
    if at_centre:
        points = intersected(points, at_centre)
    inputs = _input_jacobians(graph, centres, n0)
    jctx = forward(graph, ranges, points, inputs, half_widths.to(torch.float64), hooks, centred)
    return _figure(graph, jctx, n0, start)


class Forward:
    """What a pass may do around each node (the affine-form pass adds symbols, lipaudit.domain.affine)."""

    def before(self, node, jctx: JacobianContext) -> None:
        pass

    def after(self, node, jctx: JacobianContext) -> None:
        pass


def forward(
    graph: Graph,
    ranges: Mapping[str, Interval],
    points: dict[str, Interval],
    inputs: dict[str, Jac],
    half_widths: torch.Tensor,
    hooks: Forward | None = None,
    centred: bool = True,
) -> JacobianContext:
    """Every value's Jacobian enclosure along the directions of ``inputs`` (the input values'
    Jacobians, over a box of ``half_widths`` in those directions), and its range tightened
    (``jctx.rules.ranges``; by the centred form only where ``centred``). Raises
    JacobianUnavailable with the reason."""
    hooks = hooks or Forward()
    tight: dict[str, Interval] = dict(ranges)
    rules = RuleContext(graph, ranges=tight)
    jctx = Recorded(rules, points, dict(inputs), half_widths, centred=centred)
    remaining = _uses(graph)
    for node in graph.nodes:
        if not graph.variable_inputs(node):
            jctx.constants.update(name for name in node.outputs if name)
            continue
        op = resolve(node, graph.opset_of(node))
        if op is None:
            raise JacobianUnavailable(f"{node.op_type} '{node.name}' has no rule")
        hooks.before(node, jctx)
        jctx.record.clear()
        try:
            found = op.jacobian(node, jctx)
        except RULE_ERRORS as error:
            raise JacobianUnavailable(f"the rule for {node.op_type} '{node.name}' failed ({error})") from None
        if found is None:
            raise JacobianUnavailable(f"{node.op_type} '{node.name}' has no interval-Jacobian rule")
        _store(graph, node, op, found, jctx, ranges, remaining)
        hooks.after(node, jctx)
        _keep_normal(node, jctx)
        for name in set(graph.variable_inputs(node)):
            remaining[name] -= 1
            if remaining[name] <= 0 and name not in graph.outputs:
                jctx.jacobians.pop(name, None)
    return jctx


@dataclass
class Recorded(JacobianContext):
    """Keeps every range a rule narrowed (``record``, from the start of the node: a second run of the
    rule reads them back, lipaudit.domain.deviation).  Not ``centred``: no range is narrowed by the
    centred form, since v(x0) ± Σ sup|∂v/∂x_i|·r_i follows v along the segment from the centre,
    where ranges that hold on the image of a smaller set (lipaudit.domain.segments) say nothing;
    every rule then reads the ranges as given, and a Jacobian enclosure holds wherever they do."""

    centred: bool = True
    record: list[Interval] = field(default_factory=list)

    def tighten(self, point: Interval, box: Interval, jac: Jac) -> Interval:
        found = super().tighten(point, box, jac) if self.centred else box
        self.record.append(found)
        return found


def _box(graph: Graph, bounds: Mapping[str, tuple]) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Each input's centre, and the half-widths of all input entries in order (n0,)."""
    centres, halves = {}, []
    for name in graph.inputs:
        shape = graph.shape(name)
        if name not in bounds:
            raise JacobianUnavailable(f"input '{name}' has no range")
        if shape is None or any(d is None or d < 0 for d in shape):
            raise JacobianUnavailable(f"the shape of input '{name}' is unknown")
        shape = tuple(int(d) for d in shape)
        lo, hi = (np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for v in bounds[name])
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise JacobianUnavailable(f"the range of input '{name}' is not finite")
        centre = lo / 2 + hi / 2
        # rounded up, so that [centre − half, centre + half] ⊇ [lo, hi]
        half = np.nextafter(np.maximum(hi - centre, centre - lo), np.inf)
        half = np.maximum(half, FLOOR)  # a wider box, whose products stay in the normal range
        centres[name] = centre
        halves.append(half.reshape(-1))
    return centres, torch.as_tensor(np.concatenate(halves) if halves else np.zeros(0))


def _centre_values(graph: Graph, centres: dict[str, np.ndarray]) -> dict[str, Interval]:
    """An enclosure of every value at the centre: interval arithmetic on the one-point box, rounding
    margins included.  (A float64 run of the graph would be narrower, but its error has no proof.)"""
    at_centre: dict[str, tuple[Any, Any]] = {name: (c, c) for name, c in centres.items()}
    return value_ranges(graph, at_centre)


def _check_sizes(graph: Graph, n0: int, limit: int) -> None:
    for name, value in graph.values.items():
        if value.const is not None:
            continue
        shape = value.shape
        if shape is None or any(d is None or d < 0 for d in shape):
            raise JacobianUnavailable(f"the shape of '{name}' is unknown")
        if n0 * math.prod(shape) > limit:
            raise JacobianUnavailable(
                f"{n0} input entries × {math.prod(shape)} entries of '{name}' exceed {limit} (the memory cap)"
            )


def _input_jacobians(graph: Graph, centres: dict[str, np.ndarray], n0: int) -> dict[str, Jac]:
    jacobians, offset = {}, 0
    for name, centre in centres.items():
        size = centre.size
        eye = torch.zeros(n0, size, dtype=torch.float64)
        eye[offset : offset + size] = torch.eye(size, dtype=torch.float64)
        shape = (n0,) + centre.shape
        jacobians[name] = Jac(eye.reshape(shape), torch.zeros(shape, dtype=torch.float64), 0.0)
        offset += size
    return jacobians


def _uses(graph: Graph) -> dict[str, int]:
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for name in set(graph.variable_inputs(node)):
            uses[name] = uses.get(name, 0) + 1
    return uses


def _store(graph, node, op, found, jctx: JacobianContext, ranges, remaining) -> None:
    """Keep each output's Jacobian and its range, tightened: the op's interval rule on the tightened
    input ranges ∩ the first pass's range ∩ the centred form."""
    try:
        improved = op.interval(node, jctx.rules)
    except RULE_ERRORS:
        improved = [None] * len(node.outputs)
    for index, name in enumerate(node.outputs):
        if not name:
            continue
        jac = found[index] if index < len(found) else None
        if jac is None:
            if remaining.get(name, 0) or name in graph.outputs:
                raise JacobianUnavailable(f"output {index} of {node.op_type} '{node.name}' has no Jacobian rule")
            continue
        shape = tuple(int(d) for d in graph.shape(name))
        if jac.shape != shape:
            raise JacobianUnavailable(
                f"the rule for {node.op_type} '{node.name}' gave a Jacobian of shape {jac.shape}, not {shape}"
            )
        if not (torch.all(torch.isfinite(jac.centre)) and torch.all(torch.isfinite(jac.radius))):
            raise JacobianUnavailable(f"the Jacobian of {node.op_type} '{node.name}' is not finite on the box")
        jctx.jacobians[name] = jac
        box = ranges.get(name, Interval.full(shape)).broadcast_to(shape)
        better = improved[index] if index < len(improved) else None
        if better is not None and not np.any(better.lo > better.hi):
            try:
                better = better.broadcast_to(shape)
                box = Interval(np.maximum(box.lo, better.lo), np.minimum(box.hi, better.hi))
            except ValueError:
                pass
        if np.any(box.lo > box.hi):
            box = ranges.get(name, Interval.full(shape)).broadcast_to(shape)
        jctx.rules.ranges[name] = jctx.tighten(jctx.point(name), box, jac)  # type: ignore[index]


def _keep_normal(node, jctx: JacobianContext) -> None:
    """Every magnitude kept for the node's outputs is 0, within [FLOOR, CEIL] or infinite
    (lipaudit.domain.normal_range)."""
    for name in node.outputs:
        jac = jctx.jacobians.get(name) if name else None
        if jac is None:
            continue
        jctx.jacobians[name] = flushed(jac)
        for known in (jctx.rules.ranges, jctx.points):
            if known is not None and name in known:
                known[name] = outward(known[name])


def _figure(graph: Graph, jctx: JacobianContext, n0: int, start: float) -> JacobianBound:
    margin = float32_margin(graph)
    outputs: dict[str, float] = {}
    centres, radii, deviations = [], [], []
    for name in graph.outputs:
        jac = jctx.jac(name)
        if jac is None:
            centre = torch.zeros(n0, 0, dtype=torch.float64)
            radius, deviation = centre, 0.0
        else:
            centre, radius, deviation = jac.centre.reshape(n0, -1), jac.radius.reshape(n0, -1), jac.deviation
        centres.append(centre)
        radii.append(radius)
        deviations.append(deviation)
        outputs[name] = _norm_bound(centre, radius, deviation) * margin
    # the columns side by side: ‖[E₁ E₂]‖² ≤ ‖E₁‖² + ‖E₂‖²
    joint = math.sqrt(sum(d * d for d in deviations))
    network = _norm_bound(torch.cat(centres, dim=1), torch.cat(radii, dim=1), joint) * margin
    kept = {name: jac for name in graph.outputs if (jac := jctx.jac(name)) is not None}
    return JacobianBound(network, outputs, n0, time.perf_counter() - start, kept, dict(jctx.rules.ranges or {}))


def _norm_bound(centre: torch.Tensor, radius: torch.Tensor, deviation: float) -> float:
    """‖C‖₂ + min(‖R‖₂, deviation) (certified norms) bounds ‖J‖₂ for every J the enclosure holds."""
    if centre.numel() == 0:
        return 0.0
    return (dense_norm(centre).value + min(dense_norm(radius).value, deviation)) * (1 + 1e-12)
