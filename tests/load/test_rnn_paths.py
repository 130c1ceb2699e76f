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


class _Projected(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.cell = nn.LSTM(4, 6, batch_first=True, proj_size=3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.cell(x)[0][:, -1])


def test_an_lstm_with_projections_is_unsupported_with_its_reason_on_every_path(tmp_path: Path) -> None:
    """nn.LSTM(proj_size) has no rule: the torch paths name proj_size, and the dynamo exporter's
    file (an LSTM of hidden_size 3 whose cell state has 6 entries, which onnxruntime refuses) is
    called inconsistent, not a numpy broadcasting error."""
    module, example = _Projected().eval(), torch.randn(1, 3, 4)
    archive, dynamo = tmp_path / "model.pt2", tmp_path / "dynamo.onnx"
    torch.export.save(torch.export.export(module, (example,)), str(archive))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(dynamo), dynamo=True)
    for path, words in ((archive, "proj_size"), (dynamo, "inconsistent")):
        report = audit(str(path), verify=False)
        reasons = [blocker.reason for blocker in report.network.unsupported]
        assert report.exit_code() == 3 and any(words in reason for reason in reasons), (path, reasons)
