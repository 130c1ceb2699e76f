"""The LayerNorm deviation from how fast its Jacobian turns (lipaudit.domain.curvature) against
autograd: with an input Jacobian C ± R of deviation d, at corners, random points and points found by
gradient ascent on ‖C·D(u) − C′‖₂ inside the input's range, and with errors E (‖E‖₂ = d) along
D(u)'s top singular direction, (C + E)·D(u) stays within the deviation, which is below the interval
rule's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit.domain import prepare_domain
from lipaudit.domain.curvature import layer_norm_deviation
from lipaudit.domain.deviation import OpFactorDeviation
from lipaudit.domain.jacobian import Recorded
from lipaudit.intervals.interval import Interval
from lipaudit.intervals.jacobian import Jac
from lipaudit.ops import RuleContext, resolve

from ._errors import errored_jacobians
from ._models import analysed, export

SHAPE = (1, 3, 6)


def _norm() -> nn.LayerNorm:
    torch.manual_seed(2)
    layer = nn.LayerNorm(SHAPE[-1])
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, -0.4, 0.9, 2.0, -1.1, 0.3]))
        layer.bias.normal_()
    return layer


def _centre() -> np.ndarray:
    centre = np.random.default_rng(3).normal(size=SHAPE)
    centre[0, 1] *= 0.3  # one group with a small spread: a large curvature there
    return centre


def _ascent(fn, box: Interval, c: torch.Tensor, target: torch.Tensor, seed: int):
    """Points of the box found by gradient ascent on ‖C·D(u) − target‖₂ from corners and random starts."""
    lo, hi = torch.as_tensor(box.lo), torch.as_tensor(box.hi)
    generator = torch.Generator().manual_seed(seed)
    for start in range(4):
        t = torch.rand(lo.shape, generator=generator, dtype=torch.float64)
        t = (t > 0.5).double() if start < 2 else t
        t.requires_grad_(True)
        for _ in range(15):
            u = lo + (hi - lo) * t
            derivative = torch.autograd.functional.jacobian(fn, u, create_graph=True).reshape(-1, u.numel())
            value = torch.linalg.matrix_norm(c @ derivative.T - target, 2)
            (grad,) = torch.autograd.grad(value, t)
            with torch.no_grad():
                t += 0.2 * grad.sign()
                t.clamp_(0.0, 1.0)
            yield (lo + (hi - lo) * t).detach().numpy()


def _points(box: Interval, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for k in range(count):
        pick = rng.uniform(size=box.lo.shape)
        yield box.lo + (box.hi - box.lo) * (np.round(pick) if k < count // 2 else pick)


@pytest.mark.parametrize("identity", [False, True])
def test_the_curvature_deviation_holds_the_jacobians_in_the_range(identity: bool, tmp_path: Path) -> None:
    layer = _norm()
    graph = analysed(export(layer, SHAPE, tmp_path, opset=18))
    node = next(n for n in graph.nodes if n.op_type == "LayerNormalization")
    assert node.inputs[0] == graph.inputs[0]
    centre = _centre()
    domain = prepare_domain(graph, None, around=[centre], radius=0.12)
    assert domain is not None
    name = node.inputs[0]
    box = domain.ranges[name]
    size = int(np.prod(SHAPE))
    generator = torch.Generator().manual_seed(4)
    if identity:  # the first op after a cut: the input is exact
        n0, d = size, 0.0
        c = torch.eye(size, dtype=torch.float64).reshape((n0, *SHAPE))
    else:
        n0, d = 4, 0.3
        c = 0.5 * torch.randn((n0, *SHAPE), generator=generator, dtype=torch.float64)
    radius = torch.zeros_like(c) if identity else torch.full_like(c, 0.3)
    rules = RuleContext(graph, ranges={name: box})
    jctx = Recorded(
        rules,
        {name: Interval(centre, centre)},
        {name: Jac(c, radius, d)},
        torch.full((n0,), 1e6, dtype=torch.float64),
        centred=False,
    )
    op = resolve(node, graph.opset_of(node))
    first = op.jacobian(node, jctx)[0]
    jctx.jacobians[node.outputs[0]] = first
    candidate = layer_norm_deviation(op, node, jctx, first)
    OpFactorDeviation().after(node, jctx)
    out = jctx.jacobians[node.outputs[0]]
    assert candidate < first.deviation  # the curvature bound is the tighter one here
    assert out.deviation <= candidate
    fn = layer.double().eval()
    c_flat, out_centre = c.reshape(n0, -1), out.centre.reshape(n0, -1)
    worst = 0.0
    points = [*_points(box, 16, 5), *_ascent(fn, box, c_flat, out_centre, 6)]
    for jacobian in errored_jacobians(fn, points, box, c_flat, d, generator):
        distance = float(torch.linalg.matrix_norm(jacobian - out_centre, ord=2))
        worst = max(worst, distance)
        assert distance <= out.deviation
    assert worst > 0.15 * out.deviation  # not vacuous: autograd comes within 4–7× of it


def test_a_variable_scale_or_an_unbounded_range_gets_no_curvature_bound(tmp_path: Path) -> None:
    layer = _norm()
    graph = analysed(export(layer, SHAPE, tmp_path, opset=18))
    node = next(n for n in graph.nodes if n.op_type == "LayerNormalization")
    name = node.inputs[0]
    c = torch.ones((2, *SHAPE), dtype=torch.float64)
    unbounded = Interval(np.full(SHAPE, -np.inf), np.full(SHAPE, np.inf))
    jctx = Recorded(
        RuleContext(graph, ranges={name: unbounded}),
        {name: Interval(np.zeros(SHAPE), np.zeros(SHAPE))},
        {name: Jac(c, torch.zeros_like(c), 0.1)},
        torch.ones(2, dtype=torch.float64),
        centred=False,
    )
    op = resolve(node, graph.opset_of(node))
    assert layer_norm_deviation(op, node, jctx, Jac(c, torch.zeros_like(c), 1.0)) == float("inf")
