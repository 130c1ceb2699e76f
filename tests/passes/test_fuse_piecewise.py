"""Activations the ONNX exporters spell out in pieces get the figure of the one op TorchScript and
torch.export write, on the whole space and on a box (where the switching bound must see every value
a rewrite leaves computed): softshrink (legacy nested Wheres, dynamo's Where of |x| > λ),
log-sigmoid (Log(Sigmoid(x)) = −Softplus(−x)) and chains of clamps (one Clip, as dynamo merges
them).  Every path gives one verdict and one figure, never below torch's own Jacobians."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit
from tests.passes._export import export, jacobian_norms, random_points


class _Clamps(nn.Module):
    def forward(self, x):
        return nn.functional.hardtanh(torch.clamp(x, min=0.2), -0.3, 0.3)


ACTIVATIONS = {
    "softshrink": lambda: nn.Softshrink(0.3),
    "log-sigmoid": lambda: nn.LogSigmoid(),
    "clamps": _Clamps,
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), ACTIVATIONS[name](), nn.Linear(8, 3)).eval()


def _dynamo(model: nn.Module, folder: Path) -> Path:
    path = folder / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 6),), str(path), dynamo=True)
    return path


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_export_of_the_activation_gets_one_figure(tmp_path: Path, name: str) -> None:
    model = _model(name)
    figures = {}
    for kind in ("onnx", "torchscript"):
        folder = tmp_path / kind
        folder.mkdir()
        path, shape = export(model, (1, 6), folder, kind)
        for box in (None, "-1:1"):
            report = audit(str(path), input_shape=shape or None, input_range=box)
            assert report.exit_code() == 0 and report.network.certified, report.notices
            figures[kind, box] = report.upper_bound
    if name != "log-sigmoid":
        pytest.importorskip("onnxscript")
        dynamo = _dynamo(model, tmp_path)
        figures["dynamo", None] = audit(str(dynamo)).upper_bound
        figures["dynamo", "-1:1"] = audit(str(dynamo), input_range="-1:1").upper_bound
    for box in (None, "-1:1"):
        assert len({figure for (_, scope), figure in figures.items() if scope == box}) == 1, figures
    truth = jacobian_norms(model.double(), random_points((1, 6), count=20))
    assert truth <= figures["onnx", None]
