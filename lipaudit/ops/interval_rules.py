"""Interval rules that reuse an op's own torch ``run``: the op's semantics live in one place.

* ``monotone_interval``: an op non-decreasing in each variable input, entry by entry (a selection,
  a copy, a max, a sum with non-negative weights, an increasing activation) maps the box
  [lo, hi] into [f(lo), f(hi)].
* ``bilinear_interval``: an op bilinear in two inputs plus linear terms (Gemm, MatMul, Conv with its
  weight as the second input) maps midpoints and radii to f(center) ± |f|(radii), where |f| is the
  same op on non-negative arguments (a constant weight has radius 0: center ± |W|·radius).
* ``critical_point_interval``: an elementwise op monotone between known points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import HUGE, Interval, from_center_radius, restore_infinities, stand_in
from ..invariants import present

if TYPE_CHECKING:
    from ..ir import Node
    from .context import RuleContext
    from .runtime import Runs


def env_of(ctx: RuleContext, node: Node):
    from .runtime import Env

    return Env(ctx.opset(node), torch.float64, torch.device("cpu"))


def const_tensor(array: np.ndarray) -> Tensor:
    """A constant as the executor feeds it: floats in float64, integers in int64, booleans kept."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return torch.as_tensor(np.array(array, dtype=np.float64))
    if array.dtype.kind == "b":
        return torch.as_tensor(np.array(array))
    return torch.as_tensor(np.array(array, dtype=np.int64))


def _const(ctx: RuleContext, name: str) -> np.ndarray:
    const = ctx.graph.const(name)
    if const is None:
        raise KeyError(f"'{name}' is not a constant")
    return const


def bound_tensor(bound: np.ndarray, shape: tuple[int, ...], huge: float = HUGE) -> Tensor:
    """One side of an interval as a float64 tensor of the value's shape, ±inf as ±``huge``."""
    finite = stand_in(bound)
    if huge != HUGE:
        finite = np.where(np.isinf(bound), np.copysign(huge, bound), finite)
    return torch.as_tensor(np.array(np.broadcast_to(finite, shape)), dtype=torch.float64)


def _outputs(result: Any) -> list[Tensor]:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _as_array(t: Any) -> np.ndarray | None:
    """A computed output as numpy: floats in float64, integers and booleans as they are."""
    if not isinstance(t, Tensor):
        return None
    t = t.detach().cpu()
    return t.to(torch.float64).numpy() if t.is_floating_point() else t.numpy()


def variable_shape(ctx: RuleContext, name: str) -> tuple[int, ...] | None:
    """The shape of a variable value: from its interval when that has one, else from the graph."""
    found = ctx.ranges.get(name) if ctx.ranges else None
    if found is not None and found.lo.ndim and found.lo.shape == found.hi.shape:
        return found.lo.shape
    shape = ctx.graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def endpoint_args(
    ctx: RuleContext,
    node: Node,
    pick: Callable[[int, Interval], np.ndarray],
    positions: Sequence[int] | None = None,
    huge: float = HUGE,
) -> list[Tensor | None] | None:
    """The node's arguments with each variable input replaced by ``pick(position, interval)`` (None when a
    variable input's shape is unknown). ``positions``: the inputs allowed to vary."""
    args: list[Tensor | None] = []
    for index, name in enumerate(node.inputs):
        if not name:
            args.append(None)
            continue
        const = ctx.graph.const(name)
        if const is not None:
            args.append(const_tensor(const))
            continue
        if positions is not None and index not in positions:
            return None
        shape = variable_shape(ctx, name)
        if shape is None:
            return None
        args.append(bound_tensor(pick(index, ctx.range_of(name)), shape, huge))
    return args


def run_op(op: Runs, node: Node, ctx: RuleContext, args: list[Tensor | None]) -> list[np.ndarray | None]:
    with torch.no_grad():
        return [_as_array(t) for t in _outputs(op.run(env_of(ctx, node), node, args))]


