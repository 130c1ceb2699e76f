"""--input-range and [tool.lipaudit] input_range; --lower-bound-time; per-layer timings in the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit import audit
from lipaudit.cli.app import app
from lipaudit.config import parse_duration

ROOT = Path(__file__).resolve().parents[2]
UNBOUNDED = ROOT / "sample_models" / "unbounded.onnx"
runner = CliRunner()


def test_an_input_range_gives_a_labelled_local_bound_where_the_global_one_is_unbounded() -> None:
    global_run = runner.invoke(app, ["check", str(UNBOUNDED), "-f", "json"])
    assert global_run.exit_code == 3 and json.loads(global_run.stdout)["network"]["upper_bound"] is None
    local_run = runner.invoke(app, ["check", str(UNBOUNDED), "-f", "json", "--input-range", "0:1"])
    assert local_run.exit_code == 0, local_run.output
    report = json.loads(local_run.stdout)
    assert report["network"]["scope"] == "domain" and report["settings"]["domain"] == {"x": [0.0, 1.0]}
    assert report["network"]["upper_bound"] > 0 and report["network"]["certified"]
    table = runner.invoke(app, ["check", str(UNBOUNDED), "--input-range", "x=0:1"], env={"COLUMNS": "200"})
    assert "LOCAL bound on x ∈ [0, 1]" in table.stdout


def test_the_config_can_set_the_range(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.lipaudit]\ninput_range = {x = [0, 1]}\n", encoding="utf-8")
    result = runner.invoke(app, ["check", str(UNBOUNDED), "-f", "json", "--config", str(tmp_path / "pyproject.toml")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["network"]["scope"] == "domain"


@pytest.mark.parametrize("spec", ["1:0", "a:b", "0:1:2", "y=0:1"])
def test_a_bad_range_is_one_line_and_exit_two(spec: str) -> None:
    result = runner.invoke(app, ["check", str(UNBOUNDED), "--input-range", spec])
    assert result.exit_code == 2 and result.stderr.startswith("lipaudit: error: ")


def test_durations_read_as_seconds() -> None:
    assert parse_duration("60s") == 60 and parse_duration("2min") == 120 and parse_duration(1.5) == 1.5
    assert parse_duration("500ms") == 0.5
    for bad in ("0", "-3s", "soon", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_lower_bound_stops_at_its_time_limit_and_says_so() -> None:
    report = audit(
        str(ROOT / "sample_models" / "cnn.onnx"), lower_bound=True, samples=64, steps=200, lower_bound_time=0.5
    )
    assert report.lower_bound is not None and report.lower_bound <= report.upper_bound
    assert any("time limit" in notice for notice in report.notices)
    assert report.settings["lower_bound"]["time_limit_s"] == 0.5


def test_every_analysed_layer_reports_its_time() -> None:
    report = audit(str(ROOT / "sample_models" / "mlp.onnx"), input_shape=["x=1x16"])
    assert all(layer.seconds is not None and layer.seconds >= 0 for layer in report.layers)
    assert {"load_s", "verify_s", "analyze_s", "total_s"} <= set(report.timings)
