"""The faithfulness check: the IR against onnxruntime (and a torch module), and what happens on a mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from typer.testing import CliRunner

import lipaudit.pipeline as pipeline
from lipaudit import audit
from lipaudit.cli.app import app
from lipaudit.errors import VerificationError
from lipaudit.execute.verify import compare
from lipaudit.execute.verify import verify as verify_against
from lipaudit.load import load_model
from lipaudit.load.probe import probe_module
from lipaudit.passes import run_passes
from lipaudit.report import Report
from tests.builders import graph_model, save


def verify(graph, probe):
    """The verification alone (the shapes it also returns are checked elsewhere)."""
    return verify_against(graph, probe)[0]


SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
runner = CliRunner()


def flip_weight(graph, node_name: str) -> None:
    node = next(n for n in graph.nodes if n.name == node_name)
    weight = graph.values[node.inputs[1]]
    weight.const = -weight.const


@pytest.mark.parametrize("name,shape", [("cnn.onnx", None), ("mlp.onnx", ["x=1x16"]), ("unbounded.onnx", None)])
def test_every_sample_model_verifies(name: str, shape: list[str] | None) -> None:
    report = audit(str(SAMPLES / name), input_shape=shape)
    verification = report.verification
    assert verification.checked is True, verification
    assert verification.inputs >= 1 and verification.reference == "onnxruntime"
    assert 0 <= verification.max_abs_diff < 1e-4


@pytest.mark.parametrize(
    "name,shapes,corrupt",
    [("cnn.onnx", None, "block.conv2"), ("cnn.onnx", None, "stem.conv"), ("mlp.onnx", {"x": (1, 16)}, "fc2")],
)
def test_a_corrupted_ir_fails_and_names_the_node(name: str, shapes, corrupt: str) -> None:
    loaded = load_model(SAMPLES / name, shapes)
    graph = run_passes(loaded.graph)
    assert verify(graph, loaded.probe).checked
    flip_weight(graph, corrupt)
    with pytest.raises(VerificationError, match=f"'{corrupt}'") as caught:
        verify(graph, loaded.probe)
    assert caught.value.node == corrupt


def test_the_first_diverging_node_is_named_not_a_later_one(tmp_path: Path) -> None:
    """In topological order a, b, relu(a), a + b: corrupting a must name a, not relu(a) just before the sum."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Gemm", ["x", "wa"], ["a"], name="a"),
        helper.make_node("Gemm", ["x", "wb"], ["b"], name="b"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "b"], ["y"], name="sum"),
    ]
    weights = {"wa": rng.normal(size=(4, 4)).astype(np.float32), "wb": rng.normal(size=(4, 4)).astype(np.float32)}
    loaded = load_model(save(graph_model(nodes, [1, 4], weights), tmp_path))
    graph = loaded.graph
    assert [n.name for n in graph.nodes] == ["a", "b", "relu", "sum"]
    flip_weight(graph, "a")
    with pytest.raises(VerificationError) as caught:
        verify(graph, loaded.probe)
    assert caught.value.node == "a"


def test_a_node_after_a_cancellation_is_checked_at_the_scale_it_was_computed_from(tmp_path: Path) -> None:
    """relu(x·W₁ − x·W₂) with W₂ ≈ W₁: the difference is small next to the products, whose float32
    rounding it carries; the Relu, which computes the runtime's output from the runtime's inputs,
    gets its tolerance at the scale its input was computed from (a valid model was refused,
    redteam12).  A misread Relu still fails."""
    rng = np.random.default_rng(1)
    first = rng.normal(size=(64, 64)).astype(np.float32)
    second = (first * (1 + 1e-5 * rng.normal(size=first.shape))).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="a"),
        helper.make_node("MatMul", ["x", "w2"], ["b"], name="b"),
        helper.make_node("Sub", ["a", "b"], ["d"], name="difference"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    loaded = load_model(save(graph_model(nodes, [1, 64], {"w1": first, "w2": second}), tmp_path))
    assert verify(loaded.graph, loaded.probe).checked
    relu = next(n for n in loaded.graph.nodes if n.name == "relu")
    relu.op_type = "Abs"
    with pytest.raises(VerificationError) as caught:
        verify(loaded.graph, loaded.probe)
    assert caught.value.node == "relu"


def test_a_small_misreading_that_builds_up_over_layers_fails(tmp_path: Path) -> None:
    """Twenty orthogonal layers with every weight read 0.09 % small: under each node's own
    tolerance, 1.8 % at the end; the check compares the values as they build up (redteam16)."""
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], {}, "x"
    for k in range(20):
        weights[f"w{k}"] = np.linalg.qr(rng.standard_normal((8, 8)))[0].astype(np.float32)
        nodes.append(helper.make_node("MatMul", [previous, f"w{k}"], [f"m{k}"], name=f"m{k}"))
        previous = "y" if k == 19 else f"t{k}"
        if k < 19:
            nodes.append(helper.make_node("Tanh", [f"m{k}"], [previous], name=f"t{k}"))
        else:
            nodes[-1].output[0] = "y"
    loaded = load_model(save(graph_model(nodes, [1, 8], weights), tmp_path))
    for name in weights:
        value = loaded.graph.values[name]
        value.const = (value.const.astype(np.float64) * (1 - 9e-4)).astype(np.float32)
    with pytest.raises(VerificationError):
        verify(loaded.graph, loaded.probe)


