"""The semidefinite bound in `check`: plain chains get LipSDP-Neuron's certified figure, which sits
between an autograd lower bound and the recursion's; anything else keeps the recursion's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit.pipeline import audit
from lipaudit.tight.from_graph import network_from_graph
from lipaudit.tight.semidefinite import program_of


def _export(module: nn.Module, path: Path, width: int) -> str:
    module.eval()
    torch.onnx.export(module, (torch.randn(1, width),), str(path), dynamo=False)
    return str(path)


def _jacobian_lower_bound(module: nn.Module, width: int, samples: int = 200) -> float:
    generator = torch.Generator().manual_seed(1)
    best = 0.0
    for _ in range(samples):
        x = torch.randn(1, width, generator=generator)
        jac = torch.autograd.functional.jacobian(module, x).reshape(-1, width)
        best = max(best, float(torch.linalg.matrix_norm(jac, 2)))
    return best


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.GELU])
def test_a_plain_chain_gets_the_certified_semidefinite_figure(tmp_path: Path, activation: type[nn.Module]) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 24), activation(), nn.Linear(24, 24), activation(), nn.Linear(24, 4))
    path = _export(mlp, tmp_path / "mlp.onnx", 16)
    product = audit(path, bound="product").network
    report = audit(path)
    network = report.network
    assert network.method == "LipSDP-Neuron" and network.certified
    assert any("LipSDP-Neuron" in notice and "proved" in notice for notice in report.notices)
    assert network.upper_bound < product.upper_bound
    assert network.upper_bound >= _jacobian_lower_bound(mlp, 16)
    assert audit(path).network.upper_bound == network.upper_bound  # a fixed budget: the same figure


class _Residual(nn.Module):
    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Linear(8, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(blocks)
        )
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def test_a_residual_net_gets_the_semidefinite_figure_with_its_skips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Residual(12, 3)
    path = _export(module, tmp_path / "residual.onnx", 8)
    product = audit(path, bound="product").network.upper_bound
    network = audit(path).network
    assert network.method == "LipSDP-Neuron" and network.certified
    assert _jacobian_lower_bound(module, 8) <= network.upper_bound < product


def test_two_matrices_in_a_row_carry_their_rounding(tmp_path: Path) -> None:
    """Their product is rounded in float64: the connection says by how much, so the proof covers it."""
    from lipaudit.compose import compose
    from lipaudit.load import load_model
    from lipaudit.ops import RuleContext
    from lipaudit.passes import run_passes

    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    path = _export(mlp, tmp_path / "two.onnx", 8)
    graph = run_passes(load_model(path, {}).graph)
    composed = compose(graph, RuleContext(graph))
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers})
    program = program_of(described.network)
    assert program is not None and len(program.groups) == 2
    dense_nodes = [node for node in graph.nodes if node.op_type in ("Gemm", "MatMul")]
    if len(dense_nodes) == 4:  # not merged by the passes: the middle connection is a rounded product
        assert program.groups[1].inputs[0].rounding > 0
    assert audit(path).network.upper_bound >= _jacobian_lower_bound(mlp, 8)
