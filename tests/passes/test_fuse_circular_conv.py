"""A convolution of a circularly padded input fuses into one circulant operator whose norm is the
true one; a pad that makes more outputs than one period stays as it was (and stays sound).

Truth: the torch module (circular padding and convolution) materialised from basis vectors in
float64, then its top singular value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, save
from tests.passes._export import export


def _truth(module: torch.nn.Module, shape: tuple[int, ...]) -> float:
    module = module.double()
    n = int(np.prod(shape[1:]))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape[1:])
    with torch.no_grad():
        bias = module.bias
        module.bias = None
        columns = module(basis).reshape(n, -1)
        module.bias = bias
    module.float()
    return float(torch.linalg.matrix_norm(columns, ord=2))


CASES = {
    "3x3": (torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), (1, 3, 8, 8)),
    "3x3-stride2": (torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="circular"), (1, 3, 8, 6)),
    "5x5-groups": (torch.nn.Conv2d(4, 4, 5, padding=2, groups=2, padding_mode="circular"), (1, 4, 6, 6)),
    "dilated": (torch.nn.Conv2d(2, 3, 3, padding=2, dilation=2, padding_mode="circular"), (1, 2, 7, 7)),
    "1d": (torch.nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular"), (1, 2, 9)),
    "one-axis": (torch.nn.Conv2d(2, 3, (1, 3), padding=(0, 1), padding_mode="circular"), (1, 2, 4, 6)),
}


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_circular_convolutions_get_their_exact_norm(tmp_path: Path, name: str, kind: str) -> None:
    torch.manual_seed(0)
    module, shape = CASES[name]
    path, shapes = export(module, shape, tmp_path, kind)
    report = audit(str(path), input_shape=shapes)
    assert [layer.op for layer in report.layers] == ["CircularConv"], [layer.op for layer in report.layers]
    assert report.verification.checked, report.verification.reason
    truth = _truth(module, shape)
    bound = report.network.upper_bound
    assert report.network.certified
    assert bound >= truth * (1 - 1e-7)
    assert bound <= truth * (1 + 1e-4), (bound, truth)


def test_a_pad_wider_than_one_period_is_not_fused(tmp_path: Path) -> None:
    """Padding 2 on each side with a 3-wide kernel makes H + 2 outputs: entries wrap in twice."""
    module = torch.nn.Conv2d(2, 2, 3, padding=2, padding_mode="circular")
    shape = (1, 2, 5, 5)
    path, _ = export(module, shape, tmp_path)
    report = audit(str(path))
    assert "CircularConv" not in [layer.op for layer in report.layers]
    assert report.network.upper_bound >= _truth(module, shape)


def test_opset_19_wrap_pad_fuses(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).normal(size=(3, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="wrap"),
        helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3]),
    ]
    consts = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w": weight}
    report = audit(str(save(graph_model(nodes, [1, 2, 6, 6], consts, opset=19), tmp_path)))
    assert [layer.op for layer in report.layers] == ["CircularConv"]
    assert report.verification.checked, report.verification.reason
    module = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight))
    truth = _truth(module, (1, 2, 6, 6))
    assert truth * (1 - 1e-7) <= report.network.upper_bound <= truth * (1 + 1e-4)
