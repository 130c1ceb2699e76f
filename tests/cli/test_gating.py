"""CI conventions: several outputs, several models, config files, baselines, verbosity and colour."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", **(env or {})})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A team's repository: models/ and a pyproject.toml with [tool.lipaudit]."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("cnn.onnx", "mlp.onnx", "unbounded.onnx"):
        shutil.copy(SAMPLES / name, models / name)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.lipaudit]\nmax_lipschitz = 150\ninput_shape = "1x16"\n\n'
        '[tool.lipaudit.models."models/cnn.onnx"]\ninput_shape = []\n'
        '[tool.lipaudit.models."models/unbounded.onnx"]\ninput_shape = []\n'
    )
    return tmp_path


def test_several_outputs_in_one_run(tmp_path: Path) -> None:
    json_path, html_path, md_path = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"
    result = invoke("check", SAMPLES / "cnn.onnx", "-o", f"json:{json_path}", "-o", f"html:{html_path}", "-o", md_path)
    assert result.exit_code == 0, result.output
    assert json.loads(json_path.read_text())["network"]["certified"] is True
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert md_path.read_text().startswith("### lipaudit")
    assert "Lipschitz bound" in result.stdout  # the table still shows in the log


def test_config_file_supplies_threshold_and_shape(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = invoke("check", "models/mlp.onnx")
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout and "≤ 150.0000" in result.stdout
    flag_wins = invoke("check", "models/mlp.onnx", "--max-lipschitz", "5")
    assert flag_wins.exit_code == 1 and "> 5.0000" in flag_wins.stdout


def test_unknown_config_key_exits_two(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "pyproject.toml").write_text("[tool.lipaudit]\nmax_lipshitz = 3\n")
    monkeypatch.chdir(project)
    result = invoke("check", "models/cnn.onnx")
    assert result.exit_code == 2 and "max_lipshitz" in result.stderr


def test_several_models_print_a_summary_and_exit_with_the_worst(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = invoke("check", "models/cnn.onnx", "models/mlp.onnx", "models/unbounded.onnx")
    assert result.exit_code == 3, result.output
    for name in ("cnn.onnx", "mlp.onnx", "unbounded.onnx"):
        assert name in result.stdout
    assert "PASSED" in result.stdout and "UNBOUNDED" in result.stdout
    reports = invoke("check", "models/cnn.onnx", "models/mlp.onnx", "-o", "json:out/{model}.json")
    assert reports.exit_code == 0, reports.output
    # {model}: the path relative to the working directory, less its suffix
    assert sorted(p.relative_to(project / "out").as_posix() for p in (project / "out").rglob("*.json")) == [
        "models/cnn.json",
        "models/mlp.json",
    ]
    clash = invoke("check", "models/cnn.onnx", "models/mlp.onnx", "-o", "one.html")
    assert clash.exit_code == 2 and "{model}" in clash.stderr


def test_a_load_error_among_several_models_exits_two(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    (project / "models" / "broken.onnx").write_bytes(b"\x08\x07garbage")
    result = invoke("check", "models/mlp.onnx", "models/broken.onnx")
    assert result.exit_code == 2
    assert "broken.onnx" in result.stderr and "ERROR" in result.stdout


def test_layer_limits_from_config_fail_the_gate(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.lipaudit]\ninput_shape = "1x16"\nmax_layer_factor = { "fc2" = 2.0 }\n'
    )
    monkeypatch.chdir(project)
    result = invoke("check", "models/mlp.onnx")
    assert result.exit_code == 1
    assert "layer fc2: factor" in result.stdout and "FAILED  1 layer(s)" in result.stdout


def test_baseline_regression_exits_one(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    assert invoke("check", "models/mlp.onnx", "-f", "json", "-o", "base.json").exit_code == 0
    base = json.loads((project / "base.json").read_text())
    same = invoke("check", "models/mlp.onnx", "--baseline", "base.json")
    assert same.exit_code == 0 and "OK  within" in same.stdout
    base["network"]["upper_bound"] /= 2
    (project / "lower.json").write_text(json.dumps(base))
    grown = invoke("check", "models/mlp.onnx", "--baseline", "lower.json", "--max-increase", "5%")
    assert grown.exit_code == 1 and "REGRESSED" in grown.stdout


def test_quiet_prints_only_the_verdict() -> None:
    result = invoke("check", SAMPLES / "cnn.onnx", "-q", "--max-lipschitz", "1000")
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith("PASSED  bound")


def test_verbose_adds_notes() -> None:
    result = invoke("check", SAMPLES / "cnn.onnx", "-v")
    assert "folded in" in result.stdout and "timings" in result.stderr


def test_threshold_is_compared_at_the_precision_shown() -> None:
    report = json.loads(invoke("check", SAMPLES / "cnn.onnx", "-f", "json").stdout)
    bound = report["network"]["upper_bound"]
    just_below = f"{bound - 1e-7:.10f}"
    result = invoke("check", SAMPLES / "cnn.onnx", "-q", "--max-lipschitz", just_below)
    assert result.exit_code == 1
    shown_bound, shown_limit = result.stdout.split("bound ")[1].split(" > ")
    assert shown_bound.strip() != shown_limit.strip()


def test_color_always_and_never(tmp_path: Path) -> None:
    always = runner.invoke(app, ["check", str(SAMPLES / "cnn.onnx"), "--color", "always"], env={})
    never = runner.invoke(app, ["check", str(SAMPLES / "cnn.onnx"), "--color", "never"], env={})
    assert "\x1b[" in always.stdout and "\x1b[" not in never.stdout
    no_color = runner.invoke(app, ["check", str(SAMPLES / "cnn.onnx")], env={"NO_COLOR": "1"})
    assert "\x1b[" not in no_color.stdout


def test_markdown_and_github_formats() -> None:
    markdown = invoke("check", SAMPLES / "unbounded.onnx", "-f", "markdown")
    assert markdown.exit_code == 3 and "| # | Layer |" in markdown.stdout
    github = invoke("check", SAMPLES / "unbounded.onnx", "-f", "github")
    assert github.stdout.count("::error file=") == 3  # each unbounded op, then the verdict
    failed = invoke("check", SAMPLES / "cnn.onnx", "-f", "github", "--max-lipschitz", "1")
    assert "::error" in failed.stdout and "FAILED" in failed.stdout


def test_ops_docs_are_in_sync() -> None:
    result = invoke("ops", "--format", "markdown")
    docs = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
    assert result.stdout == docs.read_text(encoding="utf-8"), "regenerate: lipaudit ops -f markdown > docs/operators.md"
