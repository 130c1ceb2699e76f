"""A model that computes in float16 rounds every value to 2⁻¹¹ of its size: the bound is that of
the real-arithmetic function, and the report says so (redteam23)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from lipaudit import audit
from tests.builders import graph_model, save


def test_a_float16_model_is_bounded_in_real_arithmetic_and_says_so(tmp_path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    weight = np.array([[3.0, 0.0], [0.0, -2.0]], np.float16)
    model = graph_model(nodes, (1, 2), {"w": weight}, elem_type=TensorProto.FLOAT16)
    report = audit(save(model, tmp_path))
    assert abs(report.upper_bound - 3.0) < 1e-5
    assert any("computes in float16" in notice for notice in report.notices), report.notices
