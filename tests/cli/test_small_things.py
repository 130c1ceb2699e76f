"""The small things a new user meets: thresholds shown with enough digits (and --rtol), JSON without
Infinity or NaN, progress on every stage without colour when asked, notes and timings that read,
the recursion and branches in every format, the lower-bound line of the HTML chart, diff warnings,
--version without torch, shell completion and `ops --format json`."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.cli.progress import audit_progress
from lipaudit.render.html import render_html
from lipaudit.report import Report
from tests.report_schema import check_report_text, strict_loads

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
runner = CliRunner()


def invoke(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", "COLUMNS": "120", **(env or {})})


@pytest.fixture(scope="module")
def nearly_orthogonal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = W x with W orthogonal times 1.000004, in float32: the certified figure is just above 1."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    weight = (q * 1.000004).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="rotate")],
        "rotation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(weight, "W")],
    )
    path = tmp_path_factory.mktemp("orthogonal") / "rotation.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_threshold_comparison_shows_the_digits_that_differ(nearly_orthogonal: Path) -> None:
    result = invoke("check", nearly_orthogonal, "--max-lipschitz", "1")
    assert result.exit_code == 1
    verdict = result.stdout.strip().splitlines()[-1]
    shown_bound, shown_limit = re.fullmatch(r"FAILED  bound (\S+) > (\S+)", verdict).groups()
    assert shown_bound != shown_limit and float(shown_bound) > 1.0
    assert f"Lipschitz bound  {shown_bound}" in result.stdout  # the summary line too, not "1.0000"


def test_rtol_lets_a_float32_orthogonal_net_pass(nearly_orthogonal: Path, tmp_path: Path) -> None:
    result = invoke("check", nearly_orthogonal, "--max-lipschitz", "1", "--rtol", "1e-5")
    assert result.exit_code == 0 and "within rtol 1e-05" in result.stdout
    config = tmp_path / "pyproject.toml"
    config.write_text("[tool.lipaudit]\nmax_lipschitz = 1.0\nrtol = 1e-5\n")
    report = strict_loads(invoke("check", nearly_orthogonal, "--config", config, "-f", "json").stdout)
    assert report["threshold"] == {"max_lipschitz": 1.0, "passed": True, "rtol": 1e-5}
    assert invoke("check", nearly_orthogonal, "--max-lipschitz", "1", "--rtol", "1e-7").exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-lipschitz", "nan"], "--max-lipschitz must be a number, not nan"),
        (["--max-branch-lipschitz", "nan"], "--max-branch-lipschitz must be a number, not nan"),
        (["--rtol", "-1"], "--rtol"),
        (["--rtol", "inf"], "--rtol"),
    ],
)
def test_bad_thresholds_are_clean_errors(args: list[str], message: str) -> None:
    result = invoke("check", SAMPLES / "cnn.onnx", *args)
    assert result.exit_code == 2 and message in result.stderr and "internal error" not in result.stderr


def test_bad_rtol_in_the_config_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lipaudit]\nrtol = "small"\n')
    result = invoke("check", SAMPLES / "cnn.onnx", "--config", config)
    assert result.exit_code == 2 and "rtol must be a number" in result.stderr


def test_json_has_null_and_a_reason_where_a_figure_is_not_finite() -> None:
    result = invoke("check", SAMPLES / "cnn.onnx", "-f", "json", "--max-lipschitz", "inf")
    report = check_report_text(result.stdout)  # strict: Infinity would not parse
    assert report["threshold"]["max_lipschitz"] is None
    assert report["non_finite"] == [
        {
            "field": "threshold.max_lipschitz",
            "value": "+inf",
            "reason": "the figure is +inf, which JSON cannot hold: written as null",
        }
    ]
    back = Report.from_dict(report)
    back.network.branches[0].ratio = float("nan")
    back.network.gap = float("-inf")
    again = check_report_text(back.to_json())
    assert {item["field"] for item in again["non_finite"]} == {"network.branches[0].ratio", "network.gap"}
    assert again["network"]["branches"][0]["ratio"] is None


def test_verbose_notes_are_paragraphs_below_the_table_and_timings_one_line() -> None:
    result = invoke("check", SAMPLES / "cnn.onnx", "-v")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    notes = lines.index("notes:")
    assert lines[notes - 1].startswith("└")  # right below the table
    single_words = [line for line in lines[notes + 1 :] if re.fullmatch(r"\s*\S+\s*", line)]
    assert not single_words
    (timings,) = [line for line in result.stderr.splitlines() if line.startswith("lipaudit: timings")]
    assert re.fullmatch(r"lipaudit: timings: load \d+\.\d\d s · .* · total \d+\.\d\d s", timings), timings


def test_unbounded_is_not_called_incomplete_beside_complete_yes() -> None:
    result = invoke("check", SAMPLES / "unbounded.onnx")
    assert result.exit_code == 3
    assert "complete: yes" in result.stdout and "UNBOUNDED  no finite bound" in result.stdout
    assert "INCOMPLETE" not in result.stdout


def test_markdown_and_html_show_the_recursion_and_the_branches(tmp_path: Path) -> None:
    assert invoke("check", SAMPLES / "cnn.onnx", "-o", tmp_path / "r.md", "-o", tmp_path / "r.html").exit_code == 0
    markdown, page = (tmp_path / "r.md").read_text(), (tmp_path / "r.html").read_text()
    assert "Network bound: " in markdown and "**Residual branches g of x + g(x):** 1" in markdown
    assert "| `block.add` | `stem.relu` |" in markdown
    assert 'id="method"' in page and 'id="branches"' in page and "<td>block.add</td>" in page


def test_the_html_lower_bound_line_sits_at_its_value() -> None:
    report = Report.from_dict(strict_loads(invoke("check", SAMPLES / "cnn.onnx", "-f", "json").stdout))
    report.network.lower_bound = 1e-3  # below every factor and running bound: outside the old scale
    page = render_html(report)
    lower_y = float(re.search(r'<line class="lower"[^>]* y1="([\d.]+)"', page).group(1))
    grid = {
        int(e): float(y) for y, e in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="end">1e(-?\d+)<', page)
    }
    assert -3 in grid and lower_y == pytest.approx(grid[-3] - 4, abs=0.11)  # the label sits 4px below its line


def test_diff_warns_on_another_model_or_other_settings_and_speaks_json(tmp_path: Path) -> None:
    cnn, mlp, product = tmp_path / "cnn.json", tmp_path / "mlp.json", tmp_path / "product.json"
    assert invoke("check", SAMPLES / "cnn.onnx", "-o", cnn).exit_code == 0
    assert invoke("check", SAMPLES / "mlp.onnx", "-s", "x=1x16", "-o", mlp).exit_code == 0
    assert invoke("check", SAMPLES / "cnn.onnx", "--bound", "product", "-o", product).exit_code == 0
    other = invoke("diff", cnn, mlp)
    assert "warning: the reports are of different model files" in other.stderr and "layers differ" in other.stderr
    settings = invoke("diff", cnn, product)
    assert "warning: the reports were made with different settings: bound 'recursion' → 'product'" in settings.stderr
    same = invoke("diff", cnn, cnn, "--format", "json")
    assert same.exit_code == 0
    data = strict_loads(same.stdout)
    assert data["warnings"] == [] and data["regressed"] is False and data["network"]["ratio"] == 1.0
    assert strict_loads(invoke("diff", cnn, mlp, "-f", "json").stdout)["warnings"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda data: data["network"].update(upper_bound="12.5"),
        lambda data: data["layers"][0].update(factor=[1]),
        lambda data: data.update(layers={"a": 1}),
        lambda data: data.update(model=None),
    ],
)
def test_diff_on_a_malformed_report_is_a_clean_error(tmp_path: Path, spoil) -> None:
    good = tmp_path / "good.json"
    assert invoke("check", SAMPLES / "cnn.onnx", "-o", good).exit_code == 0
    data = json.loads(good.read_text())
    spoil(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = invoke("diff", good, bad)
    assert result.exit_code == 2 and "not a valid lipaudit report" in result.stderr
    assert "internal error" not in result.stderr
    infinite = tmp_path / "infinite.json"
    infinite.write_text(good.read_text().replace('"rtol": 0.0', '"rtol": Infinity'))
    assert invoke("diff", good, infinite).exit_code == 2


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("color", [True, False])
def test_progress_shows_a_silent_stage_after_a_second_in_colour_or_not(
    color: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    with audit_progress(enabled=True, color=color) as tracker:
        tracker.on_stage("recursion")  # reports nothing while it works
        time.sleep(1.4)
    drawn = terminal.getvalue()
    assert "tightening (recursion)" in drawn
    colours = re.findall(r"\x1b\[[0-9;]*m", drawn)
    assert bool([code for code in colours if code not in ("\x1b[0m", "\x1b[m")]) is color


def test_the_pipeline_names_every_stage_it_starts() -> None:
    from lipaudit.pipeline import audit

    stages: list[str] = []
    audit(
        str(SAMPLES / "mlp.onnx"), input_shape=["x=1x16"], on_stage=stages.append, lower_bound=True, samples=2, steps=0
    )
    assert stages == ["load", "verify", "layers", "recursion", "lower_bound"]


def test_version_does_not_import_torch() -> None:
    code = (
        "import sys; sys.argv = ['lipaudit', '--version']\n"
        "from lipaudit.cli.app import main\n"
        "main()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"lipaudit \d+\.\d+\.\d+\n", run.stdout)
    assert invoke("--version").stdout == run.stdout


def test_shell_completion_is_offered() -> None:
    result = invoke("--help")
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_ops_speaks_json() -> None:
    result = invoke("ops", "--format", "json")
    assert result.exit_code == 0
    entries = strict_loads(result.stdout)
    conv = next(entry for entry in entries if entry["op"] == "Conv")
    assert conv["certified"] is True and conv["domain"] == "ai.onnx" and conv["since_opset"] == "1"
    assert {"op", "domain", "since_opset", "family", "rule", "certified"} == set(conv)


def test_reports_rendered_by_the_suite_go_through_the_schema_check() -> None:
    from tests.report_schema import CHECKED

    before = CHECKED["reports"]
    assert invoke("check", SAMPLES / "cnn.onnx", "-f", "json").exit_code == 0
    assert CHECKED["reports"] > before  # tests/conftest.py validated it as it was rendered
