"""Exporters' spelled-out activations fuse, and look-alikes with other constants do not."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, save


def test_torch_tanh_gelu_export_fuses(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(6, 2))
    path = tmp_path / "gelu_tanh.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 4),), str(path), dynamo=False, opset_version=17)
    report = audit(str(path))
    assert "Gelu" in [layer.op for layer in report.layers]
    assert report.network.certified and not report.network.unbounded


def _tanh_gelu(inner_scale: float, half: float) -> list:
    consts = {
        "three": np.array(3.0, np.float32),
        "k": np.array(0.044715, np.float32),
        "s": np.array(inner_scale, np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(half, np.float32),
    }
    nodes = [
        helper.make_node("Pow", ["x", "three"], ["p"]),
        helper.make_node("Mul", ["p", "k"], ["a"]),
        helper.make_node("Add", ["x", "a"], ["b"]),
        helper.make_node("Mul", ["b", "s"], ["c"]),
        helper.make_node("Tanh", ["c"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["d"]),
        helper.make_node("Mul", ["x", "d"], ["e"]),
        helper.make_node("Mul", ["e", "half"], ["y"]),
    ]
    return nodes, consts


def test_spelled_out_tanh_gelu_fuses(tmp_path: Path) -> None:
    nodes, consts = _tanh_gelu(math.sqrt(2 / math.pi), 0.5)
    report = audit(str(save(graph_model(nodes, [1, 5], consts), tmp_path)))
    assert [layer.op for layer in report.layers] == ["Gelu"]


@pytest.mark.parametrize("inner_scale,half", [(math.sqrt(2 / math.pi) * 1.001, 0.5), (math.sqrt(2 / math.pi), 0.5001)])
def test_other_constants_are_not_taken_for_gelu(tmp_path: Path, inner_scale: float, half: float) -> None:
    """A steeper look-alike has a larger slope than GELU's constant: it must not borrow it."""
    nodes, consts = _tanh_gelu(inner_scale, half)
    report = audit(str(save(graph_model(nodes, [1, 5], consts), tmp_path)))
    assert "Gelu" not in [layer.op for layer in report.layers]
    assert report.upper_bound is None  # x·(…) stays a product of two variables
