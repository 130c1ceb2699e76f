"""Counterexamples a soundness review found: each certified figure must stay above the measured slope."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from lipaudit import audit
from lipaudit.compose import FLOAT32_MARGIN
from tests.builders import graph_model, save, session, single_node_model


def _slope(model, x: np.ndarray, dx: np.ndarray) -> float:
    run = session(model)
    name = run.get_inputs()[0].name
    f = lambda v: run.run(None, {name: v.astype(np.float32)})[0].astype(np.float64)  # noqa: E731
    return float(np.linalg.norm(f(x + dx) - f(x)) / np.linalg.norm(dx))


def _bound(model, tmp_path: Path, **settings) -> float | None:
    return audit(str(save(model, tmp_path)), **settings).upper_bound


def test_default_shrink_jumps_and_is_unbounded(tmp_path: Path) -> None:
    model = single_node_model("Shrink", [1, 4])
    assert _slope(model, np.full((1, 4), 0.5), np.full((1, 4), 1e-4)) > 1000
    assert _bound(model, tmp_path) is None
    soft = single_node_model("Shrink", [1, 4], lambd=0.5, bias=0.5)
    assert _bound(soft, tmp_path) == pytest.approx(1.0, rel=2 * FLOAT32_MARGIN)


def test_cast_to_integers_is_unbounded(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
        helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT),
    ]
    assert _bound(graph_model(nodes, [1, 4], {}), tmp_path, verify=False) is None
    same_type = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
    assert _bound(graph_model(same_type, [1, 4], {}), tmp_path, verify=False) == 1.0


def test_batchnorm_with_a_variable_bias_counts_its_copies(tmp_path: Path) -> None:
    channels, size = 2, 4
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["mx"], axes=[0, 2, 3], keepdims=0),
        helper.make_node("BatchNormalization", ["x", "scale", "mx", "mean", "var"], ["y"], epsilon=1e-5),
    ]
    inits = {
        "scale": np.ones(channels, np.float32),
        "mean": np.zeros(channels, np.float32),
        "var": np.full(channels, 1 - 1e-5, np.float32),
    }
    model = graph_model(nodes, [1, channels, size, size], inits)
    x = np.random.default_rng(0).standard_normal((1, channels, size, size))
    dx = np.zeros_like(x)
    dx[(0, 0) + np.unravel_index(np.argmax(x[0, 0]), (size, size))] = 1e-3
    measured = _slope(model, x, dx)
    assert measured == pytest.approx(np.sqrt(19), rel=1e-3)
    assert _bound(model, tmp_path) >= measured


def test_layernorm_with_a_variable_bias_counts_its_copies(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["mx"], axes=[0, 1], keepdims=0),
        helper.make_node("LayerNormalization", ["x", "gamma", "mx"], ["y"], axis=-1),
    ]
    model = graph_model(nodes, [1, 8, 4], {"gamma": np.full(4, 1e-3, np.float32)})
    x = np.random.default_rng(1).standard_normal((1, 8, 4))
    dx = np.zeros_like(x)
    dx[0, np.argmax(x[0, :, 0]), 0] = 1e-3
    measured = _slope(model, x, dx)
    assert _bound(model, tmp_path) >= measured > 2.5


@pytest.mark.parametrize("pattern", ["softsign", "gelu"])
def test_a_broadcasting_constant_blocks_fusion(tmp_path: Path, pattern: str) -> None:
    """A constant of a larger shape copies x three times: the fused op alone would drop √3."""
    if pattern == "softsign":
        nodes = [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Add", ["a", "c"], ["den"]),
            helper.make_node("Div", ["x", "den"], ["y"]),
        ]
        inits = {"c": np.ones((3, 4), np.float32)}
    else:
        nodes = [
            helper.make_node("Mul", ["x", "c"], ["t"]),
            helper.make_node("Erf", ["t"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["cdf"]),
            helper.make_node("Mul", ["x", "cdf"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"]),
        ]
        inits = {"c": np.full((3, 4), 1 / np.sqrt(2), np.float32), "one": np.float32(1.0), "half": np.float32(0.5)}
    report = audit(str(save(graph_model(nodes, [1, 4], inits), tmp_path)))
    assert pattern.capitalize() not in [layer.op for layer in report.layers]
    assert report.upper_bound is None  # left as a product/quotient of variables: reported, not guessed


def test_a_variable_side_input_is_reported_not_ignored(tmp_path: Path) -> None:
    """Dropout's ratio computed from the input: the identity rule only covers its data input."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Sigmoid", ["m"], ["ratio"]),
        helper.make_node("Dropout", ["x", "ratio"], ["y"]),
    ]
    report = audit(str(save(graph_model(nodes, [1, 4], {}), tmp_path)), verify=False)
    assert report.upper_bound is None
    assert [b.op for b in report.network.unsupported] == ["Dropout"]
