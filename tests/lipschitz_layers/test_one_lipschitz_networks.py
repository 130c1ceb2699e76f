"""Networks built from 1-Lipschitz layer libraries get a bound of at most their guarantee (1), within
1%, and never below what the network is seen to do.

deel-torchlip (Björck/spectral-normalised linear and conv layers, strided too; GroupSort2, GroupSort,
FullSort, its concatenated-ReLU "MaxMin"; ℓ2-norm pooling; invertible downsampling) and orthogonium
(orthogonal convolutions, strided ones included, with zero or circular padding; its Split/Max/Min
MaxMin; orthogonal linear layers), each saved as ONNX (opset 17, without dynamo) and as TorchScript.

Truth, from torch alone: a lower bound (the largest Jacobian norm over random inputs) and, for the
tightness claim, the product of the linear layers' operator norms, each materialised from basis
vectors at the layer's input shape. Every other layer of these networks is 1-Lipschitz, so a bound
at that product (plus float32 margins) means no activation or pool was charged more than 1.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit
from tests.passes._export import export

torchlip = pytest.importorskip("deel.torchlip")
aoc = pytest.importorskip("orthogonium.layers.conv.AOC")
orthogonium_activations = pytest.importorskip("orthogonium.layers.custom_activations")
orthogonium_linear = pytest.importorskip("orthogonium.layers.linear.ortho_linear")

GUARANTEE = 1.0
FLOAT32_SLACK = 1e-4  # the float32 margin on each factor, many times over


def _baked(module: nn.Module) -> nn.Module:
    """The module with its parametrised weights computed once and stored as plain tensors (what an
    exporter sees at inference)."""
    for child in module.modules():
        for name in list(getattr(child, "parametrizations", {}) or {}):
            torch.nn.utils.parametrize.remove_parametrizations(child, name, leave_parametrized=True)
    return module.eval()


def _torchlip_dense() -> tuple[nn.Module, tuple[int, ...]]:
    model = torchlip.Sequential(
        torchlip.SpectralLinear(12, 16),
        torchlip.GroupSort2(),
        torchlip.SpectralLinear(16, 16),
        torchlip.GroupSort(4),
        torchlip.SpectralLinear(16, 16),
        torchlip.FullSort(),
        torchlip.SpectralLinear(16, 8),
        torchlip.MaxMin(),
        torchlip.SpectralLinear(16, 4),
    )
    return model.vanilla_export(), (1, 12)


def _torchlip_strided_cnn() -> tuple[nn.Module, tuple[int, ...]]:
    model = torchlip.Sequential(
        torchlip.SpectralConv2d(3, 8, 3, padding=1),
        torchlip.GroupSort2(),
        torchlip.SpectralConv2d(8, 16, 3, stride=2, padding=1),
        torchlip.MaxMin(),
        torchlip.ScaledL2NormPool2d(2),
        torchlip.InvertibleDownSampling(2),
        torchlip.SpectralConv2d(128, 16, 1),
        torchlip.GroupSort2(),
        torchlip.ScaledAdaptativeL2NormPool2d((1, 1)),
        nn.Flatten(),
        torchlip.SpectralLinear(16, 10),
    )
    return model.vanilla_export(), (1, 3, 8, 8)


def _orthogonal_strided_cnn() -> tuple[nn.Module, tuple[int, ...]]:
    model = nn.Sequential(
        aoc.AdaptiveOrthoConv2d(4, 8, 3, stride=1, padding=1, padding_mode="zeros"),
        orthogonium_activations.MaxMin(),
        aoc.AdaptiveOrthoConv2d(8, 16, 3, stride=2, padding=1, padding_mode="zeros"),
        orthogonium_activations.MaxMin(),
        aoc.AdaptiveOrthoConv2d(16, 64, 2, stride=2, padding=0, padding_mode="zeros"),
        nn.LPPool2d(2, 2),
        nn.Flatten(),
        orthogonium_linear.OrthoLinear(64, 32),
        orthogonium_activations.MaxMin(),
    )
    return model, (1, 4, 8, 8)


def _orthogonal_circular_cnn() -> tuple[nn.Module, tuple[int, ...]]:
    """orthogonium's default padding is circular: with it an orthogonal kernel's convolution is
    orthogonal, while piece by piece the pad alone would cost 3 per 3×3 layer."""
    model = nn.Sequential(
        aoc.AdaptiveOrthoConv2d(4, 8, 3, stride=1, padding=1, padding_mode="circular"),
        orthogonium_activations.MaxMin(),
        aoc.AdaptiveOrthoConv2d(8, 16, 3, stride=2, padding=1, padding_mode="circular"),
        nn.LPPool2d(2, 2),
        nn.Flatten(),
        orthogonium_linear.OrthoLinear(64, 64),
    )
    return model, (1, 4, 8, 8)


NETWORKS = {
    "torchlip-dense": _torchlip_dense,
    "torchlip-strided-cnn": _torchlip_strided_cnn,
    "orthogonal-strided-cnn": _orthogonal_strided_cnn,
    "orthogonal-circular-cnn": _orthogonal_circular_cnn,
}


def _autograd_lower_bound(model: nn.Module, shape: tuple[int, ...], samples: int = 6) -> float:
    model = copy.deepcopy(model).double()
    generator = torch.Generator().manual_seed(0)
    best = 0.0
    for _ in range(samples):
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(model, x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jacobian, ord=2)))
    return best


def _linear_layer_norms(model: nn.Module, shape: tuple[int, ...]) -> list[float]:
    """‖layer‖₂ of every Conv2d (with its padding) and Linear, materialised at its input shape (bias
    dropped)."""
    norms = []
    model = copy.deepcopy(model).double()

    def measure(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach()
        n = x[0].numel()
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *x.shape[1:])
        if isinstance(module, nn.Conv2d):
            columns = module._conv_forward(basis, module.weight, None)  # its own padding mode
        else:
            columns = basis @ module.weight.T
        norms.append(float(torch.linalg.matrix_norm(columns.reshape(n, -1), ord=2)))

    hooks = [m.register_forward_pre_hook(measure) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.randn(shape, dtype=torch.float64))
    for hook in hooks:
        hook.remove()
    return norms


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request) -> tuple[str, nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    model, shape = NETWORKS[request.param]()
    return request.param, _baked(model).float(), shape


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_bound_is_the_guarantee_and_above_what_the_network_does(tmp_path: Path, network, kind: str) -> None:
    name, model, shape = network
    path, shapes = export(model, shape, tmp_path, kind)
    report = audit(str(path), input_shape=shapes)
    assert report.verification.checked, report.verification.reason
    assert report.network.certified and report.network.complete, [
        (b.op, b.reason) for b in report.network.unbounded + report.network.unsupported
    ]
    bound = report.network.upper_bound
    lower = _autograd_lower_bound(model, shape)
    assert lower <= bound, (lower, bound)
    assert bound <= 1.01 * GUARANTEE, bound
    # Tight: the linear layers' own norms, and nothing more for the 1-Lipschitz layers between them.
    product = math.prod(_linear_layer_norms(model, shape))
    assert bound <= product * (1 + FLOAT32_SLACK), (bound, product)
    assert bound >= product * (1 - 1e-6)
