"""LSTM, GRU and RNN nodes written out as the nodes of their cells (lipaudit.passes.unroll_recurrent):
the same function as the op, and on a box the interval-Jacobian engines bound the written-out
cells far below the op's own rule (a product of norms per step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipaudit import audit
from lipaudit.execute import execute
from lipaudit.load import load_model
from lipaudit.passes import run_passes
from lipaudit.passes.unroll_recurrent import unrolled_copy
from tests.domain._models import export
from tests.domain.test_recurrent import CASES


@pytest.mark.parametrize("case", CASES)
def test_a_written_out_cell_computes_what_the_op_computes(tmp_path, case):
    graph = run_passes(load_model(CASES[case](tmp_path)).graph)
    written = unrolled_copy(graph)
    assert written is not None and not any(n.op_type in ("LSTM", "GRU", "RNN") for n in written.nodes)
    assert any(n.op_type in ("LSTM", "GRU", "RNN") for n in graph.nodes)  # the original keeps its op
    x = np.random.default_rng(3).uniform(-2, 2, tuple(graph.shape("x"))).astype(np.float32)
    ours, theirs = execute(graph, {"x": x}), execute(written, {"x": x})
    for name in graph.outputs:
        np.testing.assert_array_equal(ours[name].numpy(), theirs[name].numpy())


class LastState(torch.nn.Module):
    def __init__(self, cell: type[torch.nn.Module]) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.cell = cell(3, 4, batch_first=True)
        self.head = torch.nn.Linear(4, 2)
        self.centre = torch.nn.Parameter(torch.randn(1, 3, 3), requires_grad=False)

    def forward(self, x):
        return self.head(self.cell(x + self.centre)[0][:, -1])


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN], ids=["lstm", "gru", "rnn"])
def test_on_a_box_a_recurrent_net_is_bounded_through_its_written_out_cells(tmp_path, cell):
    net = LastState(cell).eval()
    path = export(net, (1, 3, 3), tmp_path)
    radius = 0.1
    report = audit(path, input_range=f"{-radius}:{radius}")
    network = report.to_dict()["network"]
    op_rule = audit(path, input_range=f"{-radius}:{radius}", bound="product").upper_bound
    assert network["certified"] and network["scope"] == "domain"
    assert any("written out step by step" in notice for notice in report.notices), report.notices
    rng = np.random.default_rng(0)
    largest = 0.0
    for _ in range(40):
        point = torch.tensor(rng.uniform(-radius, radius, (1, 3, 3)))
        jac = torch.autograd.functional.jacobian(lambda z: net.double()(z).reshape(-1), point).reshape(2, -1)
        largest = max(largest, float(torch.linalg.matrix_norm(jac, 2)))
    assert largest <= network["upper_bound"] <= 4 * largest < op_rule, (largest, network["upper_bound"], op_rule)


def test_cells_too_large_to_write_out_keep_the_ops_rule_and_say_why(tmp_path):
    class Long(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.cell = torch.nn.LSTM(8, 16, batch_first=True)

        def forward(self, x):
            return self.cell(x)[0][:, -1]

    path = export(Long().eval(), (1, 12, 8), tmp_path)
    report = audit(path, input_range="-0.1:0.1")
    assert report.to_dict()["network"]["certified"]
    assert any("beyond the engines' limit" in notice for notice in report.notices), report.notices


@pytest.mark.parametrize("cell", [torch.nn.RNN, torch.nn.LSTM], ids=["rnn", "lstm"])
def test_every_export_path_gets_one_local_figure(tmp_path, cell):
    """The dynamo exporter writes nn.RNN's steps out itself, the other paths keep one RNN op: written
    out on the box, both are the same cells and get the same figure (redteam20: 0.466 against 1.105)."""
    from tests.load.torch_nets import save_as

    net = LastState(cell).eval()
    figures = {}
    for kind, name in (("onnx", "m.onnx"), ("onnx-dynamo", "d.onnx"), ("traced", "m.pt"), ("export", "m.pt2")):
        path = save_as(kind, net, (1, 3, 3), tmp_path / name)
        shape = "1x3x3" if kind == "traced" else None
        figures[kind] = audit(path, input_range="-0.1:0.1", input_shape=shape).upper_bound
    # The dynamo graph spells each step with its own glue (its two biases added apart): a few more
    # float32 margins of 2⁻²⁰, nothing more.
    assert max(figures.values()) <= min(figures.values()) * (1 + 1e-5), figures
