"""A figure on a domain is never above the global one: the global figure holds on every box
(redteam18: a Tanh residual CNN got 4.178 globally, by LipSDP-Neuron, and 5.252 on [−1, 1], where
per-neuron slopes kept the recursion from composing and the semidefinite step did not run)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit

CHANNELS, SIDE = 4, 8


class _Residual(nn.Module):
    def __init__(self, activation: type[nn.Module]) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1), nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.c3, self.c4 = nn.Conv2d(CHANNELS, CHANNELS, 1), nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.a1, self.a2, self.a3 = activation(), activation(), activation()
        for conv in (self.c1, self.c2, self.c3, self.c4):
            conv.weight.data *= 1.5

    def forward(self, x):
        y = self.a2(x + self.c2(self.a1(self.c1(x))))
        return self.c4(self.a3(self.c3(y))) + y


@pytest.mark.parametrize("activation, box", [(nn.Tanh, "-1:1"), (nn.LeakyReLU, "0.3:0.5")])
def test_the_figure_on_a_box_is_at_most_the_global_one(tmp_path: Path, activation, box: str) -> None:
    torch.manual_seed(0)
    path = tmp_path / "residual.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Residual(activation).eval(), (torch.randn(1, CHANNELS, SIDE, SIDE),), str(path), dynamo=False
        )
    whole = audit(str(path)).upper_bound
    local = audit(str(path), input_range=box).upper_bound
    assert whole is not None and local is not None and local <= whole
