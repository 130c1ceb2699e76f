"""The network figure covers every position of graph.output (issue 18 part 2), and a lower bound
above the upper bound is an error, never a certified figure.

Each case has two padded convolutions in a row (not merged into one: the second reads the padding
zeros), so the recursion's chain norm beats the product of the two norms and the recursion's figure
is the one reported: a name listed twice, the input passed straight to
an output, and an output that is also read inside the graph must each count at their position.
The truth is the onnxruntime map materialised from basis vectors (every output position, as the
runtime returns them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.execute.empirical_lower_bound import LowerBound
from tests.soundness._oracle import FLOAT, assert_sound, model, operator_norm, run_audit, save

A = np.random.default_rng(0).standard_normal((2, 1, 3, 3)).astype(np.float32)
B = np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(np.float32)
NODES = [
    helper.make_node("Conv", ["x", "a"], ["h"], pads=[1, 1, 1, 1]),
    helper.make_node("Conv", ["h", "b"], ["y"], pads=[1, 1, 1, 1]),
]
SHAPES = {"x": [1, 1, 4, 4], "h": [1, 2, 4, 4], "y": [1, 1, 4, 4]}
CASES = {
    "listed twice": ["y", "y"],
    "input as output": ["y", "x"],
    "output also internal": ["h", "y"],
    "internal output listed twice": ["h", "y", "h"],
}


def _model(outputs: list[str]):
    return model(NODES, [("x", FLOAT, SHAPES["x"])], [(n, FLOAT, SHAPES[n]) for n in outputs], {"a": A, "b": B})


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("domain", [False, True])
def test_every_output_position_counts(tmp_path: Path, case: str, domain: bool) -> None:
    proto = _model(CASES[case])
    truth = operator_norm(proto, SHAPES["x"])
    outcome = run_audit(proto, tmp_path, input_range="-1:1" if domain else None)
    # On a domain the interval-Jacobian bound (the norm of the stacked Jacobian) may be lower still.
    reported = outcome.network["method"]
    assert reported.startswith("recursion") or (domain and reported == "interval-jacobian"), outcome.describe()
    assert_sound(outcome, truth)
    # Each output's own figure is within the chain norm's tolerance of its truth, so the network's
    # root sum of squares over the positions is within √(positions) of the stacked map's norm.
    assert outcome.upper_bound <= truth * math.sqrt(len(CASES[case])) * 1.01


def test_a_name_listed_twice_is_tight(tmp_path: Path) -> None:
    proto = _model(["y", "y"])
    truth = operator_norm(proto, SHAPES["x"])
    assert truth == pytest.approx(math.sqrt(2) * operator_norm(_model(["y"]), SHAPES["x"]), rel=1e-5)
    outcome = run_audit(proto, tmp_path)
    assert truth <= outcome.upper_bound <= truth * 1.01
    assert outcome.upper_bound < outcome.network["product_bound"]


def test_the_lower_bound_sees_every_position(tmp_path: Path) -> None:
    proto = _model(["y", "y"])
    outcome = run_audit(proto, tmp_path, lower_bound=True, samples=2, steps=2)
    single = operator_norm(_model(["y"]), SHAPES["x"])
    assert math.sqrt(2) * single * 0.99 <= outcome.network["lower_bound"] <= outcome.upper_bound


def test_a_lower_bound_above_the_upper_bound_exits_2_with_both_figures(tmp_path: Path, monkeypatch) -> None:
    path = save(_model(["y"]), tmp_path)

    def contradicting(graph, **search) -> LowerBound:
        return LowerBound(1e6, 1e6, search["samples"], search["steps"], search["seed"])

    monkeypatch.setattr("lipaudit.pipeline.empirical_lower_bound", contradicting)
    result = CliRunner().invoke(app, ["check", str(path), "--lower-bound", "-f", "json"])
    assert result.exit_code == 2
    assert "contradiction" in result.output and "1000000" in result.output
    upper = json.loads(CliRunner().invoke(app, ["check", str(path), "-f", "json"]).stdout)["network"]["upper_bound"]
    assert f"{upper:.6g}"[:5] in result.output
    assert '"certified"' not in result.stdout  # no report at all, so no certified figure


def test_a_lower_bound_above_an_estimate_is_a_notice_not_an_error(tmp_path: Path, monkeypatch) -> None:
    path = save(_model(["y"]), tmp_path)

    def above(graph, **search) -> LowerBound:
        return LowerBound(1e6, 1e6, search["samples"], search["steps"], search["seed"])

    monkeypatch.setattr("lipaudit.pipeline.empirical_lower_bound", above)
    result = CliRunner().invoke(app, ["check", str(path), "--lower-bound", "--method", "power", "-f", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["network"]["certified"] is False
    assert any("not certified" in notice for notice in report["notices"])
