"""An initializer that is also a graph input is a default a caller may override (IR version 4 on):
lipaudit reads it as the constant, and says so (redteam21)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from lipaudit import audit
from tests.builders import save


def test_an_input_with_a_default_is_read_as_the_constant_and_the_report_says_so(tmp_path) -> None:
    nodes = [helper.make_node("Mul", ["x", "t"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "defaults",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("t", TensorProto.FLOAT, [1], np.array([3.0], np.float32))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    report = audit(save(model, tmp_path))
    assert abs(report.upper_bound - 3.0) < 1e-5
    assert any("input 't' has a default value" in notice for notice in report.notices), report.notices
