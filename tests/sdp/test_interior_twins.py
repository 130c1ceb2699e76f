"""Twins whose weights differ in their last bits get figures that differ as little.

The legacy ONNX exporter folds a BatchNorm into its convolution in float32; the ``.pt2`` path keeps
it and lipaudit folds it in float64. On a small residual CNN (540 program variables) the default
budget gave the first-order optimiser, which stops after a fixed amount of work at a point that
depends on those bits: 0.157601 against 0.157615. The interior-point method, allowed up to ten
times the semidefinite budget on a whole-network program, converges: both twins get the optimum,
to about 1e-7."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from lipaudit import audit


class _ResidualBN(nn.Module):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, 4)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h))))))
        return self.head(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def test_onnx_and_export_twins_of_a_batchnorm_residual_cnn_get_the_optimum(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _ResidualBN()
    for norm in (model.bn1, model.bn2):
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    example = torch.randn(1, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp_path / "net.onnx"), dynamo=False)
        torch.export.save(torch.export.export(model, (example,)), str(tmp_path / "net.pt2"))
    reports = [audit(str(tmp_path / name)) for name in ("net.onnx", "net.pt2")]
    for report in reports:
        assert report.network.method == "LipSDP-Neuron"
        assert any("interior-point iterations (gap reached)" in notice for notice in report.notices)
    onnx_figure, export_figure = (report.upper_bound for report in reports)
    assert abs(onnx_figure / export_figure - 1) < 1e-6  # the first-order figures differed by 9e-5
    assert onnx_figure < 0.1575  # below both first-order figures (0.157601, 0.157615)
