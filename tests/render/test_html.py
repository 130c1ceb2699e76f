"""The HTML report in a real headless Chromium: it renders, logs no errors, one bar per layer."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lipaudit import audit
from lipaudit.render.html import render_html

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    report = audit(str(SAMPLES / "cnn.onnx"))
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path, len(report.layers)


def test_page_is_self_contained(page: tuple[Path, int]) -> None:
    text = page[0].read_text()
    assert not re.search(r"(src|href)=\"https?://", text)
    assert "@import" not in text and "url(" not in text


def test_chart_has_one_bar_per_layer(page: tuple[Path, int]) -> None:
    path, layers = page
    assert path.read_text().count('<rect class="bar"') == layers


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_chromium_renders_it_without_console_errors(page: tuple[Path, int], tmp_path: Path) -> None:
    path, layers = page
    profile = tmp_path / "profile"
    screenshot = tmp_path / "shot.png"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    shot = subprocess.run(
        [*common, f"--screenshot={screenshot}", "--window-size=1200,1600", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    console_errors = [
        line
        for line in (shot.stderr + dom.stderr).splitlines()
        if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
    ]
    assert console_errors == []
    assert dom.stdout.count('class="bar"') == layers
    assert 'id="verdict"' in dom.stdout
