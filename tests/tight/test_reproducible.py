"""A figure is a function of the file, the flags and the version (issue 18 part 1).

The recursion spends a budget of work counted in its cost model's operations, never seconds: the
same model gives the same figure under another load, another torch thread count, in worker
processes, and from its ONNX, TorchScript and torch.export twins.  A wall-clock limit is used only
on request, and the report then says ``reproducible: false``.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.from_torch import network_from_module
from lipaudit.cli.app import app
from lipaudit.parallel.local import ProcessExecutor
from lipaudit.pipeline import audit
from lipaudit.tight import network_bound
from lipaudit.tight.graph_bound import DEFAULT_RECURSION_BUDGET
from tests.load.torch_nets import save_as

runner = CliRunner()
RELATIVE = 1e-9


class ResidualConvNet(nn.Module):
    """Two residual conv blocks and a head: enough chain norms for the budget to choose among."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)) for _ in range(2)
        )
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for block in self.blocks:
            h = torch.relu(h + block(h))
        return self.head(h.flatten(1))


SHAPE = (1, 2, 5, 5)


def _model() -> nn.Module:
    torch.manual_seed(3)
    return ResidualConvNet().eval()


def _wide_mlp() -> nn.Module:
    """Chain norms of 256×256 matrices: each costs more than the recursion measures for free, so
    the budget decides which are measured."""
    torch.manual_seed(4)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(256, 8)).eval()


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    return save_as("onnx", _wide_mlp(), (1, 256), tmp_path_factory.mktemp("wide") / "wide.onnx")


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("twins")
    model = _model()
    return {
        kind: save_as(kind, model, SHAPE, directory / name)
        for kind, name in (("onnx", "net.onnx"), ("traced", "net.pt"), ("export", "net.pt2"))
    }


def _same(a: float | None, b: float | None) -> bool:
    assert a is not None and b is not None
    return math.isclose(a, b, rel_tol=RELATIVE, abs_tol=0.0)


class _Burner:
    """A thread that keeps a core busy (and the interpreter's lock contended) while the audit runs."""

    def __enter__(self):
        self.stop = threading.Event()

        def burn() -> None:
            x = torch.randn(128, 128)
            while not self.stop.is_set():
                x = torch.tanh(x @ x.T / 128.0)

        self.thread = threading.Thread(target=burn, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()


def test_the_figure_ignores_load_and_thread_count(twins: dict[str, Path]) -> None:
    path = str(twins["onnx"])
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        idle = audit(path)
        torch.set_num_threads(1)
        with _Burner():
            loaded = audit(path)
    finally:
        torch.set_num_threads(saved)
    assert idle.network.method.startswith(("recursion", "LipSDP-Neuron"))  # a residual CNN: the SDP reads convs
    assert idle.upper_bound < idle.network.product_bound
    assert _same(idle.upper_bound, loaded.upper_bound)
    assert [b.bound for b in idle.network.branches] == pytest.approx(
        [b.bound for b in loaded.network.branches], rel=RELATIVE
    )
    assert idle.network.reproducible and idle.network.reproducible_reason is None


def test_workers_give_the_serial_figure(twins: dict[str, Path]) -> None:
    path = str(twins["onnx"])
    serial = audit(path)
    executor = ProcessExecutor(2)
    try:
        parallel = audit(path, executor=executor)
    finally:
        executor.close()
    assert _same(serial.upper_bound, parallel.upper_bound)


def test_onnx_torchscript_and_export_twins_give_one_figure(twins: dict[str, Path]) -> None:
    figures = {kind: audit(str(path)) for kind, path in twins.items()}
    onnx = figures["onnx"]
    assert onnx.network.method.startswith(("recursion", "LipSDP-Neuron"))
    for kind, report in figures.items():
        assert _same(report.network.product_bound, onnx.network.product_bound), kind
        assert _same(report.upper_bound, onnx.upper_bound), kind


def test_a_larger_budget_never_gives_a_larger_figure_and_each_is_repeatable() -> None:
    net = network_from_module(_wide_mlp(), torch.randn(1, 256))
    product = network_bound(net, window=2, budget=None).product
    figures = []
    for work in (0.0, 2e7, 4e7, 8e7, 1.6e8, None):
        first = network_bound(net, window=2, budget=None if work is None else 1.0, work=work).bound
        again = network_bound(net, window=2, budget=None if work is None else 1.0, work=work).bound
        assert first == again
        figures.append(first)
    assert all(later <= earlier for earlier, later in zip(figures, figures[1:]))
    assert figures[0] <= product and figures[-1] < figures[0]


# The `inf` run takes 20 s: in the slow suite, to keep the quick one under its ten minutes.
@pytest.mark.slow
def test_the_budget_flag_is_monotone_and_in_the_settings(wide: Path, tmp_path: Path) -> None:
    path = str(wide)
    small, default = (audit(path, recursion_budget=b) for b in (0.0, DEFAULT_RECURSION_BUDGET))
    # every chain norm through the CLI (one run of `inf`: it is the slow one)
    result = runner.invoke(app, ["check", path, "--recursion-budget", "inf", "-f", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["recursion"]["budget"] is None
    full = report["network"]["upper_bound"]
    assert full <= default.upper_bound <= small.upper_bound <= small.network.product_bound
    assert full < small.upper_bound
    assert small.settings["recursion"] == {"budget": 0.0, "time_limit_s": None}
    config = tmp_path / "pyproject.toml"
    config.write_text("[tool.lipaudit]\nrecursion_budget = 0\n")
    result = runner.invoke(app, ["check", path, "--config", str(config), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert _same(json.loads(result.stdout)["network"]["upper_bound"], small.upper_bound)
    result = runner.invoke(app, ["check", path, "--recursion-budget", "lots"])
    assert result.exit_code == 2 and "--recursion-budget" in result.output


def test_a_time_limit_makes_the_report_not_reproducible(twins: dict[str, Path]) -> None:
    path = str(twins["onnx"])
    result = runner.invoke(app, ["check", path, "--recursion-time", "0.000001", "-f", "json"])
    assert result.exit_code == 0, result.output
    network = json.loads(result.stdout)["network"]
    assert network["reproducible"] is False and "--recursion-time" in network["reproducible_reason"]
    assert network["upper_bound"] == network["product_bound"]  # cut before any target: the product
    table = runner.invoke(app, ["check", path, "--recursion-time", "0.000001"])
    assert "reproducible: no" in table.stdout
    html = runner.invoke(app, ["check", path, "--recursion-time", "0.000001", "-f", "html"])
    assert 'id="reproducible"' in html.stdout


def test_the_lower_bound_has_no_time_limit_by_default_and_a_cut_one_is_marked(twins: dict[str, Path]) -> None:
    path = str(twins["onnx"])
    first = audit(path, lower_bound=True, samples=2, steps=1)
    again = audit(path, lower_bound=True, samples=2, steps=1)
    assert first.lower_bound == again.lower_bound and first.network.reproducible
    assert first.settings["lower_bound"]["time_limit_s"] is None
    cut = audit(path, lower_bound=True, samples=64, steps=200, lower_bound_time=1e-6)
    assert not cut.network.reproducible and "--lower-bound-time" in cut.network.reproducible_reason
