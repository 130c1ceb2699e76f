"""Build tiny ONNX models on the fly, and their ground truth through onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, shape_inference

DEFAULT_OPSET = 17


def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def single_node_model(
    op_type: str,
    input_shape: Sequence[int],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    inputs: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    output_shape: Sequence[int] | None = None,
    **attrs,
) -> onnx.ModelProto:
    """A model computing ``op_type(x, *initializers)``; output shape left to inference unless given."""
    initializers = initializers or {}
    node_inputs = list(inputs) if inputs is not None else ["x", *initializers]
    node = helper.make_node(op_type, node_inputs, ["y"], name=f"{op_type.lower()}0", **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape) if output_shape else None)
    graph = helper.make_graph([node], "single", [x], [y], [tensor(k, v) for k, v in initializers.items()])
    return _finish(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _finish(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill in output types by inference: the checker wants every graph output to have a shape."""
    model.ir_version = min(model.ir_version, 8)
    try:
        return shape_inference.infer_shapes(model)
    except Exception:  # deliberately broken models stay as built
        return model


def graph_model(
    nodes: list[onnx.NodeProto],
    input_shape: Sequence[int],
    initializers: dict[str, np.ndarray],
    *,
    opset: int = DEFAULT_OPSET,
    outputs: Sequence[str] = ("y",),
    input_name: str = "x",
    dynamic_input: Sequence[int | str] | None = None,
    elem_type: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """``elem_type``: the input's and outputs' type (TensorProto.DOUBLE for float64 models, whose
    initializers must then be float64 too)."""
    x = helper.make_tensor_value_info(input_name, elem_type, list(dynamic_input or input_shape))
    outs = [helper.make_tensor_value_info(name, elem_type, None) for name in outputs]
    graph = helper.make_graph(nodes, "net", [x], outs, [tensor(k, v) for k, v in initializers.items()])
    return _finish(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def save(model: onnx.ModelProto, directory: Path, name: str = "model.onnx") -> Path:
    path = Path(directory) / name
    onnx.save(model, str(path))
    return path


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def operator_matrix(model: onnx.ModelProto, input_shape: Sequence[int]) -> np.ndarray:
    """The matrix of a linear (or affine) model, from basis vectors pushed through onnxruntime."""
    run = session(model)
    name = run.get_inputs()[0].name
    n = int(np.prod(input_shape))
    offset = run.run(None, {name: np.zeros(input_shape, np.float32)})[0].astype(np.float64).ravel()
    columns = []
    for i in range(n):
        basis = np.zeros(n, np.float32)
        basis[i] = 1.0
        out = run.run(None, {name: basis.reshape(input_shape)})[0].astype(np.float64).ravel()
        columns.append(out - offset)
    return np.stack(columns, axis=1)


def spectral_norm(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def jacobian_norm_lower_bound(
    model: onnx.ModelProto, input_shape: Sequence[int], *, samples: int = 8, seed: int = 0, eps: float = 1e-3
) -> float:
    """max over random points and directions of ‖f(x+εv) − f(x)‖/‖εv‖: a true lower bound on L."""
    run = session(model)
    name = run.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    best = 0.0
    for _ in range(samples):
        x = rng.normal(size=input_shape)
        # A few power-iteration steps with finite differences find a direction of large stretch.
        v = rng.normal(size=input_shape)
        for _ in range(6):
            v /= np.linalg.norm(v)
            fx = run.run(None, {name: x.astype(np.float32)})[0].astype(np.float64)
            fy = run.run(None, {name: (x + eps * v).astype(np.float32)})[0].astype(np.float64)
            ratio = np.linalg.norm(fy - fx) / eps
            best = max(best, float(ratio))
            v = v + rng.normal(scale=0.05, size=input_shape)
    return best


def scaled_residual_chain(scale: float) -> tuple[onnx.ModelProto, float]:
    """x + relu(x·(sA)·(sB))·(C/s)·(E/s) in float64 (redteam5's underflow chain), and its exact
    constant: the scales cancel, so it is the largest ‖(AB·diag(d))CE + I‖₂ over the ReLU patterns d."""
    import itertools

    rng = np.random.default_rng(5)
    a, b, c, e = (rng.normal(size=shape) for shape in ((4, 4), (4, 5), (5, 5), (5, 4)))
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["a"]),
        helper.make_node("MatMul", ["a", "W1"], ["b"]),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["c"]),
        helper.make_node("MatMul", ["c", "W3"], ["d"]),
        helper.make_node("Add", ["x", "d"], ["y"]),
    ]
    weights = {"W0": a * scale, "W1": b * scale, "W2": c / scale, "W3": e / scale}
    model = graph_model(nodes, [1, 4], weights, elem_type=TensorProto.DOUBLE)
    patterns = itertools.product([0, 1], repeat=5)
    truth = max(float(np.linalg.norm((a @ b * np.array(d)) @ c @ e + np.eye(4), 2)) for d in patterns)
    return model, truth
