"""Exporters' spelled-out activations fuse, and look-alikes with other constants do not."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
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


def _softplus_cut(beta: float, threshold: float, dtype: type = np.float32) -> tuple[list, dict]:
    """torch's softplus(x; β, t) as the dynamo exporter writes it: Where(βx > t, x, Softplus(βx)/β)."""
    consts = {"beta": np.array(beta, dtype), "t": np.array(threshold, dtype)}
    nodes = [
        helper.make_node("Mul", ["x", "beta"], ["scaled"]),
        helper.make_node("Softplus", ["scaled"], ["smooth"]),
        helper.make_node("Div", ["smooth", "beta"], ["curve"]),
        helper.make_node("Greater", ["scaled", "t"], ["above"]),
        helper.make_node("Where", ["above", "x", "curve"], ["y"]),
    ]
    if beta == 1.0:
        nodes = [helper.make_node("Softplus", ["x"], ["curve"]), *nodes[3:]]
        nodes[1] = helper.make_node("Greater", ["x", "t"], ["above"])
    return nodes, consts


@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize("verify", [True, False])
def test_softplus_threshold_cut_fuses(tmp_path: Path, beta: float, verify: bool) -> None:
    """At t = 20 the cut's jump (2e-9/β) is below float32 resolution: softplus, slope 1."""
    nodes, consts = _softplus_cut(beta, 20.0)
    report = audit(str(save(graph_model(nodes, [1, 5], consts), tmp_path)), verify=verify)
    assert report.exit_code() == 0
    assert "Where" not in [layer.op for layer in report.layers]
    assert report.upper_bound == pytest.approx(1.0, rel=1e-5)


def test_softplus_cut_with_a_visible_jump_is_not_fused(tmp_path: Path) -> None:
    """At t = 1 the output jumps by log(1 + e) − 1 = 0.31: no Lipschitz constant, as the aten converter says."""
    nodes, consts = _softplus_cut(1.0, 1.0)
    report = audit(str(save(graph_model(nodes, [1, 5], consts), tmp_path)))
    assert report.exit_code() == 3 and report.upper_bound is None
    assert "Where" in [layer.op for layer in report.layers]


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_softplus_cut_in_float64_is_a_step(tmp_path: Path, beta: float) -> None:
    """In float64 the default cut's jump (2e-9/β) is 10⁷ steps: two inputs around x = 20/β show a
    ratio of 5.8e5/β·β², so no figure (it was certified 1.0)."""
    nodes, consts = _softplus_cut(beta, 20.0, np.float64)
    path = save(graph_model(nodes, [1, 5], consts, elem_type=onnx.TensorProto.DOUBLE), tmp_path)
    below, above = 20.0 / beta, np.nextafter(20.0 / beta, 21.0)  # either side of the cut, in float64
    jump = abs(above - np.log1p(np.exp(beta * below)) / beta)
    assert jump / (above - below) > 1e4  # (onnxruntime has no float64 Softplus kernel to show it)
    report = audit(str(path))
    assert report.exit_code() == 3 and report.upper_bound is None
    assert "Where" in [layer.op for layer in report.layers]


def test_torch_dynamo_softplus_export_fuses(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Softplus(beta=2.0), torch.nn.Linear(6, 2)).eval()
    path = tmp_path / "softplus.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 4),), str(path), dynamo=True)
    assert audit(str(path)).exit_code() == 0


@pytest.mark.parametrize("spelling", ["LessOrEqual", "Greater"])
@pytest.mark.parametrize("value,fused", [(0.3, True), (-1.0, False)])
def test_threshold_at_its_own_level_is_a_max(tmp_path: Path, spelling: str, value: float, fused: bool) -> None:
    """torch's threshold(x, t, v): max(x, t) when v = t (slope 1); with v ≠ t it jumps at t."""
    consts = {"t": np.array(0.3, np.float32), "v": np.array(value, np.float32)}
    test = helper.make_node(spelling, ["x", "t"], ["c"])
    pick = ["c", "v", "x"] if spelling == "LessOrEqual" else ["c", "x", "v"]
    nodes = [test, helper.make_node("Where", pick, ["y"])]
    report = audit(str(save(graph_model(nodes, [1, 5], consts), tmp_path)), verify=False)
    if fused:
        # the Max with a constant then reads as Clip(x, t, ∞) (fuse-piecewise)
        assert [layer.op for layer in report.layers] == ["Clip"] and report.upper_bound == 1.0
    else:
        assert report.exit_code() == 3 and report.upper_bound is None
