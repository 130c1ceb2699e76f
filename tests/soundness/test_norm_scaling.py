"""Norms never underflow or overflow to a wrong figure (issue 18).

A float64 weight of 1e-170 squares to 0, one of 1e200 to infinity: a Frobenius norm taken as it is
certified an exact 0 for a map that moves, or crashed. Every figure here is checked against the
map's own operator, materialised independently (onnxruntime in float64 for dense ops, torch's
float64 convolution for Conv and ConvTranspose, which onnxruntime lacks in float64), its σ_max
taken after dividing by its largest entry.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from lipaudit.spectral.scaling import root_sum_squares, unit_scale
from tests.soundness._oracle import session

RNG = np.random.default_rng(0)
# (op, input shape, unit weight, attributes)
OPS = {
    "MatMul": ([2, 6], RNG.standard_normal((6, 5)), {}),
    "Gemm": ([2, 6], RNG.standard_normal((5, 6)), {"transB": 1}),
    "Mul": ([2, 6], RNG.standard_normal((1, 6)), {}),
    "Conv": ([1, 2, 5, 5], RNG.standard_normal((3, 2, 3, 3)), {"pads": [1, 1, 1, 1]}),
    "ConvTranspose": ([1, 2, 3, 3], RNG.standard_normal((2, 3, 3, 3)), {"strides": [2, 2]}),
}
FLOAT64_SCALES = (1e-170, 1e-160, 1e150, 1e200)
FLOAT32_SCALES = (1e-30, 1e30)
CERTIFIED_RTOL = 1e-12  # a certified figure may sit below the materialised σ_max by its rounding only


def _model(op: str, shape: list[int], weight: np.ndarray, attrs: dict, dtype) -> onnx.ModelProto:
    element = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "W"], ["y"], **attrs)],
        "scaled",
        [helper.make_tensor_value_info("x", element, shape)],
        [helper.make_tensor_value_info("y", element, None)],
        [numpy_helper.from_array(weight.astype(dtype), "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)


def _operator_norm(proto: onnx.ModelProto, op: str, shape: list[int], weight: np.ndarray, attrs: dict) -> float:
    n = math.prod(shape)
    columns = []
    if op in ("Conv", "ConvTranspose"):
        kernel = torch.from_numpy(weight.astype(np.float64))
        for i in range(n):
            basis = torch.zeros(n, dtype=torch.float64)
            basis[i] = 1.0
            x = basis.reshape(shape)
            y = F.conv2d(x, kernel, padding=1) if op == "Conv" else F.conv_transpose2d(x, kernel, stride=2)
            columns.append(y.numpy().ravel())
    else:
        run = session(proto)
        dtype = np.float64 if proto.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE else np.float32
        for i in range(n):
            basis = np.zeros(n, dtype)
            basis[i] = 1.0
            columns.append(run.run(None, {"x": basis.reshape(shape)})[0].astype(np.float64).ravel())
    matrix = np.stack(columns, axis=1)
    largest = float(np.abs(matrix).max())
    return float(np.linalg.svd(matrix / largest, compute_uv=False)[0]) * largest


CASES = [(op, scale, np.float64) for op in OPS for scale in FLOAT64_SCALES] + [
    (op, scale, np.float32) for op in OPS for scale in FLOAT32_SCALES
]


@pytest.mark.parametrize("op, scale, dtype", CASES, ids=[f"{o}-{s:g}-{d.__name__}" for o, s, d in CASES])
def test_tiny_and_huge_weights_get_their_true_figure(tmp_path: Path, op: str, scale: float, dtype) -> None:
    from lipaudit import audit

    shape, unit, attrs = OPS[op]
    weight = (unit * scale).astype(dtype)
    proto = _model(op, shape, weight, attrs, dtype)
    truth = _operator_norm(proto, op, shape, weight.astype(np.float64), attrs)
    assert truth > 0 and math.isfinite(truth)
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    for method, bound in (("auto", "recursion"), ("gram", "product"), ("frobenius", "product")):
        network = audit(str(path), method=method, bound=bound, verify=False).to_dict()["network"]
        upper = network["upper_bound"]
        assert network["certified"], (method, bound, network)
        assert upper is not None and upper >= truth * (1 - CERTIFIED_RTOL), (method, bound, upper, truth)
        assert upper <= truth * 10, (method, bound, upper, truth)  # and not an overflowed or useless figure


def test_a_norm_is_zero_only_for_the_zero_matrix() -> None:
    assert root_sum_squares([1e-170, 1e-170]) == pytest.approx(math.sqrt(2) * 1e-170, rel=1e-15)
    assert root_sum_squares([1e200, 1e200]) == pytest.approx(math.sqrt(2) * 1e200, rel=1e-15)
    assert root_sum_squares([0.0, 0.0]) == 0.0
    assert unit_scale(1e-170) > 1e-170 and unit_scale(1e-170) <= 2e-170
    assert unit_scale(0.0) == 1.0


CIRCULAR_CASES = [
    pytest.param(1e-170, "product", id="tiny-product"),
    pytest.param(1e200, "product", id="huge-product"),
    pytest.param(1e200, "recursion", id="huge-recursion"),
    pytest.param(1e-170, "recursion", id="tiny-recursion"),
]


@pytest.mark.parametrize("scale, bound", CIRCULAR_CASES)
def test_a_circular_convolution_of_tiny_or_huge_weights(tmp_path: Path, scale: float, bound: str) -> None:
    """Pad(wrap) → Conv fuses into one circulant operator, measured at unit scale as well."""
    from lipaudit import audit

    weight = RNG.standard_normal((3, 2, 3, 3)) * scale
    graph = helper.make_graph(
        [
            helper.make_node("Pad", ["x", "pads"], ["p"], mode="wrap"),
            helper.make_node("Conv", ["p", "W"], ["y"], kernel_shape=[3, 3]),
        ],
        "circular",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3, 6, 6])],
        [
            numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
            numpy_helper.from_array(weight, "W"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    proto.ir_version = 9
    path = tmp_path / "circular.onnx"
    onnx.save(proto, str(path))
    n = 2 * 6 * 6
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 2, 6, 6)
    columns = F.conv2d(F.pad(basis, (1, 1, 1, 1), mode="circular"), torch.from_numpy(weight)).reshape(n, -1)
    largest = float(columns.abs().max())
    truth = float(torch.linalg.matrix_norm(columns / largest, ord=2)) * largest
    report = audit(str(path), verify=False, bound=bound)
    assert [layer.op for layer in report.layers] == ["CircularConv"]
    upper = report.network.upper_bound
    assert report.network.certified and upper is not None
    assert truth * (1 - CERTIFIED_RTOL) <= upper <= truth * 10, (upper, truth)


def _chain(kind: str, scales: tuple[float, float]) -> tuple[onnx.ModelProto, list[np.ndarray], list[int]]:
    """Two layers (MatMul or 3x3 Conv) with a ReLU between, float64, weights unit · scale."""
    rng = np.random.default_rng(1)
    if kind == "dense":
        shape, units = [1, 6], [rng.standard_normal((6, 5)), rng.standard_normal((5, 4))]
        layers = [helper.make_node("MatMul", [x, w], [y]) for x, w, y in (("x", "W1", "h"), ("a", "W2", "y"))]
    else:
        shape, units = [1, 2, 5, 5], [rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((2, 3, 3, 3))]
        layers = [
            helper.make_node("Conv", [x, w], [y], pads=[1, 1, 1, 1]) for x, w, y in (("x", "W1", "h"), ("a", "W2", "y"))
        ]
    units = [u / np.abs(u).max() for u in units]
    graph = helper.make_graph(
        [layers[0], helper.make_node("Relu", ["h"], ["a"]), layers[1]],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, shape)],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(u * s, f"W{i + 1}") for i, (u, s) in enumerate(zip(units, scales))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto), units, shape


def _unit_lower_bound(kind: str, units: list[np.ndarray], shape: list[int]) -> float:
    """max ‖J(x)‖ over random inputs of the chain at unit scale: a lower bound on its constant.
    ReLU(c·z) = c·ReLU(z) for c > 0, so the scaled chain's constant is this times s1·s2."""
    w1, w2 = (torch.from_numpy(u) for u in units)

    def f(x: torch.Tensor) -> torch.Tensor:
        if kind == "dense":
            return torch.relu(x @ w1) @ w2
        return F.conv2d(torch.relu(F.conv2d(x, w1, padding=1)), w2, padding=1)

    generator = torch.Generator().manual_seed(0)
    best = 0.0
    for _ in range(20):
        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(f, x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jacobian, ord=2)))
    return best


