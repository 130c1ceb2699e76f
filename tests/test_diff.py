"""`lipaudit diff`: matching by layer name, and the regression gate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit import audit
from lipaudit.cli.app import app
from lipaudit.diff import diff_reports as diff_report_objects
from lipaudit.diff import parse_increase
from lipaudit.report import Report

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
runner = CliRunner()


@pytest.fixture(scope="module")
def base() -> dict:
    return audit(str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"]).to_dict()


def diff_reports(base: dict, new: dict, max_increase: float = 0.0):
    return diff_report_objects(Report.from_dict(base), Report.from_dict(new), max_increase)


def _scaled(report: dict, layer: str, factor: float) -> dict:
    new = copy.deepcopy(report)
    for entry in new["layers"]:
        if entry["name"] == layer:
            entry["factor"] *= factor
    new["network"]["upper_bound"] *= factor
    return new


def test_round_trip_through_json(base: dict) -> None:
    again = Report.from_dict(json.loads(json.dumps(base))).to_dict()
    assert again == base


def test_identical_reports_do_not_regress(base: dict) -> None:
    result = diff_reports(base, base)
    assert not result.regressed and not result.grew and not result.shrank


def test_growth_beyond_the_limit_regresses(base: dict) -> None:
    new = _scaled(base, "fc2", 1.10)
    result = diff_reports(base, new, max_increase=0.05)
    assert result.regressed
    assert [c.name for c in result.grew] == ["fc2"]
    assert result.network_ratio == pytest.approx(1.10)
    assert not diff_reports(base, new, max_increase=0.15).regressed


def test_appeared_and_vanished_layers(base: dict) -> None:
    new = copy.deepcopy(base)
    new["layers"][0]["name"] = "fc1_renamed"
    result = diff_reports(base, new)
    assert [c.name for c in result.appeared] == ["fc1_renamed"]
    assert [c.name for c in result.vanished] == ["fc1"]


def test_losing_the_bound_is_a_regression(base: dict) -> None:
    new = copy.deepcopy(base)
    new["network"]["upper_bound"] = None
    assert diff_reports(base, new, max_increase=10).regressed


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("0.05", 0.05), ("0%", 0.0)])
def test_parse_increase(text: str, value: float) -> None:
    assert parse_increase(text) == pytest.approx(value)


def test_cli_exit_codes(tmp_path: Path, base: dict) -> None:
    base_path, new_path = tmp_path / "base.json", tmp_path / "new.json"
    base_path.write_text(json.dumps(base))
    new_path.write_text(json.dumps(_scaled(base, "fc3", 1.2)))
    grown = runner.invoke(app, ["diff", str(base_path), str(new_path), "--max-increase", "5%"])
    assert grown.exit_code == 1
    assert "fc3" in grown.stdout and "REGRESSED" in grown.stdout
    assert runner.invoke(app, ["diff", str(base_path), str(new_path), "--max-increase", "25%"]).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    broken = runner.invoke(app, ["diff", str(base_path), str(bad)])
    assert broken.exit_code == 2 and "lipaudit: error:" in broken.stderr
