"""The derivative ranges of the piecewise-linear activations on an interval (Relu, LeakyRelu with
any alpha, PRelu per channel, Abs, Clip): exactly the one slope where the interval stays on one
piece, and the hull of the slopes on both sides (Clarke) where it may reach a kink.  The slopes
are measured here by central differences of onnxruntime's run at points of the interval."""

from __future__ import annotations

import numpy as np
import pytest

from lipaudit.intervals.interval import Interval
from lipaudit.load import load_model
from lipaudit.ops import RuleContext, resolve
from tests.builders import save, session, single_node_model

SHAPE = (1, 3, 4)
CASES = {
    "relu": ("Relu", {}, {}, (0.0,)),
    "leaky": ("LeakyRelu", {"alpha": 0.1}, {}, (0.0,)),
    "leaky-negative": ("LeakyRelu", {"alpha": -0.5}, {}, (0.0,)),
    "leaky-steep": ("LeakyRelu", {"alpha": 2.0}, {}, (0.0,)),
    "prelu": ("PRelu", {}, {"slope": np.array([[0.2], [-0.4], [1.5]], np.float32)}, (0.0,)),
    "abs": ("Abs", {}, {}, (0.0,)),
    "clip": ("Clip", {}, {"min": np.array(-1.0, np.float32), "max": np.array(0.5, np.float32)}, (-1.0, 0.5)),
}


def _intervals(kinks: tuple[float, ...], rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random intervals, and intervals that end exactly at a kink or straddle one."""
    found = []
    for _ in range(6):
        a, b = rng.uniform(-3, 3, size=SHAPE), rng.uniform(-3, 3, size=SHAPE)
        found.append((np.minimum(a, b), np.maximum(a, b)))
    for kink in kinks:
        width = rng.uniform(0.01, 1.0, size=SHAPE)
        at = np.full(SHAPE, kink)
        found += [(at, kink + width), (kink - width, at), (kink - width, kink + width)]
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_derivative_range_is_exact_on_each_piece(tmp_path, case):
    op_type, attrs, inits, kinks = CASES[case]
    model = single_node_model(op_type, SHAPE, inits, **attrs)
    graph = load_model(save(model, tmp_path)).graph
    node = graph.nodes[0]
    op = resolve(node, graph.opset_of(node))
    run = session(model)
    rng = np.random.default_rng(0)
    step = 1e-3
    for lo, hi in _intervals(kinks, rng):
        ranges = {"x": Interval(lo, hi)}
        found = op.derivative_range(node, RuleContext(graph, ranges=ranges), Interval(lo, hi))
        low, high = np.broadcast_to(found.lo, SHAPE), np.broadcast_to(found.hi, SHAPE)
        seen_low, seen_high = np.full(SHAPE, np.inf), np.full(SHAPE, -np.inf)
        for t in np.linspace(0, 1, 41):
            x = lo + t * (hi - lo)
            for offset in (-step, step):  # each side of a kink at x
                near = np.clip(x + offset, lo, hi)
                a, b = np.minimum(x, near), np.maximum(x, near)
                safe = b - a > step / 2
                ya = run.run(None, {"x": a.astype(np.float32)})[0].astype(np.float64)
                yb = run.run(None, {"x": b.astype(np.float32)})[0].astype(np.float64)
                slope = np.where(safe, (yb - ya) / np.where(safe, b - a, 1.0), np.nan)
                seen_low = np.fmin(seen_low, slope)
                seen_high = np.fmax(seen_high, slope)
        measured = np.isfinite(seen_low)
        assert np.all(low[measured] <= seen_low[measured] + 1e-3), case
        assert np.all(high[measured] >= seen_high[measured] - 1e-3), case
        # tight: no wider than what the interval's points show, but for a kink it reaches (Clarke)
        touches = np.zeros(SHAPE, bool)
        for kink in kinks:
            touches |= (lo <= kink) & (hi >= kink)
        one_piece = measured & ~touches
        assert np.allclose(low[one_piece], seen_low[one_piece], atol=2e-3), case
        assert np.allclose(high[one_piece], seen_high[one_piece], atol=2e-3), case
