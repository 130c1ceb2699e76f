"""Pick: entries taken several times (Expand, Tile, wrap/reflect/edge Pad, Gather with repeats).

Its norm is exactly √(most picks of one entry), against the SVD of its matrix; and the recursion now
looks through such a map. A circular convolution of stride 2 that no pass fuses is a wrap Pad, then
a Conv, as `torch.export` keeps it: the Pad had no linear part there, so the figure was the product
(1.63 where the operator's norm is 0.907, and the legacy ONNX export, whose exporter writes the
padding as Slices and a Concat, got 0.907); now both are the operator's norm."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit import audit
from lipaudit.linear_maps import Pick


@pytest.mark.parametrize("seed", range(4))
def test_the_norm_is_the_square_root_of_the_most_picks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    index = rng.integers(-1, 5, size=12)
    pick = Pick.of(index, (3, 4), 5)
    matrix = pick.forward(torch.eye(5, dtype=torch.float64)).reshape(5, 12).T
    assert pick.norm() == pytest.approx(float(torch.linalg.matrix_norm(matrix, ord=2)), rel=1e-12)
    kept = index[index >= 0]
    assert pick.norm() == pytest.approx(math.sqrt(np.bincount(kept).max()) if kept.size else 0.0)


def test_a_pick_refuses_indices_outside_its_input() -> None:
    with pytest.raises(ValueError):
        Pick.of([0, 5], (2,), 5)


def test_a_strided_circular_convolution_gets_the_operators_norm_on_every_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="circular").eval()
    example = torch.randn(1, 2, 6, 5)
    model64 = nn.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="circular").double().eval()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    jacobian = torch.autograd.functional.jacobian(model64, example.double()).reshape(-1, example.numel())
    truth = float(torch.linalg.matrix_norm(jacobian, ord=2))  # the operator's norm (it is linear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp_path / "m.onnx"), dynamo=False)
        torch.export.save(torch.export.export(model, (example,)), str(tmp_path / "m.pt2"))
    figures = [audit(str(tmp_path / name)).upper_bound for name in ("m.onnx", "m.pt2")]
    for figure in figures:
        assert figure is not None and truth * (1 - 1e-7) <= figure <= truth * (1 + 1e-4)