CHAIN_SCALES = [(1e-170, 1e-130), (1e-130, 1e-170), (1e150, 1e150), (1e-200, 1e200), (1e-170, 1e-170)]


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("scales", CHAIN_SCALES, ids=[f"{a:g}x{b:g}" for a, b in CHAIN_SCALES])
def test_a_chain_of_tiny_or_huge_layers_through_the_recursion(tmp_path: Path, kind: str, scales) -> None:
    """The recursion multiplies the layers' maps: its products must neither underflow to a figure
    below the truth (an exact 0 for 1e-170 · 1e-130) nor overflow; out of float64's safe range it
    keeps the product's figure, itself never rounded below the exact product."""
    from lipaudit.pipeline import audit

    proto, units, shape = _chain(kind, scales)
    path = tmp_path / "chain.onnx"
    onnx.save(proto, str(path))
    unit_path = tmp_path / "unit.onnx"
    onnx.save(_chain(kind, (1.0, 1.0))[0], str(unit_path))
    scale = scales[0] * scales[1]
    truth_at_least = _unit_lower_bound(kind, units, shape) * scale
    unit_product = audit(str(unit_path), bound="product", verify=False).network.upper_bound
    report = audit(str(path), bound="recursion", verify=False)
    upper = report.network.upper_bound
    assert report.network.certified and upper is not None and unit_product is not None
    assert upper > 0.0  # the true constant is positive, however small
    assert upper >= truth_at_least * (1 - CERTIFIED_RTOL), (upper, truth_at_least)
    if scale > 0.0:  # 1e-340 is below float64's range: there only "positive" is asked
        assert upper <= unit_product * scale * 1.01, (upper, unit_product * scale)
