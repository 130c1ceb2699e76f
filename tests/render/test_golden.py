"""What users see, compared byte for byte (torchinfo style). Refresh with --update-golden."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
runner = CliRunner()

CASES = {
    "cnn_table.txt": ["check", "sample_models/cnn.onnx", "--max-lipschitz", "100"],
    "cnn_markdown.md": ["check", "sample_models/cnn.onnx", "--format", "markdown", "--max-lipschitz", "100"],
    "mlp_github.txt": ["check", "sample_models/mlp.onnx", "-s", "x=1x16", "--format", "github", "--max-lipschitz", "5"],
    "unbounded_table.txt": ["check", "sample_models/unbounded.onnx"],
    "unbounded_github.txt": ["check", "sample_models/unbounded.onnx", "--format", "github"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_golden(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, CASES[name], env={"NO_COLOR": "1", "COLUMNS": "120"})
    assert result.exit_code in (0, 1, 3), result.output
    golden = GOLDEN / name
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(result.stdout, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run pytest --update-golden"
    assert result.stdout == golden.read_text(encoding="utf-8")
