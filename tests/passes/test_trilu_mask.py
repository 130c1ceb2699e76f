"""Trilu with a constant offset: a product with its 0/1 mask, against onnxruntime's own Trilu and the
operator's exact norm (the mask keeps some entries: 1; k past the matrix: 0)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.builders import graph_model, operator_matrix
from tests.ops._truth import run_audit, top_singular_value


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [-2, 0, 1, 5])
def test_trilu_with_a_constant_offset_is_its_mask(tmp_path, upper, k):
    nodes = [helper.make_node("Trilu", ["x", "k"], ["t"], upper=upper), helper.make_node("Relu", ["t"], ["y"])]
    model = graph_model(nodes, [2, 3, 4], {"k": np.array(k, np.int64)})
    report = run_audit(model, tmp_path)  # verification runs onnxruntime's Trilu against the mask
    assert report.verification.checked
    truth = top_singular_value(
        operator_matrix(graph_model(nodes[:1], [2, 3, 4], {"k": np.array(k, np.int64)}, outputs=("t",)), [2, 3, 4])
    )
    assert report.network.certified and report.network.complete
    assert report.network.upper_bound >= truth * (1 - 1e-6)
    assert report.network.upper_bound == pytest.approx(truth, abs=1e-5)  # 1, or 0 where k empties the mask


def test_trilu_with_a_variable_offset_stays_unsupported(tmp_path):
    model = graph_model([helper.make_node("Trilu", ["x", "k"], ["y"])], [3, 3], {})
    model.graph.input.append(helper.make_tensor_value_info("k", 7, []))
    report = run_audit(model, tmp_path)
    assert "Trilu" in [b.op for b in report.network.unsupported]
