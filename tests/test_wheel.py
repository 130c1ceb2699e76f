"""A wheel builds from the repository, offline, and holds the package, its entry point, the
report's JSON Schema and the license."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_package_and_the_schema(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="the build backend (in the test extra) is needed to build offline")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("lipaudit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "__init__.py",
        "api.py",
        "testing.py",
        "report.py",
        "report_types.py",
        "cli/app.py",
        "render/sarif.py",
    ):
        assert f"lipaudit/{module}" in names
    assert "lipaudit/report.schema.json" in names
    schema = zipfile.ZipFile(wheel).read("lipaudit/report.schema.json")
    assert schema == (ROOT / "docs" / "report.schema.json").read_bytes()
    dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
    assert any(name.startswith(f"{dist_info}/licenses/LICENSE") for name in names)
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "lipaudit = lipaudit.cli.app:main" in entry_points
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
