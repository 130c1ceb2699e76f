"""The semidefinite bound in `check`: plain chains get LipSDP-Neuron's certified figure, which sits
between an autograd lower bound and the recursion's; anything else keeps the recursion's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit.pipeline import audit
from lipaudit.tight.from_graph import network_from_graph
from lipaudit.tight.semidefinite import chain_program


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


def test_a_residual_net_is_no_plain_chain(tmp_path: Path) -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x + self.inner(x))

    torch.manual_seed(0)
    module = Residual()
    path = _export(module, tmp_path / "residual.onnx", 8)
    report = audit(path)
    assert report.network.method != "LipSDP-Neuron"
    assert report.network.upper_bound >= _jacobian_lower_bound(module, 8)


def test_two_matrices_in_a_row_get_no_program(tmp_path: Path) -> None:
    """Their product would be rounded: the program takes the network's matrices as they are only."""
    from lipaudit.compose import compose
    from lipaudit.load import load_model
    from lipaudit.ops import RuleContext
    from lipaudit.passes import run_passes

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 2))
    path = _export(mlp, tmp_path / "two.onnx", 8)
    graph = run_passes(load_model(path, {}).graph)
    composed = compose(graph, RuleContext(graph))
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers})
    program = chain_program(described.network)
    # The merge pass may fold the two matrices into one Gemm; then the chain is plain again.
    dense_nodes = [node for node in graph.nodes if node.op_type in ("Gemm", "MatMul")]
    assert (program is None) == (len(dense_nodes) == 3)
