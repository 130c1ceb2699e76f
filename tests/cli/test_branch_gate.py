"""--bound and --max-branch-lipschitz from the command line and from [tool.lipaudit]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lipaudit.cli.app import app

runner = CliRunner()
CONTRACTION = 0.6  # each branch layer's spectral norm: Lip(g) ≤ 0.36


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.first, self.second = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        return x + self.second(torch.relu(self.first(x)))


@pytest.fixture(scope="module")
def invertible_resnet(tmp_path_factory) -> Path:
    """Two residual blocks whose branches are certified contractions: an invertible ResNet."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), Block(12), Block(12), nn.Linear(12, 3)).eval()
    with torch.no_grad():
        for block in (model[1], model[2]):
            for layer in (block.first, block.second):
                layer.weight.mul_(CONTRACTION / torch.linalg.matrix_norm(layer.weight, ord=2))
    path = tmp_path_factory.mktemp("iresnet") / "iresnet.onnx"
    torch.onnx.export(model, (torch.randn(1, 8),), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return path


def _json(result) -> dict:
    return json.loads(result.stdout)


def test_branches_are_reported_and_gated(invertible_resnet: Path) -> None:
    passed = runner.invoke(app, ["check", str(invertible_resnet), "--max-branch-lipschitz", "0.9", "-f", "json"])
    assert passed.exit_code == 0, passed.output
    report = _json(passed)
    branches = report["network"]["branches"]
    assert len(branches) == 2
    for branch in branches:
        assert branch["bound"] <= CONTRACTION**2 * 1.001 and branch["ratio"] == branch["bound"]
    assert report["threshold"]["max_branch_lipschitz"] == 0.9 and report["threshold"]["passed"] is True

    failed = runner.invoke(app, ["check", str(invertible_resnet), "--max-branch-lipschitz", "0.1"])
    assert failed.exit_code == 1
    assert "residual branch(es) not below max_branch_lipschitz" in failed.stdout
    assert "invertible" in failed.stdout


def test_the_config_gates_branches_and_picks_the_bound(invertible_resnet: Path, tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lipaudit]\nmax_branch_lipschitz = 0.1\nbound = "product"\n')
    result = runner.invoke(app, ["check", str(invertible_resnet), "--config", str(config), "-f", "json"])
    assert result.exit_code == 1
    report = _json(result)
    assert report["settings"]["bound"] == "product" and report["network"]["method"] == "product"
    assert report["network"]["upper_bound"] == report["network"]["product_bound"]
    assert [violation["limit"] for violation in report["threshold"]["branches"]] == [0.1, 0.1]

    overridden = runner.invoke(
        app,
        [
            "check",
            str(invertible_resnet),
            "--config",
            str(config),
            "--max-branch-lipschitz",
            "1",
            "--bound",
            "recursion",
            "-f",
            "json",
        ],
    )
    assert overridden.exit_code == 0
    network = _json(overridden)["network"]
    assert network["upper_bound"] <= network["product_bound"]


@pytest.mark.parametrize("bad", ['bound = "fast"', 'max_branch_lipschitz = "low"', 'recursion_time = "soon"'])
def test_bad_settings_are_one_line_errors(invertible_resnet: Path, tmp_path: Path, bad: str) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(f"[tool.lipaudit]\n{bad}\n")
    result = runner.invoke(app, ["check", str(invertible_resnet), "--config", str(config)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_unknown_bound_flag_is_a_usage_error(invertible_resnet: Path) -> None:
    result = runner.invoke(app, ["check", str(invertible_resnet), "--bound", "fast"])
    assert result.exit_code == 2
    assert "unknown bound 'fast'" in result.output


def test_a_recursion_out_of_time_keeps_a_certified_figure(invertible_resnet: Path) -> None:
    """With no time at all, every figure is the product's, and a notice says why."""
    result = runner.invoke(app, ["check", str(invertible_resnet), "--recursion-time", "1us", "-f", "json"])
    assert result.exit_code == 2  # not a duration lipaudit reads
    result = runner.invoke(app, ["check", str(invertible_resnet), "--recursion-time", "0.000001", "-f", "json"])
    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["network"]["upper_bound"] == report["network"]["product_bound"]
    assert any("recursion stopped" in notice for notice in report["notices"])
