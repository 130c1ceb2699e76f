"""Settings precedence: defaults < [tool.lipaudit] < flags; unknown keys are an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from lipaudit.config import Settings, find_pyproject, load_settings, merge_flags
from lipaudit.errors import UsageError

PYPROJECT = """
[project]
name = "team-models"

[tool.lipaudit]
max_lipschitz = 50
method = "gram"
input_shape = "x=1x16"
max_layer_factor = { "fc*" = 5.0, "fc3" = 2.0 }

[tool.lipaudit.models."critics/*.onnx"]
max_lipschitz = 1.0
"""


def _project(tmp_path: Path, text: str = PYPROJECT) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    (tmp_path / "critics").mkdir()
    return tmp_path / "pyproject.toml"


def test_defaults_without_a_file() -> None:
    assert load_settings(None) == Settings()


def test_file_values_and_model_overrides(tmp_path: Path) -> None:
    config = _project(tmp_path)
    general = load_settings(config, tmp_path / "classifier.onnx")
    assert general.max_lipschitz == 50.0 and general.method == "gram" and general.input_shape == ("x=1x16",)
    critic = load_settings(config, tmp_path / "critics" / "wgan.onnx")
    assert critic.max_lipschitz == 1.0 and critic.method == "gram"


def test_flags_override_the_file(tmp_path: Path) -> None:
    settings = merge_flags(load_settings(_project(tmp_path)), max_lipschitz=3.0, method=None, input_shape=None)
    assert settings.max_lipschitz == 3.0 and settings.method == "gram" and settings.input_shape == ("x=1x16",)


def test_layer_limits_take_the_most_specific_glob(tmp_path: Path) -> None:
    settings = load_settings(_project(tmp_path))
    assert settings.layer_limit("fc3") == 2.0
    assert settings.layer_limit("fc1") == 5.0
    assert settings.layer_limit("relu1") is None


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    config = _project(tmp_path, "[tool.lipaudit]\nmax_lipshitz = 3\n")
    with pytest.raises(UsageError, match="max_lipshitz"):
        load_settings(config)


def test_bad_value_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="bad value"):
        load_settings(_project(tmp_path, '[tool.lipaudit]\nmax_lipschitz = "high"\n'))


def test_pyproject_is_found_by_walking_up(tmp_path: Path) -> None:
    config = _project(tmp_path)
    nested = tmp_path / "critics" / "deep"
    nested.mkdir()
    assert find_pyproject(nested) == config
