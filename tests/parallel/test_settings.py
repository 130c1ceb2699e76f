"""--workers, --ray [ADDRESS], --in-memory-limit and their [tool.lipaudit] keys."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.cli.check import split_ray_address
from lipaudit.config import load_settings, parse_size
from lipaudit.errors import UsageError

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
runner = CliRunner()


def test_ray_takes_an_optional_address_even_where_the_parser_sees_a_model(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.touch()
    assert split_ray_address([model], None, None) == ([model], None)
    assert split_ray_address([model], False, None) == ([model], "")
    assert split_ray_address([model], True, None) == ([model], "local")
    assert split_ray_address([Path("auto"), model], True, None) == ([model], "auto")
    assert split_ray_address([model, Path("ray://head:10001")], True, None) == ([model], "ray://head:10001")
    assert split_ray_address([model, Path("10.0.0.5:6379")], True, None) == ([model], "10.0.0.5:6379")
    assert split_ray_address([model], None, "auto") == ([model], "auto")
    with pytest.raises(UsageError, match="no model"):
        split_ray_address([Path("auto")], True, None)


def test_ray_without_the_package_is_one_line_with_the_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = runner.invoke(app, ["check", str(SAMPLES / "mlp.onnx"), "-s", "1x16", "--ray"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "lipaudit: error: --ray needs the 'ray' package, which is not installed",
        "  hint: install it with: pip install 'lipaudit[ray]'",
    ]


def test_workers_must_be_at_least_one() -> None:
    result = runner.invoke(app, ["check", str(SAMPLES / "mlp.onnx"), "--workers", "0"])
    assert result.exit_code == 2


def test_run_settings_come_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lipaudit]\nworkers = 3\nray = true\nin_memory_limit = "512MiB"\n')
    settings = load_settings(config)
    assert (settings.workers, settings.ray, settings.in_memory_limit) == (3, "local", 512 * 2**20)
    config.write_text('[tool.lipaudit]\nray = "auto"\n')
    assert load_settings(config).ray == "auto"
    config.write_text("[tool.lipaudit]\nray = false\n")
    assert load_settings(config).ray is None


@pytest.mark.parametrize("table", ["workers = 0", 'workers = "4"', "ray = 3", 'in_memory_limit = "lots"'])
def test_bad_run_settings_are_refused(tmp_path: Path, table: str) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(f"[tool.lipaudit]\n{table}\n")
    with pytest.raises(UsageError):
        load_settings(config)


def test_run_settings_cannot_be_set_per_model(tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lipaudit.models."big_*.onnx"]\nworkers = 2\n')
    with pytest.raises(UsageError, match="for the whole run"):
        load_settings(config, tmp_path / "big_1.onnx")


def test_sizes() -> None:
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5 MiB") == 3 * 2**19
    assert parse_size("3GB") == 3 * 10**9
    assert parse_size("3e9") == 3 * 10**9
    assert parse_size(4096) == 4096
    for bad in ("two", "-1", "5PB", True):
        with pytest.raises(ValueError):
            parse_size(bad)
