"""Rewrites keep the function and tighten the bound: checked against onnxruntime's operator matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from lipaudit import audit
from lipaudit.compose import FLOAT32_MARGIN
from tests.builders import graph_model, operator_matrix, save, spectral_norm

RNG = np.random.default_rng(3)


def _bn_inits(channels: int) -> dict[str, np.ndarray]:
    return {
        "scale": RNG.uniform(0.2, 3.0, channels).astype(np.float32),
        "bias": RNG.normal(size=channels).astype(np.float32),
        "mean": RNG.normal(size=channels).astype(np.float32),
        "var": RNG.uniform(0.1, 2.0, channels).astype(np.float32),
    }


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_batchnorm_folds_into_the_conv_and_matches_the_composite_operator(tmp_path: Path, op: str) -> None:
    groups = 2
    weight_shape = (4, 2, 3, 3) if op == "Conv" else (4, 2, 3, 3)
    inits = {"w": RNG.normal(size=weight_shape).astype(np.float32), **_bn_inits(4)}
    nodes = [
        helper.make_node(op, ["x", "w"], ["c"], name="conv", group=groups, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], name="bn"),
    ]
    model = graph_model(nodes, [1, 4, 5, 5], inits)
    report = audit(str(save(model, tmp_path)))
    assert [layer.op for layer in report.layers] == [op]
    assert any("bn" in note for note in report.layers[0].notes)
    truth = spectral_norm(operator_matrix(model, [1, 4, 5, 5]))
    assert report.upper_bound == pytest.approx(truth, rel=1e-5)


def test_batchnorm_folds_into_gemm(tmp_path: Path) -> None:
    inits = {
        "w": RNG.normal(size=(5, 6)).astype(np.float32),
        "b": RNG.normal(size=5).astype(np.float32),
        **_bn_inits(5),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="fc", transB=1),
        helper.make_node("BatchNormalization", ["g", "scale", "bias", "mean", "var"], ["y"], name="bn"),
    ]
    model = graph_model(nodes, [2, 6], inits)
    report = audit(str(save(model, tmp_path)))
    assert [layer.op for layer in report.layers] == ["Gemm"]
    assert report.upper_bound == pytest.approx(spectral_norm(operator_matrix(model, [2, 6])), rel=1e-5)


def test_batchnorm_is_not_folded_into_a_conv_with_two_readers(tmp_path: Path) -> None:
    inits = {"w": RNG.normal(size=(2, 2, 3, 3)).astype(np.float32), **_bn_inits(2)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Add", ["c", "n"], ["y"], name="add"),
    ]
    model = graph_model(nodes, [1, 2, 4, 4], inits)
    report = audit(str(save(model, tmp_path)))
    assert [layer.op for layer in report.layers] == ["Conv", "BatchNormalization", "Add"]
    bn = report.layers[1]
    epsilon = float(np.float32(1e-5))  # the schema default, as the runtime reads it
    expected = np.max(np.abs(inits["scale"] / np.sqrt(inits["var"].astype(np.float64) + epsilon)))
    assert bn.factor == pytest.approx(expected * (1 + FLOAT32_MARGIN), rel=1e-9)
    assert report.upper_bound >= spectral_norm(operator_matrix(model, [1, 2, 4, 4])) * (1 - 1e-6)
