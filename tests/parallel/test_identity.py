"""--workers gives the reports a serial run gives, to the last bit and in the same order: for one
model (its layers measured by worker processes) and for several (each model in a worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.parallel.jobs import InlineExecutor
from lipaudit.parallel.local import ProcessExecutor
from lipaudit.pipeline import audit
from tests.parallel import _jobs
from tests.parallel._reference import MODELS, SAMPLES, comparable, serial, serial_report, without_timings

runner = CliRunner()


@pytest.fixture(scope="module")
def pool():
    executor = ProcessExecutor(2)
    yield executor
    executor.close()


@pytest.mark.parametrize("name", list(MODELS))
def test_layers_measured_by_workers_give_the_serial_report(name: str, pool: ProcessExecutor) -> None:
    assert comparable(audit(str(SAMPLES / name), executor=pool, **MODELS[name])) == serial(name)


def test_layers_measured_one_by_one_in_this_process_give_the_serial_report() -> None:
    name = "cnn_torchscript.pt"
    assert comparable(audit(str(SAMPLES / name), executor=InlineExecutor(), **MODELS[name])) == serial(name)


def test_a_layer_whose_worker_dies_is_unknown_and_the_model_incomplete(pool: ProcessExecutor) -> None:
    name = "mlp.onnx"
    reference = serial_report(name)
    victim = "fc2"
    report = audit(str(SAMPLES / name), executor=_jobs.KillingExecutor(pool, victim), **MODELS[name])
    layers = {layer.name: layer for layer in report.layers}
    assert layers[victim].status == "unknown" and layers[victim].factor is None
    assert "could not be measured" in layers[victim].reason and "killed by SIGKILL" in layers[victim].reason
    assert report.upper_bound is None and not report.network.complete and not report.network.certified
    assert report.exit_code() == 3
    assert [b.node for b in report.network.unsupported] == [victim]
    assert any(f"layer '{victim}' (Gemm) was not measured" in notice for notice in report.notices)
    # The layers before it were measured as in the serial run; none after it claims a running bound.
    before = True
    for layer, expected in zip(report.layers, reference.layers):
        if layer.name == victim:
            before = False
            continue
        assert layer.factor == expected.factor
        if before:
            assert layer.running_bound == expected.running_bound
        else:
            assert layer.running_bound is None


def _reports(folder: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(folder.rglob("*.json")):  # {model} keeps the model's folders
        found[path.name] = without_timings(json.loads(path.read_text()))
    return found


def test_a_multi_model_check_with_workers_matches_the_serial_check(tmp_path: Path) -> None:
    names = ["mlp.onnx", "cnn_torchscript.pt", "unbounded.onnx", "missing.onnx"]
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lipaudit.models."mlp.onnx"]\ninput_shape = ["x=1x16"]\n')
    args = ["check", *(str(SAMPLES / n) for n in names), "--config", str(config), "--color", "never"]
    serial_run = runner.invoke(app, [*args, "-o", f"json:{tmp_path / 'serial'}/{{model}}.json"])
    parallel_run = runner.invoke(app, [*args, "--workers", "2", "-o", f"json:{tmp_path / 'parallel'}/{{model}}.json"])
    assert serial_run.exit_code == parallel_run.exit_code == 2, parallel_run.output  # missing.onnx: a load error
    assert parallel_run.stdout == serial_run.stdout
    assert "missing.onnx: no such file" in parallel_run.stderr
    serial_reports, parallel_reports = _reports(tmp_path / "serial"), _reports(tmp_path / "parallel")
    assert len(serial_reports) == 3 and parallel_reports == serial_reports


def test_one_model_with_workers_on_the_command_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(SAMPLES / "cnn_torchscript.pt"), "--workers", "2", "-f", "json"])
    assert result.exit_code == 0, result.output
    data = without_timings(json.loads(result.stdout))
    assert json.dumps(data, sort_keys=True, indent=1) == serial("cnn_torchscript.pt")
