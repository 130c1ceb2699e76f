"""The empirical lower bound: never above the certified bound, close to the truth where the truth is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper
from typer.testing import CliRunner

from lipaudit import audit
from lipaudit.cli.app import app
from lipaudit.execute.empirical_lower_bound import empirical_lower_bound
from lipaudit.load import load_model
from tests.builders import graph_model, save

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
runner = CliRunner()


def spectral(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])


def chain(
    tmp_path: Path, weights: list[np.ndarray], biases: list[np.ndarray] | None = None, activation: str | None = None
) -> Path:
    """x → W1 → [act] → W2 → … with Gemm layers (transB, weights stored as out × in)."""
    nodes, inits, h = [], {}, "x"
    for i, weight in enumerate(weights):
        inits[f"w{i}"] = weight.astype(np.float32)
        inputs = [h, f"w{i}"]
        if biases is not None:
            inits[f"b{i}"] = biases[i].astype(np.float32)
            inputs.append(f"b{i}")
        out = "y" if i == len(weights) - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", inputs, [out], name=f"fc{i}", transB=1))
        if activation and i < len(weights) - 1:
            nodes.append(helper.make_node(activation, [out], [f"a{i}"], name=f"act{i}"))
            out = f"a{i}"
        h = out
    return save(graph_model(nodes, [1, weights[0].shape[1]], inits), tmp_path)


def lower(path: Path, **kwargs) -> float:
    graph = load_model(path).graph
    return empirical_lower_bound(graph, **kwargs).value


def test_single_linear_layer_reaches_its_norm(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).normal(size=(5, 7))
    truth = spectral(weight.astype(np.float32))
    found = lower(chain(tmp_path, [weight]), samples=2, steps=0)
    assert 0.99 * truth <= found <= truth * (1 + 1e-9)


def test_linear_chain_reaches_the_norm_of_the_product(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(12, 9)), rng.normal(size=(10, 12)), rng.normal(size=(4, 10))]
    product = np.eye(9)
    for w in weights:
        product = w.astype(np.float32).astype(np.float64) @ product
    truth = spectral(product)
    found = lower(chain(tmp_path, weights, [rng.normal(size=w.shape[0]) for w in weights]), samples=3, steps=2)
    assert 0.99 * truth <= found <= truth * (1 + 1e-9)


def test_wide_linear_map_by_power_iteration(tmp_path: Path) -> None:
    """More than 64 inputs and outputs: no full Jacobian, power iteration on JᵀJ instead."""
    weight = np.random.default_rng(2).normal(size=(90, 80))
    truth = spectral(weight.astype(np.float32))
    found = lower(chain(tmp_path, [weight]), samples=4, steps=0)
    assert 0.99 * truth <= found <= truth * (1 + 1e-9)


def test_relu_network_with_positive_weights_on_positive_inputs(tmp_path: Path) -> None:
    """Positive weights and biases large enough that every ReLU is on: the network is the linear map ΠW."""
    rng = np.random.default_rng(3)
    weights = [rng.uniform(0.1, 1.0, size=(16, 8)), rng.uniform(0.1, 1.0, size=(12, 16)), rng.uniform(0.1, 1, (3, 12))]
    biases = [np.full(16, 40.0), np.full(12, 40.0), np.zeros(3)]
    product = np.eye(8)
    for w in weights:
        product = w.astype(np.float32).astype(np.float64) @ product
    truth = spectral(product)  # ‖ΠW‖: every ReLU passes through, and no pattern of off units does better
    found = lower(chain(tmp_path, weights, biases, activation="Relu"), samples=4, steps=3)
    assert 0.99 * truth <= found <= truth * (1 + 1e-9)


@pytest.mark.parametrize("activation,seed", [("Relu", 0), ("Tanh", 1), ("Sigmoid", 2), ("LeakyRelu", 3)])
def test_lower_never_exceeds_the_certified_upper_bound(tmp_path: Path, activation: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    widths = [6, 10, 10, 4]
    weights = [rng.normal(size=(b, a)) for a, b in zip(widths, widths[1:])]
    biases = [rng.normal(size=b) for b in widths[1:]]
    report = audit(
        str(chain(tmp_path, weights, biases, activation=activation)), lower_bound=True, samples=6, steps=4, seed=seed
    )
    low, up = report.network.lower_bound, report.upper_bound
    assert low is not None and up is not None
    assert 0 < low <= up
    assert report.network.gap == pytest.approx(up / low)


def test_lower_never_exceeds_the_upper_bound_on_the_sample_cnn() -> None:
    report = audit(str(SAMPLES / "cnn.onnx"), lower_bound=True, samples=3, steps=2)
    assert 0 < report.network.lower_bound <= report.upper_bound
    assert report.settings["lower_bound"] == {"seed": 0, "samples": 3, "steps": 2, "time_limit_s": None}


def test_fixed_seed_is_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = chain(tmp_path, [rng.normal(size=(8, 5)), rng.normal(size=(3, 8))], activation="Tanh")
    graph = load_model(path).graph
    first = empirical_lower_bound(graph, samples=5, steps=4, seed=7)
    again = empirical_lower_bound(graph, samples=5, steps=4, seed=7)
    assert first.value == again.value and first.jacobian_norm == again.jacobian_norm


def test_unbounded_network_gets_a_lower_bound_only(tmp_path: Path) -> None:
    report = audit(str(SAMPLES / "unbounded.onnx"), lower_bound=True, samples=4, steps=4)
    assert report.upper_bound is None and report.network.lower_bound > 0
    assert report.network.gap is None


def test_not_run_means_null() -> None:
    report = audit(str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"])
    assert report.network.lower_bound is None and "lower_bound" not in report.settings


def test_cli_shows_both_ends_and_the_gap() -> None:
    result = runner.invoke(app, ["check", str(SAMPLES / "cnn.onnx"), "--lower-bound"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("Lipschitz interval"))
    report = audit(str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"], lower_bound=True, samples=2, steps=1)
    assert "[" in line and "]" in line and "gap upper/lower" in line
    low, up = (float(v) for v in line.split("[")[1].split("]")[0].split(","))
    assert 0 < low <= up
    assert report.network.lower_bound <= report.upper_bound


def test_cli_json_carries_the_lower_bound(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            str(SAMPLES / "mlp.onnx"),
            "-s",
            "x=1x16",
            "--lower-bound",
            "--samples",
            "3",
            "--steps",
            "2",
            "--seed",
            "5",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0 < report["network"]["lower_bound"] <= report["network"]["upper_bound"]
    assert report["settings"]["lower_bound"] == {"seed": 5, "samples": 3, "steps": 2, "time_limit_s": None}
    assert runner.invoke(app, ["check", str(SAMPLES / "mlp.onnx"), "-s", "x=1x16", "--samples", "0"]).exit_code == 2


class _Views(torch.nn.Module):
    """Reshape, Slice, Expand and a view: the ops whose shape arguments the Jacobians once choked on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        h = self.fc(x).reshape(x.shape[0], 1, 4, 4)
        h = torch.relu(self.conv(h))[:, :, 1:3, :]
        return (h.expand(x.shape[0], 2, 2, 4) * 1.5).flatten(1)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_the_lower_bound_runs_through_reshape_slice_expand_and_views(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    module, example = _Views().eval(), torch.randn(1, 16)
    if kind == "onnx":
        path = tmp_path / "views.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
        report = audit(str(path), input_shape=["x=1x16"], lower_bound=True, samples=2, steps=2)
    else:
        path = tmp_path / "views.pt"
        torch.jit.save(torch.jit.trace(module, example), str(path))
        report = audit(str(path), lower_bound=True, samples=2, steps=2)
    assert not any("no lower bound" in notice for notice in report.notices), report.notices
    assert 0 < report.lower_bound <= report.upper_bound
