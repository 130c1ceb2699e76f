"""LSTM, GRU and RNN, unrolled: they run as onnxruntime runs them, their ranges contain what they compute,
and their bounds (global, and local on a box) are never below what ascent finds."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from lipaudit.compose import compose, node_factors
from lipaudit.domain import value_ranges
from lipaudit.domain.lower import box_lower_bound
from lipaudit.execute.executor import execute
from lipaudit.load import load_model
from lipaudit.ops import RuleContext
from lipaudit.passes import run_passes
from tests.builders import graph_model, save, session
from tests.domain._containment import assert_ranges_contain_seen
from tests.domain._models import export

STEPS, BATCH, FEATURES, HIDDEN = 4, 2, 3, 3


class TorchRecurrent(torch.nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(7)
        if kind == "lstm":
            self.cell = torch.nn.LSTM(FEATURES, HIDDEN, bidirectional=True)
        elif kind == "gru":
            self.cell = torch.nn.GRU(FEATURES, HIDDEN)
        else:
            self.cell = torch.nn.RNN(FEATURES, HIDDEN, nonlinearity=kind, bidirectional=kind == "relu")

    def forward(self, x):
        return self.cell(x)[0]


def _onnx_cell(op: str, **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(8)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    inits = {
        "w": rng.normal(0, 0.6, (directions, gates * HIDDEN, FEATURES)).astype(np.float32),
        "r": rng.normal(0, 0.6, (directions, gates * HIDDEN, HIDDEN)).astype(np.float32),
        "b": rng.normal(0, 0.3, (directions, 2 * gates * HIDDEN)).astype(np.float32),
    }
    inputs = ["x", "w", "r", "b"]
    if op == "LSTM":
        inits["p"] = rng.normal(0, 0.5, (directions, 3 * HIDDEN)).astype(np.float32)
        inputs += ["", "", "", "p"]
    outputs = ["y", "y_h", "y_c"] if op == "LSTM" else ["y", "y_h"]
    node = helper.make_node(op, inputs, outputs, hidden_size=HIDDEN, **attrs)
    shape = (BATCH, STEPS, FEATURES) if attrs.get("layout") else (STEPS, BATCH, FEATURES)
    return graph_model([node], shape, inits, outputs=outputs)


CASES = {
    "torch-lstm-bidirectional": lambda tmp: export(TorchRecurrent("lstm"), (STEPS, BATCH, FEATURES), tmp),
    "torch-gru": lambda tmp: export(TorchRecurrent("gru"), (STEPS, BATCH, FEATURES), tmp),
    "lstm-peepholes-reverse": lambda tmp: save(_onnx_cell("LSTM", direction="reverse"), tmp),
    "lstm-layout-1": lambda tmp: save(_onnx_cell("LSTM", layout=1, direction="bidirectional"), tmp),
    "gru-reset-after": lambda tmp: save(_onnx_cell("GRU", linear_before_reset=0), tmp),
    "gru-reset-before-bidirectional": lambda tmp: save(
        _onnx_cell("GRU", linear_before_reset=1, direction="bidirectional"), tmp
    ),
    "torch-rnn-tanh": lambda tmp: export(TorchRecurrent("tanh"), (STEPS, BATCH, FEATURES), tmp),
    "torch-rnn-relu-bidirectional": lambda tmp: export(TorchRecurrent("relu"), (STEPS, BATCH, FEATURES), tmp),
    "rnn-tanh-reverse": lambda tmp: save(_onnx_cell("RNN", direction="reverse"), tmp),
    "rnn-relu": lambda tmp: save(_onnx_cell("RNN", activations=["Relu"]), tmp),
}


@pytest.mark.parametrize("case", CASES)
def test_recurrent_cells_run_range_and_bound_soundly(tmp_path, case):
    path = CASES[case](tmp_path)
    graph = run_passes(load_model(path).graph)
    shape = tuple(graph.shape("x"))
    x = np.random.default_rng(9).uniform(-1, 1, shape).astype(np.float32)
    ours = execute(graph, {"x": x})
    if case == "lstm-layout-1":  # onnxruntime runs only layout 0: compare with the same cell there
        reference = session(_onnx_cell("LSTM", direction="bidirectional")).run(None, {"x": x.transpose(1, 0, 2)})
        theirs = [reference[0].transpose(2, 0, 1, 3)] + [r.transpose(1, 0, 2) for r in reference[1:]]
    else:
        theirs = session(onnx.load(str(path))).run(None, {"x": x})
    for name, expected in zip(graph.outputs, theirs):
        np.testing.assert_allclose(ours[name].numpy(), expected, rtol=1e-5, atol=1e-6)

    box = (-1.0, 1.0)
    ranges = value_ranges(graph, {"x": box})
    assert_ranges_contain_seen(graph, ranges, box, samples=8, targets=6, steps=10)
    local = compose(graph, RuleContext(graph, ranges=ranges))
    whole = compose(graph, RuleContext(graph))
    assert local.upper_bound is not None and whole.upper_bound is not None, (local.unsupported, whole.unsupported)
    assert local.upper_bound <= whole.upper_bound
    assert local.upper_bound >= box_lower_bound(graph, {"x": box}, samples=2, steps=20).value
    assert whole.upper_bound >= box_lower_bound(graph, {"x": (-8.0, 8.0)}, samples=2, steps=20).value
    cell = next(node for node in graph.nodes if node.op_type in ("LSTM", "GRU", "RNN"))
    for _output, factor in zip(cell.outputs, node_factors(cell, RuleContext(graph, ranges=ranges))):
        assert factor.method == "domain" and math.isfinite(factor.value)


def test_forms_without_a_rule_are_reported_not_guessed(tmp_path):
    model = _onnx_cell("GRU", activations=["Relu", "Tanh"])
    graph = load_model(save(model, tmp_path), probe=False).graph
    factors = node_factors(graph.nodes[0], RuleContext(graph))
    assert factors[0].status == "unknown" and "activations" in factors[0].reason
    ranges = value_ranges(graph, {"x": (0.0, 1.0)})
    assert not ranges["y"].is_finite()