def endpoint_outputs(
    op: Runs,
    node: Node,
    ctx: RuleContext,
    *,
    decreasing: Sequence[int] = (),
    positions: Sequence[int] | None = None,
) -> tuple[list, list] | None:
    """f at the low corner and at the high corner of the box (inputs in ``decreasing`` swapped), as
    computed: None when a variable input's shape is unknown or not in ``positions``."""

    def low(position: int, interval: Interval) -> np.ndarray:
        return interval.hi if position in decreasing else interval.lo

    def high(position: int, interval: Interval) -> np.ndarray:
        return interval.lo if position in decreasing else interval.hi

    low_args = endpoint_args(ctx, node, low, positions)
    high_args = endpoint_args(ctx, node, high, positions)
    if low_args is None or high_args is None:
        return None
    ends = run_op(op, node, ctx, low_args), run_op(op, node, ctx, high_args)
    if not _unbounded_input(node, ctx, positions):
        return ends
    # ±HUGE stands in for ±inf: an output that moves when the stand-in does (a tiny slope, as in
    # PRelu(−inf) with slope 1e-300) is not f(±inf); it is unbounded in the direction it moved.
    low_alt = present(endpoint_args(ctx, node, low, positions, _ALTERNATE), "the low corner")
    high_alt = present(endpoint_args(ctx, node, high, positions, _ALTERNATE), "the high corner")
    alternates = run_op(op, node, ctx, low_alt), run_op(op, node, ctx, high_alt)
    lows, highs = (
        [_beyond_stand_in(at, alt) for at, alt in zip(found, other)] for found, other in zip(ends, alternates)
    )
    return lows, highs


# A second stand-in for ±inf, far below HUGE: outputs that agree at both are taken as f(±inf).
_ALTERNATE = HUGE * 2.0**-300


def _unbounded_input(node: Node, ctx: RuleContext, positions: Sequence[int] | None) -> bool:
    for index, name in enumerate(node.inputs):
        if name and ctx.graph.const(name) is None and (positions is None or index in positions):
            if not ctx.range_of(name).is_finite():
                return True
    return False


def _beyond_stand_in(at: np.ndarray | None, alternate: np.ndarray | None) -> np.ndarray | None:
    """``at`` (f with the inputs' ±inf as ±HUGE), ±inf where it differs from f with the smaller stand-in."""
    if at is None or alternate is None or at.shape != alternate.shape or at.dtype.kind not in "f":
        return at
    # NaN against a number: no direction, so NaN (the Interval reads it as unbounded on both sides)
    away = np.where(at > alternate, np.inf, np.where(at < alternate, -np.inf, np.nan))
    return np.where((at == alternate) | (np.isnan(at) & np.isnan(alternate)), at, away)


def monotone_interval(
    op: Runs,
    node: Node,
    ctx: RuleContext,
    *,
    decreasing: Sequence[int] = (),
    sums: bool = False,
    positions: Sequence[int] | None = None,
) -> list[Interval | None]:
    """[f(lo), f(hi)] for an op non-decreasing in each variable input (non-increasing in the inputs
    listed in ``decreasing``; an op of one input may be either). ``sums``: the op adds entries up, so
    cancellation may leave results far smaller than the terms; the margin then scales with f(|x|max).
    Integer and boolean outputs are exact, and so are those of ops ``exact_in_float``: they get no margin."""
    ends = endpoint_outputs(op, node, ctx, decreasing=decreasing, positions=positions)
    if ends is None:
        return [None] * len(node.outputs)
    lows, highs = ends
    scales: list[np.ndarray | None] = [None] * len(lows)
    if sums:
        magnitude_args = endpoint_args(ctx, node, lambda position, interval: interval.magnitude, positions)
        # The ends were computed, so every varying input's shape is known.
        scales = run_op(op, node, ctx, present(magnitude_args, "the magnitudes of the inputs"))
    results: list[Interval | None] = []
    for lo, hi, scale in zip(lows, highs, scales):
        if lo is None or hi is None or lo.shape != hi.shape:
            results.append(None)
            continue
        interval = Interval(restore_infinities(np.minimum(lo, hi)), restore_infinities(np.maximum(lo, hi)))
        if lo.dtype.kind in "biu" or getattr(op, "exact_in_float", False):
            # integers, and ops that only move, select or compare entries (computed exactly in
            # float64): no margin, so Squeeze and Transpose + Reshape leave the same range behind
            results.append(interval)
        else:
            results.append(
                interval.widened(None if scale is None else np.where(np.isfinite(scale), np.abs(scale), np.inf))
            )
    return results + [None] * (len(node.outputs) - len(results))


def _constant_pick(point: float) -> Callable[[int, Interval], np.ndarray]:
    return lambda position, interval: np.array(float(point))


