"""Products over no entries: a MatMul with a zero-size constant is the zero map, not an op that
could not be analysed (the run had ended incomplete)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.builders import graph_model, operator_matrix, spectral_norm
from tests.ops._truth import run_audit


def test_a_matmul_with_a_zero_size_weight_adds_nothing(tmp_path) -> None:
    weight = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "start", "end", "axis"], ["empty"]),
        helper.make_node("MatMul", ["empty", "Z"], ["nothing"]),
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Add", ["m", "nothing"], ["y"]),
    ]
    constants = {
        "W": weight,
        "Z": np.zeros((0, 3), np.float32),
        "start": np.array([1], np.int64),
        "end": np.array([1], np.int64),
        "axis": np.array([1], np.int64),
    }
    model = graph_model(nodes, [1, 4], constants)
    report = run_audit(model, tmp_path)
    truth = spectral_norm(operator_matrix(model, [1, 4]))
    assert report.network.complete and report.network.certified
    assert truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + 1e-5)
