"""A cast's verdict reads the element type of what it casts, on every path: ONNX shape inference's
types, or the torch paths' traced tensors. float64 → float32 rounds (unbounded); a float32 value
widened to float64 and cast straight back is held exactly."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lipaudit import audit


class Narrowing(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x.float())


class RoundTrip(Narrowing):
    def forward(self, x):
        return self.layer(x.double().float())


def _save(kind: str, module: torch.nn.Module, example: torch.Tensor, folder: Path) -> Path:
    path = folder / {"onnx": "m.onnx", "traced": "m.pt", "export": "m.pt2"}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "onnx":
            torch.onnx.export(module, (example,), str(path), dynamo=False)
        elif kind == "traced":
            torch.jit.save(torch.jit.trace(module, example), str(path))
        else:
            torch.export.save(torch.export.export(module, (example,)), str(path))
    return path


@pytest.mark.parametrize("kind", ["onnx", "traced", "export"])
def test_a_cast_gets_one_verdict_on_every_path(tmp_path: Path, kind: str) -> None:
    narrowing = _save(kind, Narrowing().eval(), torch.randn(1, 4, dtype=torch.float64), tmp_path)
    shape = "1x4" if kind == "traced" else None
    report = audit(narrowing, input_shape=shape).to_dict()["network"]
    assert report["upper_bound"] is None and "float64 to float32" in report["unbounded"][0]["reason"], report
    (tmp_path / "trip").mkdir()
    trip = _save(kind, RoundTrip().eval(), torch.randn(1, 4), tmp_path / "trip")
    module = RoundTrip().eval()
    exact = float(torch.linalg.matrix_norm(module.layer.weight.detach().double(), 2))
    figure = audit(trip, input_shape=shape).upper_bound
    assert figure is not None and exact <= figure <= exact * (1 + 1e-5)
