"""What `check` writes where, and what it refuses before writing anything (redteam23)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={})


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return Path(shutil.copy(SAMPLES / "cnn.onnx", tmp_path / "mlp.onnx"))


def test_a_report_never_overwrites_a_model(mlp: Path) -> None:
    before = mlp.read_bytes()
    for spec in (f"json:{mlp}", f"markdown:{mlp}", str(mlp.parent / "." / mlp.name)):
        result = invoke("check", str(mlp), "-o", spec)
        assert result.exit_code == 2 and "overwrite the model" in result.output, (spec, result.output)
    assert mlp.read_bytes() == before


def test_an_unknown_report_format_before_the_colon_is_refused(mlp: Path, tmp_path: Path) -> None:
    result = invoke("check", str(mlp), "-o", f"xml:{tmp_path / 'r.x'}")
    assert result.exit_code == 2 and "unknown report format 'xml'" in result.output
    assert not list(tmp_path.glob("xml*"))
    empty = invoke("check", str(mlp), "-o", ":r.json")
    assert empty.exit_code == 2 and "no report format before the colon" in empty.output


def test_the_format_asked_for_reaches_stdout_unless_a_file_of_that_format_took_it(mlp: Path, tmp_path: Path) -> None:
    beside = invoke("check", str(mlp), "--format", "json", "-o", f"markdown:{tmp_path / 'r.md'}")
    assert beside.exit_code == 0 and json.loads(beside.stdout)["network"]["upper_bound"] > 0
    assert (tmp_path / "r.md").read_text().strip()
    taken = invoke("check", str(mlp), "--format", "json", "-o", f"json:{tmp_path / 'r.json'}")
    assert taken.exit_code == 0 and taken.stdout == ""


def test_a_failed_run_leaves_no_report_of_an_earlier_run(mlp: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert invoke("check", str(mlp), "-o", f"json:{report}").exit_code == 0 and report.exists()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(mlp.read_bytes()[:100])
    result = invoke("check", str(broken), "-o", f"json:{report}")
    assert result.exit_code == 2 and not report.exists()


@pytest.mark.parametrize("shape", ["x=1xx64", "x=1x64x", "x=1x6_4", "x=1x+64", "=1x64", "x=1x"])
def test_a_malformed_input_shape_is_refused(mlp: Path, shape: str) -> None:
    result = invoke("check", str(mlp), "--input-shape", shape.replace("64", "3x32x32"))
    assert result.exit_code == 2 and "cannot read input shape" in result.output, result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--max-lipschitz", "-1"], "must not be negative"),
        (["--max-increase", "5%"], "--max-increase needs --baseline"),
    ],
)
def test_gate_values_that_cannot_mean_anything_are_refused(mlp: Path, args: list[str], message: str) -> None:
    result = invoke("check", str(mlp), *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_quiet_verdicts_of_several_models_name_their_model(mlp: Path, tmp_path: Path) -> None:
    other = Path(shutil.copy(SAMPLES / "cnn.onnx", tmp_path / "cnn.onnx"))
    result = invoke("check", str(mlp), str(other), "-q")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith(f"{mlp}: ") and lines[1].startswith(f"{other}: "), lines


def test_markdown_keeps_names_with_backticks_and_marks_literal() -> None:
    from lipaudit.render.markdown import _code, _text

    assert _code("a`b") == "``a`b``" and _code("`x") == "`` `x ``" and _code("plain") == "`plain`"
    assert _text("node a_b*c [x]") == "node a\\_b\\*c \\[x\\]"
