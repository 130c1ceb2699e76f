"""ONNX asks for unique node names only within one graph, and unnamed nodes get op_index names that
a named node may already use: the analyses key factors and per-neuron slopes by node name, so the
graph makes names unique.  f(x) = relu(relu(x) + relu(−x) + 5) = |x| + 5 has slope 1 on [0.5, 1];
with the two Relus sharing a name, the second's slopes (always on) went to the first and the two
paths cancelled to a certified 1.3e-15 (redteam14)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import lipaudit
from tests.builders import graph_model, save


def _absolute_plus_five(tmp_path, first: str, second: str):
    weights = {
        "W1": np.array([[1.0, -1.0]], np.float32),
        "W2": np.array([[1.0, 0.0], [1.0, 0.0]], np.float32),
        "b2": np.array([5.0, 5.0], np.float32),
        "W3": np.array([[1.0], [0.0]], np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["z1"], name="mm1"),
        helper.make_node("Relu", ["z1"], ["h1"], name=first),
        helper.make_node("MatMul", ["h1", "W2"], ["z2a"], name="mm2"),
        helper.make_node("Add", ["z2a", "b2"], ["z2"], name="add2"),
        helper.make_node("Relu", ["z2"], ["h2"], name=second),
        helper.make_node("MatMul", ["h2", "W3"], ["y"], name="mm3"),
    ]
    return save(graph_model(nodes, [1, 1], weights), tmp_path, "duplicate_names.onnx")


@pytest.mark.parametrize("names", [("act", "act"), ("", "Relu_1")], ids=["same-name", "unnamed-and-generated"])
@pytest.mark.parametrize("box", ["0.5:1", "-1:1"])
def test_two_nodes_with_one_name_keep_their_own_slopes(tmp_path, names, box):
    report = lipaudit.audit(str(_absolute_plus_five(tmp_path, *names)), input_range=box)
    assert report.network.certified
    assert report.upper_bound >= 1.0
    assert len({layer.name for layer in report.layers}) == len(report.layers)


def _two_matmuls(tmp_path, first: str, second: str):
    """x → MatMul (I) → Tanh → MatMul (5·I): layer factors 1 and 5."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"], name=first),
        helper.make_node("Tanh", ["a"], ["b"], name="act"),
        helper.make_node("MatMul", ["b", "W2"], ["y"], name=second),
    ]
    weights = {"W1": np.eye(4, dtype=np.float32), "W2": 5 * np.eye(4, dtype=np.float32)}
    return save(graph_model(nodes, [1, 4], weights), tmp_path, "gated.onnx")


@pytest.mark.parametrize(
    "names,gate", [(("", "MatMul_0"), "MatMul_0"), (("fc", "fc"), "fc")], ids=["generated-name", "written-twice"]
)
def test_a_layer_limit_reaches_the_layer_written_with_that_name(tmp_path, names, gate):
    """A generated name gives way to the one the author wrote, and a node renamed for a name written
    twice keeps that name's limit: the 5·I layer cannot escape a limit of 2 (redteam16)."""
    report = lipaudit.audit(str(_two_matmuls(tmp_path, *names)), max_layer_factor={gate: 2.0})
    assert report.exit_code() == 1
    assert [violation.factor > 4.9 for violation in report.threshold.layers or []] == [True]
