"""Per-neuron slope ranges on a bounded domain: each activation entry's own [α_i, β_i].

On a box of inputs every pre-activation entry lies in a known interval [lo_i, hi_i] (the value
ranges of lipaudit.domain).  There the activation's difference quotients lie in a range of its
own, usually far narrower than the op's global ``slope_range``:

  ReLU           lo_i ≥ 0: always on, slope 1; hi_i ≤ 0: always off, slope 0; otherwise [0, 1];
  LeakyReLU      the same with the slopes {alpha, 1};
  bell-shaped    (Tanh, Sigmoid, Erf, Atan, Asinh, Softsign) f' is even and falls with |x|: it
                 lies in [f'(max |x|), f'(min |x|)] on the interval;
  Softplus       f' = σ rises: [σ(lo_i), σ(hi_i)];
  smooth         (GELU, SiLU, Mish: a SmoothProfile) f' is monotone between its critical points:
                 its extremes on the interval are at the ends or at the critical points inside;
  anything else  the op's sup |f'| on the interval (``domain_slopes``, the rules' own figure) s_i
                 clips the global range: [max(α, −s_i), min(β, s_i)].

Each figure is intersected with the global range and rounded outwards (a relative and an absolute
margin on every f' evaluated in float64), so every difference quotient of the entry on its
interval lies in [α_i, β_i]: the recursion may then split the activation per neuron (from_graph.py).

``neuron_slope_ranges`` is the one interface: the recursion and any other network bound (the
semidefinite program) read the same arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..intervals.interval import Interval
from ..ir import Graph, Node
from ..ops import RuleContext, resolve
from ..ops import activation as smooth
from ..ops import activation_piecewise as piecewise
from ..ops.activation import Activation as ActivationOp

# Relative and absolute slack on a slope evaluated in float64 (as intervals/slopes.py does).
_EVAL_MARGIN = 1e-9
_EVAL_FLOOR = 1e-12
# The bell-shaped ops' domain_slopes may use a constant rounded up at the 6th digit (Erf's 2/√π):
# read as the lower end of a range, it needs a wider relative margin.
_ROUNDED_CONSTANT_MARGIN = 1e-5
_BELL_SHAPED = (smooth.Tanh, smooth.Sigmoid, smooth.Erf, smooth.Atan, smooth.Asinh, smooth.Softsign)
_PROFILED = (smooth.Gelu, smooth.Silu, smooth.Mish)

SlopeArrays = tuple[np.ndarray, np.ndarray]


def neuron_slope_ranges(graph: Graph, ranges: dict[str, Interval]) -> dict[str, SlopeArrays]:
    """For each activation node (by node name) whose input has a range, the arrays (α, β) of its
    entries' slope ranges, in the shape of its input (batch axis included).

    Nodes left out (no range, an unknown shape, an op with a variable parameter) keep their global
    slopes.  Every α_i ≤ β_i, and both lie inside the op's global ``slope_range``."""
    ctx = RuleContext(graph, ranges=ranges)
    found: dict[str, SlopeArrays] = {}
    for node in graph.nodes:
        op = resolve(node, graph.opset_of(node))
        if not isinstance(op, ActivationOp) or not node.inputs or graph.variable_inputs(node) != [node.inputs[0]]:
            continue
        shape = graph.shape(node.inputs[0])
        interval = ranges.get(node.inputs[0])
        if interval is None or shape is None or any(d is None or d < 0 for d in shape):
            continue
        try:
            slopes = entry_slopes(op, node, ctx, interval.broadcast_to(tuple(int(d) for d in shape)))
        except (ValueError, KeyError, IndexError, TypeError, ArithmeticError):
            continue
        if slopes is not None:
            found[node.name] = slopes
    return found


def entry_slopes(op: ActivationOp, node: Node, ctx: RuleContext, x: Interval) -> SlopeArrays | None:
    """(α, β) per entry of ``x`` for the activation ``op`` (None: nothing but its global range)."""
    low, high = (float(s) for s in op.slope_range(node, ctx))
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        return None
    lo, hi = np.asarray(x.lo, dtype=np.float64), np.asarray(x.hi, dtype=np.float64)
    if type(op) is smooth.Relu:
        return np.where(lo >= 0, 1.0, 0.0), np.where(hi <= 0, 0.0, 1.0)
    if type(op) is piecewise.LeakyRelu:
        alpha = node.attr_float("alpha")
        on, off = lo >= 0, hi <= 0
        first = np.where(on, 1.0, np.where(off, alpha, min(alpha, 1.0)))
        last = np.where(on, 1.0, np.where(off, alpha, max(alpha, 1.0)))
        return _clipped(first, last, low, high)
    sup = op.domain_slopes(node, ctx, x)
    if sup is None:
        return None
    sup = np.broadcast_to(np.asarray(sup, dtype=np.float64), lo.shape)
    floor = -sup  # every quotient is ≥ −sup |f'|
    if type(op) in _BELL_SHAPED:
        far = x.magnitude
        floor = np.maximum(floor, _down(_slope_at(op, node, ctx, far), _ROUNDED_CONSTANT_MARGIN))
    elif type(op) is smooth.Softplus:
        floor = np.maximum(floor, _down(_slope_at(op, node, ctx, lo)))
    elif type(op) in _PROFILED:  # not Swish: its profile is SiLU's at alpha·x
        floor = np.maximum(floor, _profile_floor(op, node, lo, hi))
    return _clipped(floor, sup, low, high)


def _slope_at(op: ActivationOp, node: Node, ctx: RuleContext, points: np.ndarray) -> np.ndarray:
    """|f'| at ``points`` (the op's sup over a one-point interval); −∞ where it says nothing."""
    found = op.domain_slopes(node, ctx, Interval(points, points))
    return np.full(np.shape(points), -np.inf) if found is None else np.asarray(found, dtype=np.float64)


def _down(values: np.ndarray, margin: float = _EVAL_MARGIN) -> np.ndarray:
    """``values`` rounded down by a relative ``margin`` and an absolute _EVAL_FLOOR."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values - np.abs(values) * margin - _EVAL_FLOOR, -np.inf)


def _profile_floor(op: ActivationOp, node: Node, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """min f' over [lo, hi] rounded down: f' is monotone between its critical points, so the minimum
    is at an end or at a critical point inside (one that comes near counts, which only lowers it)."""
    assert isinstance(op, smooth.Smooth)
    profile = op.profile(node)

    def slope(values: np.ndarray) -> np.ndarray:
        tensor = torch.as_tensor(np.clip(values, -1e300, 1e300), dtype=torch.float64)
        return profile.slope(tensor).detach().cpu().numpy()

    with np.errstate(invalid="ignore", over="ignore"):
        floor = np.minimum(_down(slope(lo)), _down(slope(hi)))
    for at, bound in profile.slope_extremes:
        inside = (lo <= at + 1e-3) & (hi >= at - 1e-3)
        floor = np.where(
            inside, np.minimum(floor, -bound if slope(np.asarray(at)) < 0 else _down(slope(np.asarray(at)))), floor
        )
    return np.where(np.isnan(floor), -np.inf, floor)


def _clipped(alpha: np.ndarray, beta: np.ndarray, low: float, high: float) -> SlopeArrays:
    """The per-entry range intersected with the global one (never empty: an entry whose figures
    cross, which rounding alone could do, keeps the global range)."""
    alpha = np.clip(np.asarray(alpha, dtype=np.float64), low, high)
    beta = np.clip(np.asarray(beta, dtype=np.float64), low, high)
    crossed = ~(alpha <= beta)
    return np.where(crossed, low, alpha), np.where(crossed, high, beta)
