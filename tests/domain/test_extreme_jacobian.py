"""Interval-Jacobian rules for ops that pick an entry by value (MaxPool, GlobalMaxPool, ReduceMax,
ReduceMin, elementwise Max and Min) and for LogSoftmax, against autograd Jacobian norms at corners
and random points of the box.

A max is not an entry move: on the numbers 1, …, n it picks the last entry, and a description
built from that run alone took ReduceMax for a fixed selection (a certified 0.334 on a box where
two inputs show 1.98)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit import audit
from lipaudit.linear_maps import Barrier
from lipaudit.ops import RuleContext, resolve

from ._models import analysed, export
from .test_interval_jacobian import _bound, _jacobian_norm, _points


class _Pooled(nn.Module):
    def __init__(self, pool: nn.Module, features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = pool
        self.head = nn.Linear(features, 2)

    def forward(self, x):
        return self.head(torch.relu(self.pool(self.conv(x))).flatten(1))


class _ChannelMax(nn.Module):
    def forward(self, x):
        return x.amax(dim=(2, 3), keepdim=True)


class _Reduced(nn.Module):
    def __init__(self, reduce) -> None:
        super().__init__()
        self.first = nn.Linear(6, 12)
        self.reduce = reduce
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.reduce(self.first(x).reshape(1, 4, 3)))


class _Elementwise(nn.Module):
    def __init__(self, pick) -> None:
        super().__init__()
        self.left, self.right, self.head = nn.Linear(6, 5), nn.Linear(6, 5), nn.Linear(5, 2)
        self.pick = pick

    def forward(self, x):
        return self.head(self.pick(self.pick(self.left(x), self.right(x)), torch.full((5,), 0.1)))


class _LogSoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.head = nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.head(torch.log_softmax(self.first(x), dim=-1))


CASES = {
    "maxpool": (lambda: _Pooled(nn.MaxPool2d(3, stride=2, padding=1), 27), (1, 2, 5, 5)),
    "maxpool_ceil": (lambda: _Pooled(nn.MaxPool2d(2, stride=2, ceil_mode=True), 27), (1, 2, 5, 5)),
    "maxpool_dilated": (lambda: _Pooled(nn.MaxPool2d(2, stride=1, dilation=2), 27), (1, 2, 5, 5)),
    "global_maxpool": (lambda: _Pooled(nn.AdaptiveMaxPool2d(1), 3), (1, 2, 5, 5)),
    "reduce_max": (lambda: _Reduced(lambda t: t.amax(dim=-1)), (1, 6)),
    "reduce_min": (lambda: _Reduced(lambda t: t.amin(dim=-1)), (1, 6)),
    "max": (lambda: _Elementwise(torch.maximum), (1, 6)),
    "min": (lambda: _Elementwise(torch.minimum), (1, 6)),
    "log_softmax": (_LogSoftmax, (1, 6)),
}


@pytest.mark.parametrize("radius", [0.05, 1.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_figure_is_at_least_the_jacobian_norm_inside_the_box(case: str, radius: float, tmp_path: Path) -> None:
    build, shape = CASES[case]
    torch.manual_seed(3)
    module = build().eval()
    graph = analysed(export(module, shape, tmp_path))
    centre = np.random.default_rng(4).normal(size=shape)
    _, found = _bound(graph, centre, radius)
    seen = max(_jacobian_norm(module, x) for x in _points(centre, radius, 24, 5))
    assert math.isfinite(found.upper_bound)
    assert found.upper_bound >= seen


def test_a_small_box_where_one_entry_is_always_the_max_is_nearly_linear(tmp_path: Path) -> None:
    """Where each window's largest entry stays ahead of the rest, the Jacobian is that entry's: the
    figure is within a few percent of ‖J(x0)‖."""
    torch.manual_seed(3)
    module = _Pooled(nn.MaxPool2d(3, stride=2, padding=1), 27).eval()
    shape = (1, 2, 5, 5)
    graph = analysed(export(module, shape, tmp_path))
    centre = np.random.default_rng(4).normal(size=shape)
    _, found = _bound(graph, centre, 1e-5)
    exact = _jacobian_norm(module, centre)
    assert exact <= found.upper_bound <= exact * 1.05


def test_a_max_reduction_is_never_described_as_a_selection(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Reduced(lambda t: t.amax(dim=-1)).eval()
    graph = analysed(export(module, (1, 6), tmp_path))
    (node,) = [n for n in graph.nodes if n.op_type == "ReduceMax"]
    op = resolve(node, graph.opset_of(node))
    assert op is not None
    assert isinstance(op.linear_part(node, RuleContext(graph)), Barrier)


def test_the_audit_on_a_box_stays_above_two_inputs_quotient(tmp_path: Path) -> None:
    """The regression: conv, then the max over each channel, then a dense layer, on [−1, 1]."""
    torch.manual_seed(0)
    module = _Pooled(nn.AdaptiveMaxPool2d(1), 3).eval()
    module.pool = _ChannelMax()
    with torch.no_grad():
        module.conv.weight.normal_()
        module.conv.bias.zero_()
    shape = (1, 2, 4, 4)
    path = export(module, shape, tmp_path)
    report = audit(str(path), input_range=["-1:1"])
    rng = np.random.default_rng(0)
    seen = max(_jacobian_norm(module, rng.uniform(-1, 1, size=shape)) for _ in range(200))
    assert report.upper_bound is not None and report.upper_bound >= seen


class _Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(9, 2)

    def forward(self, x):
        return self.head(x.transpose(1, 2).reshape(1, 9))


def test_a_description_that_differs_from_the_run_gives_no_figure(tmp_path: Path, monkeypatch) -> None:
    """A Transpose that keeps the shape, described as the identity: the engine checks each map
    against the op's run and refuses it, rather than certify the wrong Jacobian."""
    from lipaudit.domain.jacobian import JacobianUnavailable
    from lipaudit.linear_maps import Reshape
    from lipaudit.ops.structural import Transpose

    torch.manual_seed(0)
    graph = analysed(export(_Transposed().eval(), (1, 3, 3), tmp_path))
    assert any(n.op_type == "Transpose" for n in graph.nodes)
    centre = np.random.default_rng(0).normal(size=(1, 3, 3))
    _bound(graph, centre, 0.1)  # described rightly: a figure
    monkeypatch.setattr(Transpose, "linear_part", lambda self, node, ctx: Reshape(ctx.output_shape(node)))
    with pytest.raises(JacobianUnavailable):
        _bound(graph, centre, 0.1)
