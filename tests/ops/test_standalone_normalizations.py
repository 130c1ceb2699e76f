"""RMSNormalization (opset 23, what torch's exporter writes for nn.RMSNorm there) and
MeanVarianceNormalization: their global figures, and local figures against autograd Jacobians of
an independent torch computation at points of the box, which onnxruntime's outputs pin down."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from lipaudit import audit
from tests.builders import graph_model, save, session

GAMMA = np.array([0.5, -2.0, 1.5, 1.0, -0.25, 0.75], np.float32)


def _rms_model(epsilon: float):
    node = helper.make_node("RMSNormalization", ["x", "gamma"], ["y"], axis=-1, epsilon=epsilon)
    return graph_model([node], [2, 6], {"gamma": GAMMA}, opset=23)


def _rms(x: torch.Tensor, epsilon: float) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + epsilon) * torch.as_tensor(GAMMA, dtype=x.dtype)


def _mvn_model():
    """MeanVarianceNormalization → Relu: shape inference leaves the function op's output to the
    runtime's probe; the graph's output is declared, as exporters do."""
    nodes = [helper.make_node("MeanVarianceNormalization", ["x"], ["z"]), helper.make_node("Relu", ["z"], ["y"])]
    model = graph_model(nodes, [2, 3, 2, 2], {})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 2, 2]))
    return model


def _mvn(x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's reading: per channel over N, H, W, divided by σ itself (no ε)."""
    centred = x - x.mean((0, 2, 3), keepdim=True)
    return torch.relu(centred / centred.pow(2).mean((0, 2, 3), keepdim=True).sqrt())


def _largest_jacobian_norm(f, lo: np.ndarray, hi: np.ndarray, samples: int = 64) -> float:
    generator = torch.Generator().manual_seed(0)
    low, high = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    best = 0.0
    for _ in range(samples):
        x = low + (high - low) * torch.rand(low.shape, generator=generator, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(f, x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jacobian, 2)))
    return best


def test_the_torch_readings_are_onnxruntimes() -> None:
    x = np.random.default_rng(1).normal(size=(2, 6)).astype(np.float32)
    got = session(_rms_model(1e-3)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, _rms(torch.as_tensor(x, dtype=torch.float64), 1e-3).numpy(), rtol=1e-5)
    x = np.random.default_rng(2).normal(size=(2, 3, 2, 2)).astype(np.float32)
    got = session(_mvn_model()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, _mvn(torch.as_tensor(x, dtype=torch.float64)).numpy(), rtol=1e-4, atol=1e-5)
    constant = np.ones((2, 3, 2, 2), np.float32)
    assert np.isnan(session(_mvn_model()).run(None, {"x": constant})[0]).all()  # σ = 0: no ε


def test_rms_normalization_globally_is_max_gamma_over_root_epsilon(tmp_path) -> None:
    report = audit(str(save(_rms_model(1e-3), tmp_path)), verify=False)
    assert report.network.certified and report.network.complete
    assert report.upper_bound == pytest.approx(2.0 / math.sqrt(1e-3), rel=1e-6)
    assert report.upper_bound >= 2.0 / math.sqrt(1e-3)


def test_rms_normalization_on_a_box_bounds_the_jacobians_inside_it(tmp_path) -> None:
    report = audit(str(save(_rms_model(1e-5), tmp_path)), input_range="0.5:1", verify=False)
    lower = _largest_jacobian_norm(lambda x: _rms(x, 1e-5), np.full((2, 6), 0.5), np.full((2, 6), 1.0))
    assert report.network.certified
    # the rule's own figure, max|γ|/√(smallest mean square + ε), is within 2× of the sup here
    assert lower <= report.upper_bound <= 2.0 / math.sqrt(0.25 + 1e-5) * (1 + 1e-6)
    assert report.upper_bound <= 2 * lower


def test_mean_variance_normalization_is_not_lipschitz_globally(tmp_path) -> None:
    report = audit(str(save(_mvn_model(), tmp_path)), verify=False)
    assert report.upper_bound is None and not report.network.certified
    (layer,) = [layer for layer in report.layers if layer.op == "MeanVarianceNormalization"]
    assert layer.status == "unbounded" and "no ε" in layer.reason


def test_mean_variance_normalization_around_a_point_bounds_the_jacobians_near_it(tmp_path) -> None:
    centre = np.random.default_rng(3).normal(size=(2, 3, 2, 2)).astype(np.float32)
    radius = 0.05
    report = audit(str(save(_mvn_model(), tmp_path)), around=centre, radius=radius)
    assert report.network.certified and report.upper_bound is not None
    lower = _largest_jacobian_norm(_mvn, centre - radius, centre + radius)
    assert lower <= report.upper_bound <= 3 * lower


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the dynamo exporter needs onnxscript")
def test_torchs_opset_23_rms_norm_gets_the_figure_of_its_opset_18_form(tmp_path) -> None:
    """At opset 23 torch writes nn.RMSNorm as one RMSNormalization; at 18 as Pow/ReduceMean/Sqrt/…"""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.RMSNorm(8), torch.nn.Linear(8, 3)).eval()
    figures = []
    for opset in (18, 23):
        path = tmp_path / f"rms{opset}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.randn(2, 6),), str(path), dynamo=True, opset_version=opset)
        report = audit(str(path), input_range="0.5:1")
        assert report.network.certified and report.exit_code() == 0
        figures.append(report.upper_bound)
    assert figures[1] == pytest.approx(figures[0], rel=1e-6)


def test_mean_variance_normalization_keeps_the_default_axes_a_rank_3_input_has(tmp_path) -> None:
    """Default axes [0, 2, 3] on (N, C, L): onnxruntime normalises over N and L (it was 'could not be
    analysed: tuple index out of range')."""
    model = graph_model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"])], [2, 3, 4], {}, opset=13)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4]))
    centre = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)

    def reference(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean((0, 2), keepdim=True)
        return centred / centred.pow(2).mean((0, 2), keepdim=True).sqrt()

    got = session(model).run(None, {"x": centre})[0]
    np.testing.assert_allclose(got, reference(torch.as_tensor(centre, dtype=torch.float64)).numpy(), atol=1e-4)
    report = audit(str(save(model, tmp_path)), around=centre, radius=0.01)
    assert report.network.certified
    lower = _largest_jacobian_norm(reference, centre - 0.01, centre + 0.01, samples=16)
    assert lower <= report.upper_bound <= 2 * lower