def critical_point_interval(op: Runs, node: Node, ctx: RuleContext, points: Sequence[float]) -> Interval | None:
    """The range of an elementwise op of one variable input that is monotone between ``points``: the
    hull of f at both ends and at each point inside (f evaluated by the op itself)."""
    ends = endpoint_outputs(op, node, ctx, positions=(0,))
    if ends is None or ends[0][0] is None or ends[1][0] is None:
        return None
    x = ctx.range_of(node.inputs[0])
    low, high = np.minimum(ends[0][0], ends[1][0]), np.maximum(ends[0][0], ends[1][0])
    shape = low.shape
    for point in points:
        # The ends were computed, so the input's shape is known.
        at = present(endpoint_args(ctx, node, _constant_pick(point), (0,)), "the input at a critical point")
        value = present(run_op(op, node, ctx, at)[0], f"the output of {node.op_type} at a critical point")
        inside = np.broadcast_to((x.lo < point) & (x.hi > point), shape)
        low = np.where(inside, np.minimum(low, value), low)
        high = np.where(inside, np.maximum(high, value), high)
    return Interval(restore_infinities(low), restore_infinities(high)).widened()


def exact_outputs(op: Runs, node: Node, ctx: RuleContext) -> list[Interval | None]:
    """A node whose inputs are all constants: its outputs are points."""
    args = [const_tensor(_const(ctx, name)) if name else None for name in node.inputs]
    return [None if out is None else Interval.exact(out) for out in run_op(op, node, ctx, args)]


def bilinear_interval(op: Runs, node: Node, ctx: RuleContext, first: int, second: int) -> Interval | None:
    """Ranges of an op bilinear in inputs ``first`` and ``second`` plus terms linear in the others (a
    bias): y = B(a, b) + C(rest). Midpoint-radius arithmetic: with a = a_c ± a_r and b = b_c ± b_r,
    B(a, b) ∈ B(a_c, b_c) ± (|B|(|a_c|, b_r) + |B|(a_r, |b_c|) + |B|(a_r, b_r)), where |B|(·, ·) on
    non-negative arguments is |B(·, ·)| (one sign throughout); the other inputs add ± |C|(their radius).
    Any input may be a constant (radius 0)."""
    names = list(node.inputs)
    shapes: list[tuple[int, ...] | None] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for name in names:
        if not name:
            shapes.append(None)
            parts.append(None)
            continue
        const = ctx.graph.const(name)
        if const is not None and np.asarray(const).dtype.kind != "f":
            shapes.append(tuple(np.shape(const)))
            parts.append(None)  # an integer argument (a shape): passed as is
            continue
        interval = ctx.range_of(name)
        shape = tuple(np.shape(const)) if const is not None else variable_shape(ctx, name)
        if shape is None:
            return None
        full = interval.broadcast_to(shape)
        parts.append((full.center, full.radius, full.magnitude))
        shapes.append(shape)

    def call(overrides: dict[int, np.ndarray], zero_others: bool) -> np.ndarray:
        args: list[Tensor | None] = []
        for index, name in enumerate(names):
            part = parts[index]
            if part is None:
                args.append(None if not name else const_tensor(_const(ctx, name)))
            elif index in overrides:
                args.append(torch.as_tensor(np.ascontiguousarray(overrides[index]), dtype=torch.float64))
            elif zero_others and index not in (first, second):
                args.append(None)
            else:
                args.append(torch.as_tensor(np.ascontiguousarray(part[0]), dtype=torch.float64))
        return present(run_op(op, node, ctx, args)[0], f"the output of {node.op_type}")

    a_center, a_radius, a_size = present(parts[first], f"float input {first} of {node.op_type}")
    b_center, b_radius, b_size = present(parts[second], f"float input {second} of {node.op_type}")
    first_shape = present(shapes[first], f"the shape of input {first}")
    second_shape = present(shapes[second], f"the shape of input {second}")
    center = call({}, zero_others=False)
    radius = np.zeros_like(center)
    if np.any(b_radius):
        radius = radius + np.abs(call({first: np.abs(a_center), second: b_radius}, True))
    if np.any(a_radius):
        radius = radius + np.abs(call({first: a_radius, second: np.abs(b_center)}, True))
        if np.any(b_radius):
            radius = radius + np.abs(call({first: a_radius, second: b_radius}, True))
    magnitude = np.abs(call({first: a_size, second: b_size}, True))
    zeros = {first: np.zeros(first_shape), second: np.zeros(second_shape)}
    for index, part in enumerate(parts):
        if part is None or index in (first, second):
            continue
        # The linear terms alone: the bilinear part at zero, this input at |its radius| / |its size|.
        if np.any(part[1]):
            radius = radius + np.abs(
                call({**zeros, index: part[1]}, False) - call({**zeros, index: 0 * part[1]}, False)
            )
        magnitude = magnitude + np.abs(
            call({**zeros, index: part[2]}, False) - call({**zeros, index: 0 * part[2]}, False)
        )
    return from_center_radius(center, radius, magnitude)
