"""The network bound is never below the Jacobian norm at any point (autograd, float64)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit
from tests.jacobians import max_jacobian_norm

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "hardswish": nn.Hardswish,
    "mish": nn.Mish,
    "selu": nn.SELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


class ResidualMLP(nn.Module):
    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.inp = nn.Linear(6, width)
        self.body = nn.Sequential(nn.Linear(width, width), ACTIVATIONS[act](), nn.Linear(width, width))
        self.act = ACTIVATIONS[act]()
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        h = self.act(self.inp(x))
        return self.out(self.act(h + self.body(h)))


class SmallCNN(nn.Module):
    def __init__(self, act: str, pool: str, groups: int, transpose: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), ACTIVATIONS[act]())
        self.block = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1, groups=groups), nn.BatchNorm2d(4), ACTIVATIONS[act](), nn.Conv2d(4, 4, 1)
        )
        self.pool = nn.MaxPool2d(3, 2, 1) if pool == "max" else nn.AvgPool2d(2, 2)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1)
        self.up = nn.ConvTranspose2d(6, 3, 2, stride=2) if transpose else nn.Identity()
        self.head = nn.Linear((3 if transpose else 6) * (4 if transpose else 2) ** 2, 5)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.block(h)
        h = self.up(torch.relu(self.down(self.pool(h))))
        return self.head(h.flatten(1))


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.3, generator=generator)
            module.running_var.uniform_(0.3, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 2.0, generator=generator)


def export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17)
    return path


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_residual_mlp_bound_is_above_every_jacobian(tmp_path: Path, act: str) -> None:
    torch.manual_seed(hash(act) % 1000)
    model = ResidualMLP(12, act).eval()
    path = export(model, torch.randn(1, 6), tmp_path / "mlp.onnx")
    report = audit(str(path))
    assert report.network.certified and report.network.complete, report.network
    lower = max_jacobian_norm(model, (1, 6), samples=24, seed=1)
    assert report.upper_bound >= lower * (1 - 1e-9)
    assert report.upper_bound < lower * 1e3  # a bound, not a placeholder


@pytest.mark.parametrize(
    "act,pool,groups,transpose",
    [
        ("relu", "max", 1, False),
        ("gelu", "avg", 2, True),
        ("silu", "max", 4, True),
        ("tanh", "avg", 1, False),
    ],
)
def test_cnn_bound_is_above_every_jacobian(tmp_path: Path, act: str, pool: str, groups: int, transpose: bool) -> None:
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(3)
    model = SmallCNN(act, pool, groups, transpose).eval()
    _randomise_batchnorm(model, generator)
    path = export(model, torch.randn(1, 2, 8, 8), tmp_path / "cnn.onnx")
    report = audit(str(path))
    assert report.network.certified and report.network.complete, report.network
    lower = max_jacobian_norm(model, (1, 2, 8, 8), samples=6, seed=2)
    assert report.upper_bound >= lower * (1 - 1e-9)


def test_fft_path_bound_is_above_the_jacobian(tmp_path: Path) -> None:
    """An input large enough that the convs are bounded by the circulant FFT, not materialised."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).eval()
    path = export(model, torch.randn(1, 3, 40, 40), tmp_path / "big.onnx")
    report = audit(str(path))
    assert {layer.method for layer in report.layers if layer.op == "Conv"} - {"materialized"}
    assert report.network.certified
    lower = max_jacobian_norm(model, (1, 3, 40, 40), samples=1, seed=0)
    assert report.upper_bound >= lower
