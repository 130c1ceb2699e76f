"""A bfloat16 torch module (TorchScript or torch.export) is read, probed and verified in its own
precision: numpy has no bfloat16, so its feeds travel as float32 and go back to bfloat16 for the
module, and the comparison tolerates bfloat16's rounding (redteam23: an internal TypeError)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit import audit


@pytest.mark.parametrize("kind", ["traced", "export"])
def test_a_bfloat16_module_is_bounded_and_verified(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval().to(torch.bfloat16)
    example = torch.randn(1, 8, dtype=torch.bfloat16)
    path = tmp_path / ("net.pt" if kind == "traced" else "net.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "traced":
            torch.jit.save(torch.jit.trace(net, example), str(path))
        else:
            torch.export.save(torch.export.export(net, (example,)), str(path))
    network = audit(path, input_shape="1x8").to_dict()["network"]
    assert network["certified"] and network["verified"], network
    wide = net.double()  # the same weights (bfloat16 values are float64 values), exact arithmetic
    points = torch.randn(64, 8, dtype=torch.float64)
    lower = max(float(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(wide, p), 2)) for p in points)
    weights = [layer.weight.detach().numpy() for layer in (wide[0], wide[2])]
    assert lower <= network["upper_bound"] <= np.prod([np.linalg.norm(w, 2) for w in weights]) * (1 + 1e-3)
