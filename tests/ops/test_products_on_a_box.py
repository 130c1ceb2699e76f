"""Products of variables on a box: x^y of two variable inputs where x > 0, and ReduceProd. Each gets a
finite local figure (they were refused, x^y with a hint to pass the range that had been passed),
above autograd Jacobians sampled inside the box."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from lipaudit import audit


def _model() -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3]) for name in ("x", "p")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Pow", ["x", "p"], ["y"])], "pow", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_power_of_two_variables_is_bounded_on_a_box_with_a_positive_base(tmp_path) -> None:
    path = tmp_path / "pow.onnx"
    onnx.save(_model(), str(path))
    report = audit(str(path), input_range=["x=0.5:1.5", "p=-1:1"])
    assert report.network.certified and report.upper_bound is not None
    generator = torch.Generator().manual_seed(0)
    lower = 0.0
    for _ in range(200):
        x = 0.5 + torch.rand(3, generator=generator, dtype=torch.float64)
        p = 2 * torch.rand(3, generator=generator, dtype=torch.float64) - 1
        jacobian = torch.cat(torch.autograd.functional.jacobian(torch.pow, (x, p)), dim=1)
        lower = max(lower, float(torch.linalg.matrix_norm(jacobian, 2)))
    assert lower <= report.upper_bound <= 4 * lower


def test_a_base_that_reaches_zero_stays_unbounded_with_the_reason(tmp_path) -> None:
    path = tmp_path / "pow.onnx"
    onnx.save(_model(), str(path))
    report = audit(str(path), input_range=["x=0:1", "p=-1:1"])
    assert report.upper_bound is None
    (layer,) = report.layers
    assert "reaches 0" in (layer.reason or "")
    assert np.isfinite(audit(str(path), input_range=["x=0.5:2", "p=1:3"]).upper_bound)


def test_reduce_prod_on_a_box_bounds_the_jacobians_inside_it(tmp_path) -> None:
    node = helper.make_node("ReduceProd", ["x"], ["y"], axes=[1], keepdims=0)
    graph = helper.make_graph(
        [node],
        "prod",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "prod.onnx"
    onnx.save(model, str(path))
    report = audit(str(path), input_range="-1.5:0.5")
    assert report.network.certified and report.upper_bound is not None
    generator = torch.Generator().manual_seed(0)
    corners = [torch.full((2, 4), -1.5, dtype=torch.float64)]  # where |Π_{j≠i} x_j| is largest
    samples = [-1.5 + 2 * torch.rand(2, 4, generator=generator, dtype=torch.float64) for _ in range(100)]
    lower = 0.0
    for x in corners + samples:
        jacobian = torch.autograd.functional.jacobian(lambda z: z.prod(dim=1), x).reshape(2, 8)
        lower = max(lower, float(torch.linalg.matrix_norm(jacobian, 2)))
    assert lower <= report.upper_bound <= lower * (1 + 1e-5)  # the corner attains it
