"""The recursion on real model files: the IR → Network description, its checks, and the audit's figures.

Each model is a torch module exported to ONNX; the truth it is checked against is the module's own
Jacobian (torch autograd, never lipaudit's executor): its largest singular value at any input is a
lower bound on the Lipschitz constant, which the certified figure must never fall below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit.compose import compose
from lipaudit.load import load_model
from lipaudit.ops import RuleContext
from lipaudit.ops.linear import Convolution
from lipaudit.passes import run_passes
from lipaudit.pipeline import audit
from lipaudit.shapes import parse_input_shapes
from lipaudit.tight.from_graph import network_from_graph


class Residual(nn.Module):
    def __init__(self, branch: nn.Module, scale: float = 1.0):
        super().__init__()
        self.branch, self.scale = branch, scale

    def forward(self, x):
        return x + self.scale * self.branch(x)


class DenseJoin(nn.Module):
    """DenseNet-style: the block's input and output concatenated."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.cat([x, torch.tanh(self.conv(x))], dim=1)


def residual_mlp(width: int = 24, blocks: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, width),
        *[Residual(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))) for _ in range(blocks)],
        nn.ReLU(),
        nn.Linear(width, 10),
    )


def residual_cnn() -> nn.Module:
    def block(c: int, act: nn.Module) -> nn.Module:
        return Residual(
            nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act, nn.Conv2d(c, c, 3, padding=1)
            )
        )

    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.LeakyReLU(0.1),
        block(6, nn.ReLU()),
        block(6, nn.GELU()),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        DenseJoin(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )


def transposed_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        nn.SiLU(),
        nn.Conv2d(2, 1, 1),
    )


MODELS = {
    "residual_mlp": (residual_mlp, (1, 16)),
    "residual_cnn": (residual_cnn, (1, 1, 8, 8)),
    "transposed": (transposed_net, (1, 1, 8, 8)),
}


def _export(name: str, directory: Path, seed: int = 0) -> tuple[Path, nn.Module, tuple[int, ...]]:
    build, shape = MODELS[name]
    torch.manual_seed(seed)
    module = build().eval()
    for m in module.modules():  # statistics that are not the identity, so BatchNorm counts
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_()
            m.weight.data.uniform_(0.5, 1.5)
    path = directory / f"{name}.onnx"
    torch.onnx.export(module, (torch.randn(shape),), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return path, module, shape


def jacobian_lower_bound(module: nn.Module, shape: tuple[int, ...], points: int = 12, seed: int = 1) -> float:
    """max over random inputs of σ_max of the module's Jacobian, by torch autograd in float64."""
    module = module.double()
    generator = torch.Generator().manual_seed(seed)
    best = 0.0
    for _ in range(points):
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(module, x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jacobian, ord=2)))
    return best


def _described(path: Path, shapes=None):
    graph = run_passes(load_model(str(path), parse_input_shapes(shapes)).graph)
    composed = compose(graph, RuleContext(graph))
    return graph, composed, {layer.node: layer.output_factors for layer in composed.layers}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recursion_is_sound_and_never_above_the_product(tmp_path, name):
    path, module, shape = _export(name, tmp_path)
    report = audit(str(path))
    network = report.network
    assert network.certified and network.product_bound is not None
    assert network.upper_bound <= network.product_bound
    assert network.upper_bound >= jacobian_lower_bound(module, shape)
    product = audit(str(path), bound="product").network
    assert product.method == "product" and product.upper_bound == network.product_bound


def test_residual_nets_gain_from_the_recursion(tmp_path):
    path, module, shape = _export("residual_mlp", tmp_path, seed=3)
    network = audit(str(path)).network
    # w = 2 is quick on a net this small, so the wider window runs too and goes lower; on a net of
    # dense layers and activations the semidefinite bound may go lower still
    assert network.method in ("recursion-w4", "LipSDP-Neuron")
    assert network.upper_bound < network.product_bound / 2, (network.upper_bound, network.product_bound)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_common_ops_are_looked_through(tmp_path, name):
    path, _, _ = _export(name, tmp_path)
    graph, _, factors = _described(path)
    described = network_from_graph(graph, factors)
    assert described.barriers == {}
    assert described.linear > 0 and described.activations > 0


def test_a_wrong_description_becomes_a_barrier(tmp_path, monkeypatch):
    """A Conv described with the wrong padding does not match the op's run: it is not looked through."""
    path, _, _ = _export("residual_cnn", tmp_path)
    graph, _, factors = _described(path)
    honest = Convolution.linear_part

    def shifted(self, node, ctx):
        conv = honest(self, node, ctx)
        half = len(conv.pads) // 2
        conv.pads = tuple(p + 1 for p in conv.pads[:half]) + tuple(max(0, p - 1) for p in conv.pads[half:])
        return conv

    monkeypatch.setattr(Convolution, "linear_part", shifted)
    described = network_from_graph(graph, factors)
    convs = [node.name for node in graph.nodes if node.op_type == "Conv"]
    assert convs and all("differs" in described.barriers.get(name, "") for name in convs), described.barriers


def test_a_wrong_slope_range_becomes_a_barrier(tmp_path, monkeypatch):
    path, _, _ = _export("residual_mlp", tmp_path)
    graph, _, factors = _described(path)
    from lipaudit.ops.activation import Relu

    monkeypatch.setattr(Relu, "slope_range", lambda self, node, ctx=None: (0.0, 0.5))
    described = network_from_graph(graph, factors)
    relus = [node.name for node in graph.nodes if node.op_type == "Relu"]
    assert relus and all("slopes" in described.barriers[name] for name in relus)


def test_an_unmapped_op_is_a_barrier_with_its_factor(tmp_path):
    """MaxPool is no linear map: a barrier, and the bound stays sound around it."""
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 4)
    ).eval()
    path = tmp_path / "pool.onnx"
    torch.onnx.export(module, (torch.randn(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17)
    graph, _, factors = _described(path)
    described = network_from_graph(graph, factors)
    assert [graph.nodes[i].op_type for i, n in enumerate(graph.nodes) if n.name in described.barriers] == ["MaxPool"]
    network = audit(str(path)).network
    assert jacobian_lower_bound(module, (1, 1, 8, 8)) <= network.upper_bound <= network.product_bound


def test_a_recursion_that_fails_leaves_the_product(tmp_path, monkeypatch):
    """A graph the recursion trips on is still audited: the product, certified, and a notice."""
    import lipaudit.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("an op the description did not expect")

    monkeypatch.setattr(pipeline, "tighten", broken)
    path, _, _ = _export("residual_mlp", tmp_path)
    report = audit(str(path))
    assert report.network.method == "product" and report.network.upper_bound == report.network.product_bound
    assert report.network.certified
    assert any("recursion failed on this graph (an op the description" in notice for notice in report.notices)
