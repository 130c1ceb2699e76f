"""nn.RNN (tanh or ReLU, stacked, bidirectional, batch first) through the legacy ONNX export,
torch.jit.trace and torch.export: one ONNX RNN op per layer on every path, the same figure, and never
below the Jacobian norms torch finds at random inputs. (The dynamo exporter unrolls the loop into
MatMul and Tanh nodes: another graph, so another figure, with the same verdict.)"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit
from tests.jacobians import max_jacobian_norm


class _Sequence(nn.Module):
    def __init__(self, **options) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.cell = nn.RNN(4, 5, **options)
        width = 10 if options.get("bidirectional") else 5
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.cell(x)[0])


CASES = {
    "tanh": ({}, (3, 1, 4)),
    "relu-batch-first": ({"nonlinearity": "relu", "batch_first": True}, (1, 3, 4)),
    "two-layers-bidirectional": ({"num_layers": 2, "bidirectional": True}, (3, 2, 4)),
}


def _save(kind: str, module: nn.Module, shape: tuple[int, ...], folder: Path) -> Path:
    example = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "onnx":
            path = folder / "model.onnx"
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17)
        elif kind == "traced":
            path = folder / "model.pt"
            torch.jit.save(torch.jit.trace(module, example), str(path))
        else:
            path = folder / "model.pt2"
            torch.export.save(torch.export.export(module, (example,)), str(path))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_path_gives_one_sound_figure(case: str, tmp_path: Path) -> None:
    options, shape = CASES[case]
    module = _Sequence(**options).eval()
    figures = []
    for kind in ("onnx", "traced", "export"):
        report = audit(str(_save(kind, module, shape, tmp_path)))
        assert report.exit_code() == 0, report.network.unsupported
        figures.append(report.upper_bound)
    assert all(math.isclose(f, figures[0], rel_tol=1e-6) for f in figures), figures
    seen = max_jacobian_norm(module.double(), shape, samples=32, seed=0)
    assert figures[0] >= seen
