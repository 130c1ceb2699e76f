"""`lipaudit check`: exit codes, outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.tight.graph_bound import DEFAULT_RECURSION_BUDGET
from tests.builders import graph_model, save, single_node_model

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env or {})


@pytest.fixture
def scaled_identity(tmp_path: Path) -> Path:
    """y = 3·x: its Lipschitz constant is exactly 3."""
    model = single_node_model("Mul", [1, 4], {"c": np.full((1, 4), 3.0, np.float32)})
    return save(model, tmp_path)


def test_passes_under_the_threshold(scaled_identity: Path) -> None:
    result = invoke("check", str(scaled_identity), "--max-lipschitz", "3.5")
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout
    assert "3.0000" in result.stdout


def test_fails_over_the_threshold(scaled_identity: Path) -> None:
    result = invoke("check", str(scaled_identity), "--max-lipschitz", "2.5")
    assert result.exit_code == 1
    assert "FAILED  bound 3.0000 > 2.5000" in result.stdout


def test_no_threshold_exits_zero(scaled_identity: Path) -> None:
    assert invoke("check", str(scaled_identity)).exit_code == 0


def test_unbounded_model_exits_three_and_names_the_ops() -> None:
    result = invoke("check", str(SAMPLES / "unbounded.onnx"), "--max-lipschitz", "1e9")
    assert result.exit_code == 3
    assert "gated (Mul)" in result.stdout and "exp (Exp)" in result.stdout


def test_allow_incomplete_turns_exit_three_into_a_warning() -> None:
    result = invoke("check", str(SAMPLES / "unbounded.onnx"), "--allow-incomplete")
    assert result.exit_code == 0
    assert "warning" in result.stderr


def test_unknown_ops_are_all_listed_and_exit_three(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Mod", ["x", "m"], ["a"], name="mod", fmod=1),
        helper.make_node("Frobnicate", ["a"], ["y"], name="custom", domain="acme.ops"),
    ]
    model = graph_model(nodes, [1, 2, 4, 4], {"m": np.float32(0.7)})
    model.opset_import.append(helper.make_opsetid("acme.ops", 1))
    # A custom op's output shape cannot be inferred, so declare it as an exporter would.
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 7]))
    path = save(model, tmp_path)
    result = invoke("check", str(path), "--format", "json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert {b["op"] for b in report["network"]["unsupported"]} == {"Mod", "Frobnicate"}
    assert report["network"]["upper_bound"] is None
    assert report["network"]["complete"] is False


def test_json_report_has_the_documented_fields(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = invoke("check", str(SAMPLES / "cnn.onnx"), "--format", "json", "-o", str(out), "--max-lipschitz", "1000")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1
    assert report["tool"]["name"] == "lipaudit"
    assert report["model"]["format"] == "onnx" and report["model"]["opset"] == 17
    assert report["model"]["inputs"] == [{"name": "x", "shape": [1, 3, 32, 32]}]
    assert len(report["model"]["sha256"]) == 64
    assert report["settings"] == {
        "norm": "l2",
        "method": "auto",
        "device": "cpu",
        "bound": "recursion",
        "recursion": {"budget": DEFAULT_RECURSION_BUDGET, "time_limit_s": None},
    }
    assert report["network"]["reproducible"] is True and report["network"]["reproducible_reason"] is None
    assert report["network"]["certified"] is True and report["network"]["complete"] is True
    assert report["network"]["method"] in ("product", "recursion-w2")
    assert report["network"]["upper_bound"] <= report["network"]["product_bound"]
    assert [b["add"] for b in report["network"]["branches"]] == ["block.add"]
    assert report["threshold"] == {"max_lipschitz": 1000.0, "passed": True, "rtol": 0.0}
    conv = next(layer for layer in report["layers"] if layer["op"] == "Conv")
    for key in ("name", "output_shape", "factor", "method", "certified", "estimate", "frobenius", "notes"):
        assert key in conv
    assert any("folded" in note for note in conv["notes"])
    assert not list(tmp_path.glob(".report.json.*"))  # no temp file left behind


def test_json_to_stdout_parses() -> None:
    result = invoke("check", str(SAMPLES / "mlp.onnx"), "--input-shape", "x=2x16", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["model"]["inputs"][0]["shape"] == [2, 16]


def test_cuda_falls_back_with_a_notice_when_absent(scaled_identity: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: no fallback to show")
    result = invoke("check", str(scaled_identity), "--device", "cuda")
    assert result.exit_code == 0
    assert "CUDA is not available" in result.stderr


def _bad_input_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["empty"] = tmp_path / "empty.onnx"
    files["empty"].write_bytes(b"")
    files["random"] = tmp_path / "random.onnx"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    data = (SAMPLES / "cnn.onnx").read_bytes()
    files["truncated"] = tmp_path / "truncated.onnx"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"] = tmp_path / "notes.onnx"
    files["text"].write_text("this is not a model\n")
    files["pickle"] = tmp_path / "model.pt"
    files["pickle"].write_bytes(b"\x80\x04\x95" + b"\x00" * 32)
    broken = single_node_model("Relu", [1, 4])
    broken.graph.node[0].input[0] = "missing"
    files["checker"] = save(broken, tmp_path, "broken.onnx")
    return files


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "text", "pickle", "checker"])
def test_bad_files_give_one_line_and_exit_two(tmp_path: Path, kind: str) -> None:
    path = _bad_input_files(tmp_path)[kind]
    result = invoke("check", str(path))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("lipaudit: error: ")
    assert "Traceback" not in result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("  hint: "))


def test_missing_path_exits_two() -> None:
    result = invoke("check", "does/not/exist.onnx")
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_dynamic_shape_without_input_shape_names_the_input() -> None:
    result = invoke("check", str(SAMPLES / "mlp.onnx"))
    assert result.exit_code == 2
    assert "'x'" in result.stderr and "batch" in result.stderr and "--input-shape" in result.stderr


@pytest.mark.parametrize("shape", ["x=1x3x32", "x=2x3x32x32", "y=1x3x32x32", "1xAx3"])
def test_shape_that_does_not_fit_exits_two(shape: str) -> None:
    result = invoke("check", str(SAMPLES / "cnn.onnx"), "--input-shape", shape)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_unknown_method_and_format_exit_two(scaled_identity: Path) -> None:
    assert invoke("check", str(scaled_identity), "--method", "magic").exit_code == 2
    assert invoke("check", str(scaled_identity), "--format", "yaml").exit_code == 2


def test_debug_variable_shows_the_traceback(tmp_path: Path) -> None:
    path = _bad_input_files(tmp_path)["random"]
    result = invoke("check", str(path), env={"LIPAUDIT_DEBUG": "1"})
    assert result.exit_code != 0
    assert result.exception is not None


def test_unsupported_opset_exits_two(tmp_path: Path) -> None:
    model = single_node_model("Relu", [1, 4], opset=5)
    result = invoke("check", str(save(model, tmp_path)))
    assert result.exit_code == 2
    assert "opset 5" in result.stderr


def test_ops_lists_the_rules() -> None:
    result = invoke("ops")
    assert result.exit_code == 0
    for op in ("Conv", "Gemm", "Relu", "MaxPool", "Softmax"):
        assert op in result.stdout


def test_help_explains_the_exit_codes() -> None:
    result = invoke("check", "--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout
    assert "[tool.lipaudit]" in result.stdout  # not swallowed as console markup
