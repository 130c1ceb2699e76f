"""A size of a value whose shape the data chooses is a count of data, never a constant (issue 18).

``x * torch.nonzero(x > 0).shape[0]`` is a step function of x: the count jumps as an entry crosses
0, so no Lipschitz constant holds. The TorchScript and torch.export loaders used to fold the
probe run's count into a constant and certify |count|. Each module here must come out not
Lipschitz / unsupported with the reason (exit 3), as its ONNX export does; a size fixed by the
input's shape alone still folds.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit


class _NonZeroCount(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.nonzero(x > 0).shape[0]


class _MaskedCount(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x[x > 0].numel()


class _UniqueCount(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.unique(torch.round(x)).size(0)


class _CountThroughAnOp(nn.Module):
    """The data-shaped value passes through another op before its size is read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.nonzero(x > 0) * 2).shape[0]


class _ShapeOfTheInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.shape[1]


COUNTS = {"nonzero": _NonZeroCount, "masked": _MaskedCount, "unique": _UniqueCount, "through": _CountThroughAnOp}
EXPORTS = ("scripted", "traced", "exported", "onnx")
SHAPE = (2, 5)


def _save(how: str, module: nn.Module, path: Path) -> Path:
    x = torch.randn(SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "scripted":
            torch.jit.script(module).save(str(path.with_suffix(".pt")))
            return path.with_suffix(".pt")
        if how == "traced":
            torch.jit.trace(module, x).save(str(path.with_suffix(".pt")))
            return path.with_suffix(".pt")
        if how == "exported":
            torch.export.save(torch.export.export(module, (x,)), str(path.with_suffix(".pt2")))
            return path.with_suffix(".pt2")
        torch.onnx.export(module, (x,), str(path.with_suffix(".onnx")), dynamo=False)
        return path.with_suffix(".onnx")


@pytest.mark.parametrize("how", EXPORTS)
@pytest.mark.parametrize("count", sorted(COUNTS))
def test_a_count_of_data_is_not_lipschitz(tmp_path: Path, count: str, how: str) -> None:
    path = _save(how, COUNTS[count](), tmp_path / "m")
    report = audit(str(path), input_shape=["2x5"] if how == "scripted" else None, verify=False)
    assert report.exit_code() == 3 and report.upper_bound is None, (report.upper_bound, report.exit_code())
    blockers = report.network.unsupported + report.network.unbounded
    assert blockers  # a reason, never a figure
    if how != "onnx":
        notes = [note for layer in report.layers for note in layer.notes]
        assert any("a count of data is a step function" in note for note in notes), notes


@pytest.mark.parametrize("how", EXPORTS)
def test_a_size_of_the_input_itself_still_folds(tmp_path: Path, how: str) -> None:
    path = _save(how, _ShapeOfTheInput(), tmp_path / "m")
    report = audit(str(path), input_shape=["2x5"] if how == "scripted" else None, verify=False)
    assert report.exit_code() == 0 and report.upper_bound == pytest.approx(5.0, rel=1e-5)
