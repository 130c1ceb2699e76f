"""Interval-Jacobian rules for ops that copy entries (Expand, Tile): the audit on a box gets the
interval-Jacobian figure through them, never below autograd Jacobian norms inside the box."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ._models import analysed, export
from .test_interval_jacobian import _bound, _jacobian_norm, _points


class _Copied(nn.Module):
    def __init__(self, copy) -> None:
        super().__init__()
        self.first, self.head = nn.Linear(6, 4), nn.Linear(12, 2)
        self.copy = copy

    def forward(self, x):
        return self.head(torch.tanh(self.copy(self.first(x).reshape(1, 1, 4))).reshape(1, 12))


CASES = {
    "expand": lambda t: t.expand(1, 3, 4),
    "tile": lambda t: t.repeat(1, 3, 1),
}


@pytest.mark.parametrize("radius", [1e-3, 0.05, 1.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_figure_is_at_least_the_jacobian_norm_inside_the_box(case: str, radius: float, tmp_path: Path) -> None:
    torch.manual_seed(2)
    module = _Copied(CASES[case]).eval()
    graph = analysed(export(module, (1, 6), tmp_path))
    assert any(node.op_type in ("Expand", "Tile") for node in graph.nodes)
    centre = np.random.default_rng(3).normal(size=(1, 6))
    _, found = _bound(graph, centre, radius)
    seen = max(_jacobian_norm(module, x) for x in _points(centre, radius, 24, 4))
    assert math.isfinite(found.upper_bound)
    assert found.upper_bound >= seen
    if radius < 0.01:  # nearly linear on a small box
        assert found.upper_bound <= 1.05 * seen
