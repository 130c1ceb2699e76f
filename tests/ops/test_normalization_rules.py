"""Normalisation rules against independent truths: onnxruntime operators and torch Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import helper

from lipaudit.compose import FLOAT32_MARGIN
from tests.builders import graph_model, operator_matrix, single_node_model, spectral_norm
from tests.ops._truth import run_audit

RNG = np.random.default_rng(7)


def _affine(channels: int) -> dict[str, np.ndarray]:
    return {"scale": RNG.normal(size=channels).astype(np.float32), "bias": RNG.normal(size=channels).astype(np.float32)}


def test_batchnorm_alone_is_its_operator_norm(tmp_path) -> None:
    inits = {
        **_affine(3),
        "mean": RNG.normal(size=3).astype(np.float32),
        "var": RNG.uniform(0.2, 2.0, size=3).astype(np.float32),
    }
    model = single_node_model("BatchNormalization", [1, 3, 4, 4], inits, inputs=["x", "scale", "bias", "mean", "var"])
    truth = spectral_norm(operator_matrix(model, [1, 3, 4, 4]))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.certified and truth <= layer.factor <= truth * (1 + 2 * FLOAT32_MARGIN + 1e-6)


@pytest.mark.parametrize("epsilon", [1e-5, 1e-2])
def test_layernorm_bound_is_max_gamma_over_root_epsilon_and_holds(tmp_path, epsilon) -> None:
    inits = _affine(6)
    model = single_node_model("LayerNormalization", [2, 6], inits, inputs=["x", "scale", "bias"], epsilon=epsilon)
    layer = run_audit(model, tmp_path).layers[0]
    expected = float(np.abs(inits["scale"]).max()) / math.sqrt(np.float32(epsilon))
    assert layer.factor == pytest.approx(expected * (1 + FLOAT32_MARGIN), rel=1e-6)
    # The slope is largest near a constant row: the Jacobian there has norm max|γ|/√ε exactly.
    gamma, beta = torch.from_numpy(inits["scale"]).double(), torch.from_numpy(inits["bias"]).double()
    for spread in (0.0, 1e-3, 1.0):
        x = torch.ones(6, dtype=torch.float64) + spread * torch.randn(6, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(
            lambda v: torch.nn.functional.layer_norm(v, (6,), gamma, beta, eps=float(np.float32(epsilon))), x
        )
        assert torch.linalg.matrix_norm(jac, ord=2).item() <= layer.factor


@pytest.mark.parametrize("op,attrs", [("InstanceNormalization", {}), ("GroupNormalization", {"num_groups": 3})])
def test_instance_and_group_norm_are_bounded_by_gamma_over_root_epsilon(tmp_path, op, attrs) -> None:
    inits = _affine(3 if op == "InstanceNormalization" else 3)
    model = single_node_model(
        op,
        [1, 3, 4],
        inits,
        inputs=["x", "scale", "bias"],
        opset=21 if attrs else 17,
        output_shape=[1, 3, 4],
        epsilon=1e-3,
        **attrs,
    )
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.certified
    assert layer.factor == pytest.approx(
        np.abs(inits["scale"]).max() / math.sqrt(np.float32(1e-3)) * (1 + FLOAT32_MARGIN), rel=1e-6
    )
    assert "warning" in " ".join(layer.notes)


@pytest.mark.parametrize("op", ["LayerNormalization", "InstanceNormalization"])
def test_zero_epsilon_is_unbounded(tmp_path, op) -> None:
    model = single_node_model(
        op, [1, 3, 4], _affine(3 if op == "InstanceNormalization" else 4), inputs=["x", "scale", "bias"], epsilon=0.0
    )
    report = run_audit(model, tmp_path)
    assert report.upper_bound is None and report.network.unbounded
    assert "ε = 0" in report.network.unbounded[0].reason


def test_layernorm_mean_output_is_a_mean(tmp_path) -> None:
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean"], axis=-1)]
    model = graph_model(nodes, [2, 5], _affine(5), outputs=("mean",))
    truth = spectral_norm(operator_matrix(model, [2, 5]))
    assert truth == pytest.approx(1 / math.sqrt(5), rel=1e-5)
    assert run_audit(model, tmp_path).upper_bound >= truth * (1 - 1e-6)


def test_layernorm_inverse_std_output_bounds_its_slope(tmp_path) -> None:
    epsilon = 0.05
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv"], epsilon=epsilon)]
    model = graph_model(nodes, [1, 4], _affine(4), outputs=("inv",))
    bound = run_audit(model, tmp_path).upper_bound
    # The slope of (var + ε)^(−1/2) peaks where var = ε/2; sample around there.
    k, best = 4, 0.0
    for _ in range(200):
        direction = RNG.normal(size=k)
        direction -= direction.mean()
        x = torch.tensor(
            direction / np.sqrt((direction**2).mean()) * math.sqrt(epsilon / 2) * RNG.uniform(0.5, 1.5),
            requires_grad=True,
        )
        inv = torch.rsqrt(((x - x.mean()) ** 2).mean() + epsilon)
        (grad,) = torch.autograd.grad(inv, x)
        best = max(best, grad.norm().item())
    assert best == pytest.approx(2 / (3 * math.sqrt(3) * epsilon * math.sqrt(k)), rel=0.05)
    assert bound >= best
