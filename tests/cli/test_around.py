"""--around / --radius on the command line: the JSON settings, the table's scope line, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.domain.around import centre_digest

ROOT = Path(__file__).resolve().parents[2]
UNBOUNDED = ROOT / "sample_models" / "unbounded.onnx"
runner = CliRunner()


def _centre(tmp_path: Path) -> Path:
    model = onnx.load(str(UNBOUNDED))
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    path = tmp_path / "x.npy"
    np.save(path, np.full(shape, 0.5, np.float32))
    return path


def test_around_reports_a_local_bound_with_the_centres_hash(tmp_path: Path) -> None:
    centre = _centre(tmp_path)
    result = runner.invoke(app, ["check", str(UNBOUNDED), "-f", "json", "--around", str(centre), "--radius", "0.01"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["network"]["scope"] == "domain" and report["network"]["upper_bound"] > 0
    [(name, described)] = report["settings"]["around"]["centres"].items()
    assert described["sha256"] == centre_digest(np.load(centre))
    table = runner.invoke(app, ["check", str(UNBOUNDED), "--around", f"x={centre}", "--radius", "0.01"])
    assert "radius 0.01 around x (sha256" in " ".join(table.stdout.split())


@pytest.mark.parametrize(
    "extra",
    [
        ["--radius", "0.1"],
        ["--around", "missing.npy", "--radius", "0.1"],
        ["--around", "CENTRE"],
        ["--around", "CENTRE", "--radius", "0.1", "--input-range", "0:1"],
        ["--around", "y=CENTRE", "--radius", "1"],
    ],
)
def test_around_mistakes_are_one_line_and_exit_two(tmp_path: Path, extra: list[str]) -> None:
    centre = str(_centre(tmp_path))
    result = runner.invoke(app, ["check", str(UNBOUNDED), *[a.replace("CENTRE", centre) for a in extra]])
    assert result.exit_code == 2 and result.stderr.startswith("lipaudit: error: "), result.output


def test_the_config_reads_around_relative_to_itself(tmp_path: Path) -> None:
    _centre(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.lipaudit]\naround = "x=x.npy"\nradius = 0.01\n', encoding="utf-8")
    result = runner.invoke(app, ["check", str(UNBOUNDED), "-f", "json", "--config", str(tmp_path / "pyproject.toml")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["around"]["radius"] == 0.01