def test_cli_mismatch_exits_two_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def corrupting_passes(graph):
        graph = run_passes(graph)
        flip_weight(graph, "block.conv1")
        return graph

    monkeypatch.setattr(pipeline, "run_passes", corrupting_passes)
    result = runner.invoke(app, ["check", str(SAMPLES / "cnn.onnx")])
    assert result.exit_code == 2
    assert result.stdout == ""  # no bound is printed
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("lipaudit: error: ") and "'block.conv1' (Conv)" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  hint: ")


def test_no_verify_records_why() -> None:
    skipped = runner.invoke(
        app, ["check", str(SAMPLES / "mlp.onnx"), "-s", "x=1x16", "--no-verify", "--format", "json"]
    )
    assert skipped.exit_code == 0
    assert json.loads(skipped.stdout)["verification"] == {"checked": False, "reason": "turned off (--no-verify)"}


def test_ops_the_executor_cannot_run_skip_verification_with_a_reason(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Mod", ["x", "m"], ["a"], name="mod", fmod=1),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    path = save(graph_model(nodes, [1, 2, 4, 4], {"m": np.float32(0.7)}), tmp_path)
    result = runner.invoke(app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 3  # still reported as unsupported
    report = json.loads(result.stdout)
    assert report["verification"]["checked"] is False
    assert "cannot execute op Mod" in report["verification"]["reason"]
    assert "not verified" in result.stderr


def test_large_models_skip_by_default_but_verify_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "AUTO_MAX_PARAMETERS", 100)
    report = audit(str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"])
    assert report.verification.checked is False and "parameters" in report.verification.reason
    assert audit(str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"], verify=True).verification.checked is True


def test_older_reports_without_verification_still_load() -> None:
    data = audit(str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"], verify=False).to_dict()
    del data["verification"]
    del data["network"]["lower_bound"]
    report = Report.from_dict(data)
    assert report.verification.checked is False and report.lower_bound is None


def test_a_torch_module_is_a_reference_too(tmp_path: Path) -> None:
    weight = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
        helper.make_node("Tanh", ["h"], ["y"], name="tanh"),
    ]
    graph = load_model(save(graph_model(nodes, [2, 5], {"w": weight}), tmp_path)).graph
    module = torch.nn.Sequential(torch.nn.Linear(5, 3, bias=False), torch.nn.Tanh())
    with torch.no_grad():
        module[0].weight.copy_(torch.from_numpy(weight))
    result = verify(graph, probe_module(module, graph, seed=0))
    assert result.checked and result.reference == "torch"
    with torch.no_grad():
        module[0].weight.mul_(-1)
    with pytest.raises(VerificationError, match="'y'"):
        verify(graph, probe_module(module, graph, seed=0))


def test_compare_tolerates_float32_noise_not_errors() -> None:
    want = np.array([[1.0, -2.0, np.nan, np.inf]], np.float32)
    assert compare(want + np.float32(1e-6), want).ok
    assert not compare(want * np.float32(1.01), want).ok
    assert not compare(np.zeros((2, 4), np.float32), want).ok
    assert not compare(np.array([[1.0, -2.0, 0.0, np.inf]], np.float32), want).ok
    assert compare(np.array([1, 2]), np.array([1, 2], np.int64)).ok


def test_model_with_two_outputs_and_a_concat(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Softmax", ["x"], ["s"], axis=-1),
        helper.make_node("Concat", ["x", "s"], ["c"], axis=1),
        helper.make_node("Sigmoid", ["c"], ["y"]),
    ]
    model = graph_model(nodes, [1, 6], {}, outputs=("y", "s"))
    report = audit(str(save(model, tmp_path)))
    assert report.verification.checked is True
    assert onnx.load(str(tmp_path / "model.onnx")).graph.output[1].name == "s"
