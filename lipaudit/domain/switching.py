"""The switching bound: sup over the box of ‖J(x)‖₂ where a few activation entries can change slope.

Around a real input most entries of a ReLU network keep their slope over a small box; the few whose
input range straddles a kink (the switching entries S) are what the interval-Jacobian bound pays
for: it carries each one's slope as [0, 1] through every later layer, and ‖C‖ + ‖R‖ adds the
spread to the norm instead of asking how large the norm of any one Jacobian gets.

Fix every entry of S at the low end d0 of its slope range and give each a direction of its own: an
injection added right after the activation.  One forward pass over the n0 input directions and
the K = |S| injections (lipaudit.domain.jacobian's engine, the ops' own ``jacobian`` rules) gives
enclosures of J0 (input → output), A (injection → output), B (input → S's pre-activations) and M
(injection → S's pre-activations, zero unless the injection comes first), all with every other
slope anywhere in its range on the box.  Where S's slopes are d0 + δ the Jacobian is exactly

    J = J0 + A Δ (I − M Δ)⁻¹ B,      Δ = diag(δ)

(the changed slopes are injections δ_j·u_j of the pre-activations u = B + M Δ u; M Δ is nilpotent).
J is affine in each δ_j separately and ‖·‖₂ is convex, so the sup over δ in the slopes' ranges is
taken at a vertex.  Branch and bound over boxes of δ (``_vertex_sup``): entries not yet fixed at an
end of their range stay intervals [0, width] in the same midpoint–radius arithmetic, and so do the
enclosures' radii.  The figure is the largest ‖C‖₂ + ‖R‖₂ (float64 SVDs with the project's margin)
over the boxes left, with the same float32 margin per node as the interval-Jacobian bound.

A vertex is an activation pattern, and many are reached by no input of the box (two entries whose
pre-activations move together cannot sit on opposite sides of their kinks): a box that sets a pair
of switches that way is dropped (feasible.py proves each such pair out of reach).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..compose import float32_margin
from ..intervals.interval import Interval
from ..intervals.jacobian import STEP_ROUNDING, UNIT, Jac, JacobianContext
from ..ir import Graph
from ..ops import resolve
from ..ops.activation import Activation
from ..spectral.dense import SVD_MARGIN
from .feasible import conflicts, gradient_enclosure, reachable
from .jacobian import (
    JACOBIAN_ENTRY_LIMIT,
    Forward,
    JacobianUnavailable,
    _box,
    _centre_values,
    _check_sizes,
    _input_jacobians,
    forward,
)
from .midpoint_radius import product, times_slope
from .normal_range import tiny_entries

METHOD = "switching-vertices"
# A slope range narrower than this (relative to the slope's size) stays an interval in the pass.
WIDE = 1e-2
MAX_SWITCHING = 256  # injection directions at most (each one more direction of the forward pass)
VERTEX_WORK = 1e10  # floating-point operations for the boxes of slopes: fewer where each costs more
MAX_BOXES = 2**17
TOLERANCE = 1e-3  # stop splitting once no box is above the best centre's norm by more than this
CHUNK = 1024
ENTRY_CAP = 2**22  # boxes × n0 × outputs per chunk (32 MiB of float64)


@dataclass(frozen=True)
class SwitchingBound:
    figure: float  # certified sup of ‖J‖₂ over the box, all outputs side by side
    entries: int  # K: the activation entries given a slope of their own
    boxes: int  # the boxes of their slopes measured (branch and bound)
    # every switching entry and window had a slope of its own, and the branch and bound left no box
    # above the best vertex by more than TOLERANCE (the work budget did not cut it): the figure is
    # then within that of the largest norm over the patterns that pass the pair tests
    converged: bool = True


@dataclass
class _Entries:
    """The switching entries of one node.  An activation: entry ``index`` of the output is the
    slope (low + δ, δ in [0, width]) times the same entry of the input (``source``).  A MaxPool:
    output entry ``index`` is input entry ``base`` + δ·(input ``source`` − input ``base``), δ in
    {0, 1} for each other candidate of its window (the output is one of them, so a vertex)."""

    node: str
    pre: str  # the value the switches read (the node's input)
    index: np.ndarray
    low: np.ndarray
    width: np.ndarray
    source: np.ndarray
    signs: np.ndarray  # (len, 2): σ with σ·z ≥ 0 where δ = 0 and where δ is full; 0: no constraint
    base: np.ndarray | None = None


def switching_bound(
    graph: Graph,
    bounds: Mapping[str, tuple],
    ranges: Mapping[str, Interval],
    entry_limit: int = JACOBIAN_ENTRY_LIMIT,
) -> SwitchingBound | None:
    """A certified bound on sup over the box ``bounds`` of ‖J‖₂ (all outputs side by side), for a graph
    whose value ranges on it are ``ranges`` (sound ranges, e.g. the interval-Jacobian pass's); None
    where no entry switches (the interval-Jacobian bound is then the same) or the engine has no rule."""
    computed = [*graph.inputs, *(name for node in graph.nodes for name in node.outputs if name)]
    if any(name not in ranges and not graph.is_const(name) for name in computed):
        # a value without a sound range would be tightened by the hybrid Jacobians (values a rewrite
        # left without a producer are computed by nothing)
        return None
    chosen, complete = _switching_entries(graph, ranges)
    count = sum(len(e.index) for e in chosen)
    if count == 0:
        return None
    centres, half_widths = _box(graph, bounds)
    n0 = int(half_widths.numel())
    _check_sizes(graph, n0 + count, entry_limit)
    inputs = {name: _padded(jac, count) for name, jac in _input_jacobians(graph, centres, n0).items()}
    hooks = _Injections(chosen, n0, ranges)
    widths = torch.cat([half_widths.to(torch.float64), torch.zeros(count, dtype=torch.float64)])
    at_centre = _centre_values(graph, centres)
    # Not centred: the pass's Jacobians pin each switch at its low slope, so v(x0) ± Σ|∂v/∂x|·r
    # read from them leaves out the switches' own motion, and a rule's inner ranges (a LayerNorm's
    # variance behind a ReLU at its kink) narrowed that way missed values the box reaches (redteam6:
    # certified 0.645 where two inputs show 272.7). The rules read the sound ranges as given.
    jctx = forward(graph, ranges, at_centre, inputs, widths, hooks, centred=False)
    out_c, out_r = [], []
    for name in graph.outputs:
        jac = jctx.jac(name)
        if jac is None:
            continue
        out_c.append(jac.centre.reshape(n0 + count, -1))
        out_r.append(jac.radius.reshape(n0 + count, -1))
    if not out_c:
        return SwitchingBound(0.0, count, 0, True)
    c, r = torch.cat(out_c, dim=1), torch.cat(out_r, dim=1)
    rows_c, rows_r = torch.cat(hooks.rows_c, dim=1), torch.cat(hooks.rows_r, dim=1)
    width = torch.as_tensor(np.concatenate([e.width for e in chosen]))
    j0, a = (c[:n0], r[:n0]), (c[n0:], r[n0:])
    b, m = (rows_c[:n0], rows_r[:n0]), (rows_c[n0:], rows_r[n0:])
    live = _live(a, b, m)
    gradient = gradient_enclosure(b, m, width)
    lo, hi = _pre_activations_at_centre(chosen, at_centre)
    signs = torch.as_tensor(np.concatenate([e.signs for e in chosen]))
    conflict = conflicts(
        (gradient[0][:, live], gradient[1][:, live]),
        (lo[live], hi[live]),
        signs[live],
        half_widths.to(torch.float64),
        _influence(a[0][live], b[0][:, live], width[live]),
    )
    figure, boxes, converged = _vertex_sup(
        j0,
        (a[0][live], a[1][live]),
        (b[0][:, live], b[1][:, live]),
        (m[0][live][:, live], m[1][live][:, live]),
        width[live],
        _groups(chosen)[live],
        conflict,
    )
    figure *= float32_margin(graph)
    return SwitchingBound(figure, count, boxes, converged and complete)


def _switching_entries(graph: Graph, ranges: Mapping[str, Interval]) -> tuple[list[_Entries], bool]:
    """Every activation entry whose slope range on ``ranges`` is wide (widest first, then in graph
    order), then MaxPool windows with more than one candidate, up to MAX_SWITCHING in all; those
    left out keep their enclosures in the pass (sound, only wider).  Also whether none was left out."""
    from ..ops.context import RuleContext
    from ..ops.pooling import MaxPool

    rules = RuleContext(graph, ranges=dict(ranges))
    found: list[tuple[float, int, str, int, float, float, float]] = []
    windows: list[tuple[int, str, list[list[tuple[int, int, int]]]]] = []
    for position, node in enumerate(graph.nodes):
        op = resolve(node, graph.opset_of(node))
        shape = graph.shape(node.inputs[0]) if node.inputs else None
        if shape is None or graph.variable_inputs(node) != [node.inputs[0]]:
            continue
        shape = tuple(int(d) for d in shape)
        x = ranges[node.inputs[0]].broadcast_to(shape)
        if isinstance(op, MaxPool) and not any(node.outputs[1:]):
            windows.append((position, node.name, _pool_switches(op, node, shape, x)))
            continue
        if not isinstance(op, Activation):
            continue
        slopes = op.derivative_range(node, rules, x)
        if slopes is None:
            continue
        lo = np.broadcast_to(slopes.lo, x.shape).reshape(-1)
        hi = np.broadcast_to(slopes.hi, x.shape).reshape(-1)
        size = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1e-300)
        wide = np.flatnonzero(np.isfinite(lo) & np.isfinite(hi) & (hi - lo > WIDE * size))
        full_side = _full_side(op, node, rules, shape, hi)
        found.extend(
            (float(hi[i] - lo[i]), position, node.name, int(i), float(lo[i]), float(hi[i]), float(full_side[i]))
            for i in wide
        )
    found.sort(key=lambda f: (-f[0], f[1], f[3]))
    kept = found[:MAX_SWITCHING]
    per_node: dict[str, _Entries] = {}
    nodes = {node.name: node for node in graph.nodes}
    for name, group in itertools.groupby(sorted(kept, key=lambda f: (f[1], f[3])), key=lambda f: f[2]):
        items = list(group)
        index = np.array([f[3] for f in items])
        low, width = np.array([f[4] for f in items]), np.array([f[5] - f[4] for f in items])
        side = np.array([f[6] for f in items])
        pre = nodes[name].inputs[0]
        per_node[name] = _Entries(name, pre, index, low, width, index, np.stack([-side, side], axis=1))
    room = MAX_SWITCHING - len(kept)
    complete = len(kept) == len(found)
    for _, name, found_windows in windows:
        switches = []
        for window in found_windows:  # whole windows, in order, while they fit
            if len(window) > room:
                complete = False
                break
            switches.extend(window)
            room -= len(window)
        if switches:
            out, source, base = (np.array(column) for column in zip(*switches))
            taken = np.tile([0.0, 1.0], (len(out), 1))  # a candidate taken is ≥ its base; one not taken asks nothing
            per_node[name] = _Entries(
                name, nodes[name].inputs[0], out, np.zeros(len(out)), np.ones(len(out)), source, taken, base
            )
    order = {node.name: position for position, node in enumerate(graph.nodes)}
    return sorted(per_node.values(), key=lambda e: order[e.node]), complete


def _full_side(op, node, rules, shape: tuple[int, ...], high: np.ndarray) -> np.ndarray:
    """Per entry, σ with σ·z ≥ 0 wherever the slope is the high end of its range: +1 where that is
    the slope above the kink at 0, −1 where it is the one below; 0 (no constraint) for ops whose
    kinks or curvature are elsewhere."""
    from ..ops.activation import Abs, Relu
    from ..ops.activation_piecewise import LeakyRelu, PRelu

    if not isinstance(op, (Relu, LeakyRelu, PRelu, Abs)):
        return np.zeros(high.shape)
    ones = np.ones(shape)
    right, left = (op.derivative_range(node, rules, Interval.exact(side * ones)) for side in (1.0, -1.0))
    if right is None or left is None:
        return np.zeros(high.shape)
    above = np.broadcast_to(right.lo, shape).reshape(-1)
    below = np.broadcast_to(left.lo, shape).reshape(-1)
    return np.where(above == below, 0.0, np.where(high == above, 1.0, np.where(high == below, -1.0, 0.0)))


def _pool_switches(op, node, shape: tuple[int, ...], x: Interval) -> list[list[tuple[int, int, int]]]:
    """Per window with several candidates on the box, (output entry, candidate input entry, base
    input entry) for each: the base is its first candidate, each other one a switch.  A candidate
    that is the same constant as its base on the box (ReLU outputs always off, tied at 0) changes
    nothing whichever is taken, and is left out."""
    index, may = op.candidates(node, shape, x)
    index = torch.stack(index).reshape(len(index), -1)
    may = torch.stack(may).reshape(len(may), -1)
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    windows: list[list[tuple[int, int, int]]] = []
    for out in torch.nonzero(may.sum(dim=0) > 1).flatten().tolist():
        offsets = torch.nonzero(may[:, out]).flatten().tolist()
        base = int(index[offsets[0], out])
        candidates = (int(index[k, out]) for k in offsets[1:])
        constant = lo[base] == hi[base]
        window = [(out, c, base) for c in candidates if not (constant and lo[c] == hi[c] == lo[base])]
        if window:
            windows.append(window)
    return windows


def _pre_activations_at_centre(chosen: list[_Entries], at_centre: Mapping[str, Interval]) -> tuple[Tensor, Tensor]:
    """An enclosure (lo, hi) of every switch's z at the centre: its activation's input entry, or its
    MaxPool candidate minus the window's base (with that subtraction's rounding)."""
    lows, highs = [], []
    for e in chosen:
        value = at_centre[e.pre]
        lo, hi = value.lo.reshape(-1), value.hi.reshape(-1)
        if e.base is None:
            lows.append(lo[e.source])
            highs.append(hi[e.source])
            continue
        low, high = lo[e.source] - hi[e.base], hi[e.source] - lo[e.base]
        slack = 2 * UNIT * (np.abs(low) + np.abs(high))
        lows.append(low - slack)
        highs.append(high + slack)
    return torch.as_tensor(np.concatenate(lows)), torch.as_tensor(np.concatenate(highs))


def _live(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor], m: tuple[Tensor, Tensor]) -> Tensor:
    """The switches that can move the output: a switch whose pre-activation is exactly 0 along
    every direction (B's column and M's, centre and radius), or whose injection reaches neither
    the output nor another switch (A's row and M's), changes J by exactly 0 at every slope."""

    def zero(t: tuple[Tensor, Tensor], dim: int) -> Tensor:
        return (t[0].abs() + t[1]).sum(dim=dim) == 0

    idle = (zero(b, 0) & zero(m, 0)) | (zero(a, 1) & zero(m, 1))
    return torch.nonzero(~idle).flatten()


def _groups(chosen: list[_Entries]) -> Tensor:
    """An id per switch: a MaxPool window's switches share one (its output takes at most one of
    them), every activation entry has its own."""
    ids: list[int] = []
    for e in chosen:
        if e.base is None:
            ids.extend(range(len(ids), len(ids) + len(e.index)))
            continue
        first: dict[int, int] = {}
        for out in e.index.tolist():
            ids.append(first.setdefault(out, len(ids)))
    return torch.tensor(ids, dtype=torch.long)


def _padded(jac: Jac, extra: int) -> Jac:
    """The input's Jacobian with ``extra`` zero directions after its n0 (the injections')."""
    zeros = torch.zeros((extra,) + jac.shape, dtype=torch.float64)
    return Jac(torch.cat([jac.centre, zeros]), torch.cat([jac.radius, zeros]), jac.deviation)


class _Injections(Forward):
    """Records S's pre-activation rows, fixes S's slopes at their low end and injects a unit along
    each entry's own direction; keeps every value's range at the sound one given (the hybrid
    Jacobians are not the network's, so they must not tighten a range)."""

    def __init__(self, chosen: list[_Entries], n0: int, ranges: Mapping[str, Interval]) -> None:
        self.by_node = {e.node: e for e in chosen}
        self.offset: dict[str, int] = {}
        start = n0
        for e in chosen:
            self.offset[e.node] = start
            start += len(e.index)
        self.ranges = ranges
        self.rows_c: list[Tensor] = []
        self.rows_r: list[Tensor] = []

    def before(self, node, jctx: JacobianContext) -> None:
        entries = self.by_node.get(node.name)
        if entries is None:
            return
        x = jctx.jac(node.inputs[0])
        assert x is not None
        centre = x.centre.reshape(x.directions, -1)
        radius = x.radius.reshape(x.directions, -1)
        source = torch.as_tensor(entries.source)
        row_c, row_r = centre[:, source], radius[:, source]
        if entries.base is not None:  # a MaxPool's switch reads the difference from its window's base
            base = torch.as_tensor(entries.base)
            row_c = row_c - centre[:, base]
            row_r = row_r + radius[:, base] + 2 * UNIT * (row_c.abs() + centre[:, base].abs())
        self.rows_c.append(row_c.clone())
        self.rows_r.append(row_r.clone())

    def after(self, node, jctx: JacobianContext) -> None:
        for name in node.outputs:
            if name and name in self.ranges:
                jctx.rules.ranges[name] = self.ranges[name]  # type: ignore[index]
        entries = self.by_node.get(node.name)
        if entries is None:
            return
        x = jctx.jac(node.inputs[0])
        out = jctx.jac(node.outputs[0])
        assert x is not None and out is not None
        index = torch.as_tensor(entries.index)
        centre = out.centre.reshape(out.directions, -1).clone()
        radius = out.radius.reshape(out.directions, -1).clone()
        taken = torch.as_tensor(entries.source if entries.base is None else entries.base)
        # the slope's low end on an activation entry; a MaxPool output starts as its base, whole
        low = torch.as_tensor(entries.low if entries.base is None else np.ones(len(entries.index)))
        x_c = x.centre.reshape(x.directions, -1)[:, taken]
        x_r = x.radius.reshape(x.directions, -1)[:, taken]
        centre[:, index] = low * x_c
        radius[:, index] = low.abs() * x_r + STEP_ROUNDING * (low.abs() * (x_c.abs() + x_r))
        directions = torch.arange(len(index)) + self.offset[node.name]
        centre[directions, index] += 1.0
        shape = (out.directions,) + out.shape
        jctx.jacobians[node.outputs[0]] = Jac(centre.reshape(shape), radius.reshape(shape), math.inf)


def _vertex_sup(
    j0: tuple[Tensor, Tensor],
    a: tuple[Tensor, Tensor],
    b: tuple[Tensor, Tensor],
    m: tuple[Tensor, Tensor],
    width: Tensor,
    groups: Tensor,
    conflict: Tensor,
) -> tuple[float, int, bool]:
    """(max over δ of sup ‖J(δ)‖₂, the boxes of δ measured, whether the tolerance rather than the
    work budget ended it), by branch and bound.

    Every matrix here is transposed, directions first (J0ᵀ n0 × m, Aᵀ K × m, Bᵀ n0 × K, Mᵀ K × K):
    Jᵀ = J0ᵀ + Bᵀ W with W = (I − ΔMᵀ)⁻¹ΔAᵀ, i.e. W = Δ(Aᵀ + MᵀW), whose row j reads only the rows
    after it (Mᵀ[j, i] ≠ 0 only where injection j comes before entry i).

    A box fixes some entries at an end of their slope range and leaves the rest intervals; its
    upper bound is ‖C‖ + ‖R‖ of the enclosure, and ‖C‖ is about what one of its vertices reaches.
    The boxes with the highest upper bounds are split on their first free entry in a fixed order
    (most influential first) until none is above the best ‖C‖ by more than TOLERANCE, or the work
    (VERTEX_WORK, counted in operations, never in time) is spent.  Fixing a MaxPool switch at 1
    fixes the other switches of its window at 0 (the output takes one candidate).  A child whose
    new setting ``conflict`` proves out of reach beside another of its settings is dropped.  The
    figure is the highest upper bound among the boxes left: every pattern reached in the box lies
    in one of them."""
    k = int(width.numel())
    n0, outputs = j0[0].shape
    # the rows of W (four K × m products each, centre and radius), Bᵀ·W likewise, and the two SVDs
    per_box = 4 * k * k * outputs + 4 * n0 * k * outputs + 2 * n0 * outputs * outputs
    allowed = max(1, min(MAX_BOXES, int(VERTEX_WORK / max(1, per_box))))
    chunk = max(2, min(CHUNK, ENTRY_CAP // max(1, n0 * outputs)))
    order = torch.argsort(-_influence(a[0], b[0], width), stable=True)

    def measure(fixed: Tensor) -> tuple[Tensor, Tensor]:
        free = fixed < 0
        delta_c = torch.where(free, width / 2, fixed.to(torch.float64) * width)
        delta_r = torch.where(free, width / 2, torch.zeros_like(width))
        uppers, centres = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.float64)]
        for start in range(0, len(fixed), chunk):
            upper, centre = _chunk_sup(j0, a, b, m, delta_c[start : start + chunk], delta_r[start : start + chunk])
            uppers.append(upper)
            centres.append(centre)
        return torch.cat(uppers), torch.cat(centres)

    # A box's centre is a convex combination of its vertices, so its norm is at most what the vertices
    # reach, unless one of its free entries can be pruned: then the centre is no measure of the best.
    pruned = conflict.reshape(k, 4 * k).any(dim=1)

    def best_of(boxes: Tensor, centres: Tensor) -> float:
        counted = ~((boxes < 0) & pruned).any(dim=1)
        return float(centres[counted].max()) if bool(counted.any()) else 0.0

    fixed = torch.full((1, k), -1, dtype=torch.int8)
    upper, centre = measure(fixed)
    best, measured = best_of(fixed, centre), 1
    converged = False
    while measured < allowed:
        free_in_order = fixed[:, order] < 0
        open_ = (upper > best * (1 + TOLERANCE)) & free_in_order.any(dim=1)
        if not bool(open_.any()) or float(upper.max()) <= best * (1 + TOLERANCE):
            converged = float(upper.max()) <= best * (1 + TOLERANCE)
            break
        candidates = torch.nonzero(open_).flatten()
        take = min(len(candidates), max(1, (allowed - measured) // 2), chunk // 2)
        ranked = candidates[torch.argsort(-upper[candidates], stable=True)[:take]]
        parents = fixed[ranked]
        children = torch.cat([parents, parents])
        rows = torch.arange(len(children))
        first_free = free_in_order[ranked].to(torch.int8).argmax(dim=1)  # argmax: the first maximum
        split = order[torch.cat([first_free, first_free])]
        ones = torch.cat([torch.zeros(take, dtype=torch.bool), torch.ones(take, dtype=torch.bool)])
        # a window's other switches go to 0 where one of them is taken (they are still free there)
        same = (groups[None, :] == groups[split][:, None]) & ones[:, None]
        children[same] = 0
        children[rows, split] = ones.to(torch.int8)
        children = children[reachable(conflict, children, split, ones)]
        keep = torch.ones(len(fixed), dtype=torch.bool)
        keep[ranked] = False
        if len(children) == 0 and not bool(keep.any()):
            break  # the centre's own pattern is always reachable: this is rounding, keep the boxes
        child_upper, child_centre = measure(children)
        measured += len(children)
        best = max(best, best_of(children, child_centre))
        fixed = torch.cat([fixed[keep], children])
        upper = torch.cat([upper[keep], child_upper])
    return float(upper.max()), measured, converged


def _influence(a_centre: Tensor, b_centre: Tensor, width: Tensor) -> Tensor:
    """How far each switch can move J: its slope's width × ‖B_j‖ × ‖A_j‖ (centres)."""
    return width * torch.linalg.vector_norm(b_centre, dim=0) * torch.linalg.vector_norm(a_centre, dim=1)


def _chunk_sup(j0, a, b, m, delta_c: Tensor, delta_r: Tensor) -> tuple[Tensor, Tensor]:
    """For a batch of δ boxes (V, K): the sup of ‖J(δ)‖₂ over each, and the norm of its centre."""
    v, k = delta_c.shape
    outputs = a[0].shape[1]
    w_c = torch.zeros(v, k, outputs, dtype=torch.float64)
    w_r = torch.zeros(v, k, outputs, dtype=torch.float64)
    for j in range(k - 1, -1, -1):
        inner = product((m[0][j : j + 1, j + 1 :], m[1][j : j + 1, j + 1 :]), (w_c[:, j + 1 :], w_r[:, j + 1 :]))
        row_c = a[0][j : j + 1] + inner[0]
        row_r = a[1][j : j + 1] + inner[1] + 2 * UNIT * (a[0][j : j + 1].abs() + inner[0].abs())
        scaled = times_slope(row_c, row_r, delta_c[:, j, None, None], delta_r[:, j, None, None])
        _in_normal_range(*scaled)  # the next switch multiplies these again
        w_c[:, j : j + 1], w_r[:, j : j + 1] = scaled
    change_c, change_r = product(b, (w_c, w_r))
    j_c = j0[0] + change_c
    j_r = j0[1] + change_r + 2 * UNIT * (j0[0].abs() + change_c.abs())
    _in_normal_range(j_c, j_r)
    sigma = torch.linalg.svdvals(j_c)[:, 0]
    # R ≥ 0 and |J − C| ≤ R entry by entry, so ‖J − C‖₂ ≤ ‖R‖₂ (the norm is monotone on such matrices)
    spread = torch.linalg.svdvals(j_r)[:, 0]
    return (sigma + spread) * SVD_MARGIN, sigma


def _in_normal_range(*tensors: Tensor) -> None:
    """Raises JacobianUnavailable where a chain of products left float64's normal range (an entry
    below lipaudit.domain.normal_range.FLOOR, whose next product could round to 0, or past the
    largest float)."""
    for tensor in tensors:
        if tiny_entries(tensor) or not bool(torch.all(torch.isfinite(tensor))):
            raise JacobianUnavailable("the switching bound's products leave float64's normal range")


__all__ = ["METHOD", "SwitchingBound", "switching_bound"]
