"""The second run of lipaudit.domain.deviation against independent truth, on one op at a time: with
an input Jacobian C ± R of deviation d, at points u of the input's range and errors E (‖E‖₂ = d)
along D(u)'s top singular direction and at random, (C + E)·D(u) (autograd) stays within the
deviation it gives; with C = 0 that deviation is the op's factor times d, where the rule alone
carried d through its parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lipaudit.domain import prepare_domain
from lipaudit.domain.deviation import OpFactorDeviation
from lipaudit.domain.jacobian import Recorded
from lipaudit.intervals.interval import Interval
from lipaudit.intervals.jacobian import Jac
from lipaudit.ops import RuleContext, resolve

from ._errors import errored_jacobians
from ._models import analysed, export
from .test_interval_jacobian import _points


class _Op(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


OPS = {
    "gelu": (F.gelu, "Gelu"),
    "tanh": (torch.tanh, "Tanh"),
    "layernorm": (lambda x: F.layer_norm(x, (6,)), "LayerNormalization"),
    "softmax": (lambda x: torch.softmax(x, dim=-1), "Softmax"),
}


@pytest.mark.parametrize("with_centre", [False, True])
@pytest.mark.parametrize("name", sorted(OPS))
def test_the_second_run_holds_the_jacobians_and_takes_the_ops_factor(name: str, with_centre: bool, tmp_path) -> None:
    fn, op_type = OPS[name]
    shape, n0, d, radius = (1, 2, 6), 3, 0.4, 0.3
    graph = analysed(export(_Op(fn), shape, Path(tmp_path), opset=18))
    node = next(n for n in graph.nodes if n.op_type == op_type)
    assert node.inputs[0] == graph.inputs[0]
    centre = np.random.default_rng(3).normal(size=shape)
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    box = domain.ranges[node.inputs[0]]
    generator = torch.Generator().manual_seed(4)
    c = torch.zeros((n0, *shape), dtype=torch.float64)
    if with_centre:
        c = 0.5 * torch.randn((n0, *shape), generator=generator, dtype=torch.float64)
    rules = RuleContext(graph, ranges={node.inputs[0]: box})
    jctx = Recorded(
        rules,
        {node.inputs[0]: Interval(centre, centre)},
        {node.inputs[0]: Jac(c, torch.ones_like(c), d)},
        torch.full((n0,), 1e6, dtype=torch.float64),
        centred=False,
    )
    op = resolve(node, graph.opset_of(node))
    first = op.jacobian(node, jctx)[0]
    jctx.jacobians[node.outputs[0]] = first
    hook = OpFactorDeviation()
    hook.after(node, jctx)
    out = jctx.jacobians[node.outputs[0]]
    assert hook.improved == 1 and out.deviation < first.deviation
    assert torch.equal(out.centre, first.centre) and torch.equal(out.radius, first.radius)
    c_flat, out_centre = c.reshape(n0, -1), out.centre.reshape(n0, -1)
    worst = 0.0
    for jacobian in errored_jacobians(fn, _points(centre, radius, 12, 5), box, c_flat, d, generator):
        distance = float(torch.linalg.matrix_norm(jacobian - out_centre, ord=2))
        worst = max(worst, distance)
        assert distance <= out.deviation
    if not with_centre:
        assert worst > 0.5 * out.deviation  # errors along D(u)'s top direction come near it


class _Product(nn.Module):
    def forward(self, x):
        return x[..., :3] * x[..., 3:]


@pytest.mark.parametrize("with_centre", [False, True])
def test_the_joint_jacobian_of_a_two_input_op_holds_the_jacobians(with_centre: bool, tmp_path) -> None:
    """a·b with both inputs carrying a deviation: the joint bound (√(d_a² + d_b²)·sup‖D(u)‖ and what
    the spread adds) holds (C + E)·D(u) at points of the ranges, E_a and E_b aligned on one entry."""
    shape, n0, d = (1, 2, 6), 3, 0.4
    graph = analysed(export(_Product(), shape, Path(tmp_path), opset=18))
    node = next(n for n in graph.nodes if n.op_type == "Mul")
    centre = np.random.default_rng(3).normal(size=shape)
    domain = prepare_domain(graph, None, around=[centre], radius=0.2)
    assert domain is not None
    a, b = node.inputs[:2]
    ranges = {name: domain.ranges[name] for name in (a, b)}
    generator = torch.Generator().manual_seed(6)
    half = (n0, 1, 2, 3)
    centres = {name: torch.zeros(half, dtype=torch.float64) for name in (a, b)}
    if with_centre:
        centres = {name: 0.5 * torch.randn(half, generator=generator, dtype=torch.float64) for name in (a, b)}
    jacobians = {name: Jac(c, torch.ones_like(c), d) for name, c in centres.items()}
    points = {name: Interval(r.center, r.center) for name, r in ranges.items()}
    widths = torch.full((n0,), 1e6, dtype=torch.float64)
    jctx = Recorded(RuleContext(graph, ranges=dict(ranges)), points, jacobians, widths, centred=False)
    op = resolve(node, graph.opset_of(node))
    first = op.jacobian(node, jctx)[0]
    jctx.jacobians[node.outputs[0]] = first
    OpFactorDeviation().after(node, jctx)
    out = jctx.jacobians[node.outputs[0]]
    assert out.deviation <= first.deviation
    c_a, c_b = centres[a].reshape(n0, -1), centres[b].reshape(n0, -1)
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(24):
        u_a, u_b = (
            torch.as_tensor(r.lo + (r.hi - r.lo) * rng.uniform(size=r.lo.shape)).reshape(-1) for r in ranges.values()
        )
        entry = int(torch.argmax(u_a.abs() + u_b.abs()))
        w = torch.randn(n0, generator=generator, dtype=torch.float64)
        sign = 1.0 if float(u_a[entry] * u_b[entry]) >= 0 else -1.0
        e_a, e_b = torch.zeros(n0, 6, dtype=torch.float64), torch.zeros(n0, 6, dtype=torch.float64)
        e_a[:, entry], e_b[:, entry] = d * w / w.norm(), sign * d * w / w.norm()
        jacobian = (c_a + e_a) * u_b + (c_b + e_b) * u_a
        distance = float(torch.linalg.matrix_norm(jacobian - out.centre.reshape(n0, -1), ord=2))
        worst = max(worst, distance)
        assert distance <= out.deviation
    if not with_centre:
        assert worst > 0.5 * out.deviation
