"""The IR executor computes what onnxruntime computes, op by op and on whole models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from lipaudit.errors import ExecutionError
from lipaudit.execute import GraphInterpreter, can_execute, supported_ops
from lipaudit.ir import Node
from lipaudit.load import load_time_passes
from lipaudit.load.onnx import load_onnx
from lipaudit.ops import all_ops
from lipaudit.passes import run_passes
from tests.builders import session, tensor

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
rng = np.random.default_rng(0)


def r(*shape: int, low: float | None = None) -> np.ndarray:
    array = rng.normal(size=shape).astype(np.float32)
    return np.abs(array) + low if low is not None else array


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, np.int64)


def build(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int]],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    outputs: tuple[str, ...] = ("y",),
    domains: tuple[str, ...] = (),
) -> onnx.ModelProto:
    """A model whose output types come from shape inference (ArgMax gives int64, MaxPool indices too)."""
    graph = helper.make_graph(
        nodes,
        "model",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [onnx.ValueInfoProto(name=name) for name in outputs],
        [tensor(k, v) for k, v in (initializers or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10 if opset >= 21 else 8
    model = onnx.shape_inference.infer_shapes(model)
    for output in model.graph.output:
        if not output.type.HasField("tensor_type"):  # inference misses GroupNormalization-21: shape-preserving
            output.CopyFrom(helper.make_tensor_value_info(output.name, TensorProto.FLOAT, next(iter(inputs.values()))))
    return model


def load(model: onnx.ModelProto, shapes: dict | None = None, passes: bool = False):
    graph, proto = load_onnx(model.SerializeToString(), Path("model.onnx"), shapes or {})
    load_time_passes().run(graph)
    return (run_passes(graph) if passes else graph), proto


def assert_matches_onnxruntime(
    model: onnx.ModelProto,
    *,
    shapes: dict | None = None,
    passes: bool = False,
    feeds: dict[str, np.ndarray] | None = None,
    rtol: float = 1e-5,
) -> None:
    graph, proto = load(model, shapes, passes)
    if feeds is None:
        feeds = {name: rng.normal(size=graph.shape(name)).astype(np.float32) for name in graph.inputs}
    expected = session(proto).run(None, feeds)
    got = GraphInterpreter(graph)(*[torch.from_numpy(feeds[name]) for name in graph.inputs])
    for name, want, have in zip(graph.outputs, expected, got):
        have = have.detach().numpy()
        assert have.shape == want.shape, (name, have.shape, want.shape)
        scale = max(1.0, float(np.abs(want).max(initial=0.0)))
        np.testing.assert_allclose(have, want, rtol=rtol, atol=rtol * scale, err_msg=name)


# (op, input shape, initializers, attrs, opset) — each a model computing op(x, *initializers).
CASES = {
    "relu": ("Relu", [2, 5], {}, {}, 17),
    "tanh": ("Tanh", [2, 5], {}, {}, 17),
    "sigmoid": ("Sigmoid", [2, 5], {}, {}, 17),
    "softplus": ("Softplus", [2, 5], {}, {}, 17),
    "softsign": ("Softsign", [2, 5], {}, {}, 17),
    "abs": ("Abs", [2, 5], {}, {}, 17),
    "neg": ("Neg", [2, 5], {}, {}, 17),
    "sin": ("Sin", [2, 5], {}, {}, 17),
    "atan": ("Atan", [2, 5], {}, {}, 17),
    "asinh": ("Asinh", [2, 5], {}, {}, 17),
    "erf": ("Erf", [2, 5], {}, {}, 17),
    "exp": ("Exp", [2, 5], {}, {}, 17),
    "sign": ("Sign", [2, 5], {}, {}, 17),
    "floor": ("Floor", [2, 5], {}, {}, 17),
    "round": ("Round", [2, 5], {}, {}, 17),
    "leaky": ("LeakyRelu", [2, 5], {}, {"alpha": 0.2}, 17),
    "elu": ("Elu", [2, 5], {}, {"alpha": 0.7}, 17),
    "celu": ("Celu", [2, 5], {}, {"alpha": 1.5}, 17),
    "selu": ("Selu", [2, 5], {}, {}, 17),
    "hardsigmoid": ("HardSigmoid", [2, 5], {}, {"alpha": 0.3, "beta": 0.4}, 17),
    "hardswish": ("HardSwish", [2, 5], {}, {}, 17),
    "mish": ("Mish", [2, 5], {}, {}, 18),
    "gelu": ("Gelu", [2, 5], {}, {}, 20),
    "gelu_tanh": ("Gelu", [2, 5], {}, {"approximate": "tanh"}, 20),
    "shrink": ("Shrink", [2, 5], {}, {"bias": 0.1, "lambd": 0.3}, 17),
    "thresholded": ("ThresholdedRelu", [2, 5], {}, {"alpha": 0.2}, 17),
    "prelu": ("PRelu", [1, 3, 4, 4], {"s": r(3, 1, 1)}, {}, 17),
    "clip_inputs": ("Clip", [2, 5], {"lo": np.float32(-0.5), "hi": np.float32(0.7)}, {}, 17),
    "clip_attrs": ("Clip", [2, 5], {}, {"min": -0.5, "max": 0.3}, 10),
    "softmax": ("Softmax", [2, 3, 4], {}, {"axis": 1}, 17),
    "softmax_opset11": ("Softmax", [2, 3, 4], {}, {"axis": 1}, 11),
    "logsoftmax": ("LogSoftmax", [2, 3, 4], {}, {}, 17),
    "hardmax": ("Hardmax", [2, 3, 4], {}, {}, 17),
    "argmax": ("ArgMax", [2, 3, 4], {}, {"axis": 1, "keepdims": 0}, 17),
    "argmin_last": ("ArgMin", [2, 3, 4], {}, {"axis": -1, "select_last_index": 1}, 17),
    "add_broadcast": ("Add", [2, 3, 4], {"c": r(3, 1)}, {}, 17),
    "sub": ("Sub", [2, 3], {"c": r(3)}, {}, 17),
    "mul": ("Mul", [2, 3], {"c": r(1, 3)}, {}, 17),
    "div": ("Div", [2, 3], {"c": r(3, low=0.5)}, {}, 17),
    "pow": ("Pow", [2, 3], {"c": np.float32(2.0)}, {}, 17),
    "max": ("Max", [2, 3], {"c": r(3)}, {}, 17),
    "min": ("Min", [2, 3], {"c": r(2, 3)}, {}, 17),
    "sum": ("Sum", [2, 3], {"c": r(3), "d": r(2, 1)}, {}, 17),
    "gemm": ("Gemm", [3, 4], {"w": r(5, 4), "b": r(5)}, {"transB": 1, "alpha": 0.5, "beta": 2.0}, 17),
    "gemm_transA": ("Gemm", [4, 3], {"w": r(4, 5)}, {"transA": 1}, 17),
    "matmul_batched": ("MatMul", [2, 3, 4], {"w": r(4, 5)}, {}, 17),
    "batchnorm": (
        "BatchNormalization",
        [2, 3, 4, 4],
        {"s": r(3), "b": r(3), "m": r(3), "v": r(3, low=0.5)},
        {"epsilon": 1e-3},
        17,
    ),
    "instancenorm": ("InstanceNormalization", [2, 3, 5, 5], {"s": r(3), "b": r(3)}, {}, 17),
    "layernorm": ("LayerNormalization", [2, 3, 6], {"s": r(6), "b": r(6)}, {}, 17),
    "layernorm_axis": ("LayerNormalization", [2, 3, 6], {"s": r(3, 6), "b": r(3, 6)}, {"axis": 1}, 17),
    "groupnorm": ("GroupNormalization", [2, 4, 3, 3], {"s": r(4), "b": r(4)}, {"num_groups": 2}, 21),
    "lpnorm": ("LpNormalization", [2, 5], {}, {"axis": 1, "p": 2}, 17),
    "lpnorm_l1": ("LpNormalization", [2, 5], {}, {"axis": -1, "p": 1}, 17),
    "conv": ("Conv", [1, 3, 7, 7], {"w": r(4, 3, 3, 3), "b": r(4)}, {"pads": [1, 1, 1, 1]}, 17),
    "conv_asym": ("Conv", [1, 2, 7, 8], {"w": r(3, 2, 3, 2)}, {"pads": [0, 1, 2, 0], "strides": [2, 1]}, 17),
    "conv_same_upper": ("Conv", [1, 2, 7, 8], {"w": r(3, 2, 4, 3)}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 17),
    "conv_same_lower": ("Conv", [1, 2, 7, 8], {"w": r(3, 2, 4, 4)}, {"auto_pad": "SAME_LOWER"}, 17),
    "conv_valid": ("Conv", [1, 2, 7, 8], {"w": r(3, 2, 3, 3)}, {"auto_pad": "VALID"}, 17),
    "conv_dilated_groups": (
        "Conv",
        [1, 4, 9, 9],
        {"w": r(6, 2, 3, 3)},
        {"dilations": [2, 1], "group": 2, "pads": [2, 1, 2, 1]},
        17,
    ),
    "conv1d": ("Conv", [1, 2, 10], {"w": r(3, 2, 3)}, {"strides": [2], "pads": [1, 0]}, 17),
    "conv3d": ("Conv", [1, 2, 4, 5, 5], {"w": r(2, 2, 2, 3, 3)}, {"pads": [0, 1, 1, 1, 0, 1]}, 17),
    "convT": ("ConvTranspose", [1, 3, 4, 4], {"w": r(3, 2, 3, 3), "b": r(2)}, {"strides": [2, 2]}, 17),
    "convT_pads": (
        "ConvTranspose",
        [1, 3, 4, 5],
        {"w": r(3, 2, 3, 3)},
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 0]},
        17,
    ),
    "convT_groups_dilation": (
        "ConvTranspose",
        [1, 4, 4, 4],
        {"w": r(4, 1, 2, 2)},
        {"group": 2, "dilations": [2, 2], "strides": [1, 2]},
        17,
    ),
    "convT_output_shape": (
        "ConvTranspose",
        [1, 2, 4, 4],
        {"w": r(2, 2, 3, 3)},
        {"strides": [2, 2], "output_shape": [8, 9]},
        17,
    ),
    "convT_same_upper": (
        "ConvTranspose",
        [1, 2, 4, 5],
        {"w": r(2, 2, 4, 3)},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        17,
    ),
    "convT_same_lower": (
        "ConvTranspose",
        [1, 2, 4, 5],
        {"w": r(2, 2, 4, 3)},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        17,
    ),
    "convT1d": ("ConvTranspose", [1, 2, 6], {"w": r(2, 3, 3)}, {"strides": [3], "pads": [1, 2]}, 17),
    "maxpool": ("MaxPool", [1, 2, 7, 7], {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 17),
    "maxpool_ceil": (
        "MaxPool",
        [1, 2, 8, 7],
        {},
        {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1, "pads": [0, 1, 1, 0]},
        17,
    ),
    "maxpool_ceil_edge": (
        "MaxPool",
        [1, 1, 6, 6],
        {},
        {"kernel_shape": [2, 2], "strides": [3, 3], "ceil_mode": 1, "pads": [1, 1, 1, 1]},
        17,
    ),
    "maxpool_same": (
        "MaxPool",
        [1, 2, 7, 8],
        {},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
        17,
    ),
    "maxpool_dilated": ("MaxPool", [1, 2, 9, 9], {}, {"kernel_shape": [2, 2], "dilations": [2, 3]}, 17),
    "maxpool1d": ("MaxPool", [1, 2, 9], {}, {"kernel_shape": [3], "strides": [2]}, 17),
    "avgpool": ("AveragePool", [1, 2, 7, 7], {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 17),
    "avgpool_include_pad": (
        "AveragePool",
        [1, 2, 7, 7],
        {},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "count_include_pad": 1},
        17,
    ),
    "avgpool_ceil": (
        "AveragePool",
        [1, 2, 8, 7],
        {},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1]},
        17,
    ),
    "avgpool_ceil_include_pad": (
        "AveragePool",
        [1, 2, 8, 7],
        {},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1], "count_include_pad": 1},
        17,
    ),
    "avgpool_same_upper": (
        "AveragePool",
        [1, 2, 7, 8],
        {},
        {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        17,
    ),
    "avgpool_dilated": ("AveragePool", [1, 2, 9, 9], {}, {"kernel_shape": [2, 2], "dilations": [2, 2]}, 19),
    "gap": ("GlobalAveragePool", [1, 3, 4, 5], {}, {}, 17),
    "gmp": ("GlobalMaxPool", [1, 3, 4, 5], {}, {}, 17),
    "reshape": ("Reshape", [2, 3, 4], {"s": i64(0, -1, 2)}, {}, 17),
    "flatten": ("Flatten", [2, 3, 4, 5], {}, {"axis": 2}, 17),
    "transpose": ("Transpose", [2, 3, 4], {}, {"perm": [1, 2, 0]}, 17),
    "squeeze_input": ("Squeeze", [1, 3, 1, 4], {"a": i64(0, -2)}, {}, 17),
    "squeeze_attr": ("Squeeze", [1, 3, 1, 4], {}, {"axes": [2]}, 11),
    "squeeze_all": ("Squeeze", [1, 3, 1, 4], {}, {}, 17),
    "unsqueeze_input": ("Unsqueeze", [3, 4], {"a": i64(0, -1)}, {}, 17),
    "unsqueeze_attr": ("Unsqueeze", [3, 4], {}, {"axes": [1, 3]}, 11),
    "identity": ("Identity", [2, 3], {}, {}, 17),
    "dropout": ("Dropout", [2, 3], {}, {}, 17),
    "cast_double": ("Cast", [2, 3], {}, {"to": TensorProto.DOUBLE}, 17),
    "depth_to_space": ("DepthToSpace", [1, 8, 2, 3], {}, {"blocksize": 2}, 17),
    "depth_to_space_crd": ("DepthToSpace", [1, 8, 2, 3], {}, {"blocksize": 2, "mode": "CRD"}, 17),
    "space_to_depth": ("SpaceToDepth", [1, 2, 4, 6], {}, {"blocksize": 2}, 17),
    "slice": ("Slice", [4, 6, 5], {"s": i64(1, -4), "e": i64(100, -1), "a": i64(0, 1)}, {}, 17),
    "slice_steps": ("Slice", [4, 6, 5], {"s": i64(-1, 0), "e": i64(-100, 5), "a": i64(1, 2), "t": i64(-2, 2)}, {}, 17),
    "slice_attrs": ("Slice", [4, 6, 5], {}, {"starts": [1], "ends": [3], "axes": [2]}, 9),
    "concat": ("Concat", [2, 3], {"c": r(2, 4)}, {"axis": -1}, 17),
    "expand": ("Expand", [3, 1], {"s": i64(2, 3, 4)}, {}, 17),
    "tile": ("Tile", [2, 3], {"t": i64(2, 3)}, {}, 17),
    "gather": ("Gather", [4, 5], {"i": np.asarray([[0, 3], [-1, 2]], np.int64)}, {"axis": 1}, 17),
    "gather_scalar": ("Gather", [4, 5], {"i": np.asarray(2, np.int64)}, {}, 17),
    "pad_constant": ("Pad", [1, 2, 4, 4], {"p": i64(0, 0, 1, -1, 0, 0, 2, 1), "v": np.float32(0.5)}, {}, 17),
    "pad_reflect": ("Pad", [1, 2, 4, 4], {"p": i64(0, 0, 2, 1, 0, 0, 1, 3)}, {"mode": "reflect"}, 17),
    "pad_edge_axes": (
        "Pad",
        [1, 2, 4, 4],
        {"p": i64(2, 1, 0, 3), "v": np.float32(0), "a": i64(-1, 2)},
        {"mode": "edge"},
        18,
    ),
    "pad_wrap": ("Pad", [1, 2, 4, 4], {"p": i64(0, 0, 1, 2, 0, 0, 3, 1)}, {"mode": "wrap"}, 19),
    "pad_attrs": ("Pad", [2, 4], {}, {"pads": [1, 0, 0, 2], "value": 1.5}, 10),
    "reduce_mean": ("ReduceMean", [2, 3, 4], {}, {"axes": [1, -1]}, 17),
    "reduce_mean_input": ("ReduceMean", [2, 3, 4], {"a": i64(1)}, {"keepdims": 0}, 18),
    "reduce_sum": ("ReduceSum", [2, 3, 4], {"a": i64(0, 2)}, {}, 17),
    "reduce_sum_all": ("ReduceSum", [2, 3, 4], {}, {"keepdims": 0}, 17),
    "reduce_sum_noop": ("ReduceSum", [2, 3, 4], {}, {"noop_with_empty_axes": 1}, 17),
    "reduce_max": ("ReduceMax", [2, 3, 4], {}, {"axes": [1]}, 17),
    "reduce_min": ("ReduceMin", [2, 3, 4], {"a": i64(-1)}, {}, 18),
    "reduce_l1": ("ReduceL1", [2, 3, 4], {}, {"axes": [2]}, 17),
    "reduce_l2": ("ReduceL2", [2, 3, 4], {}, {"axes": [2]}, 17),
    "reduce_lse": ("ReduceLogSumExp", [2, 3, 4], {}, {"axes": [0, 2]}, 17),
    "reduce_prod": ("ReduceProd", [2, 3, 4], {}, {"axes": [1, 2]}, 17),
    "reduce_sumsq": ("ReduceSumSquare", [2, 3, 4], {}, {"axes": [1]}, 17),
}


RESIZE_CASES = {
    "nearest_default": (["x", "", "s"], {"s": np.float32([1, 1, 2, 1.5])}, {}, 13),
    "nearest_asymmetric_floor": (
        ["x", "", "s"],
        {"s": np.float32([1, 1, 2, 3])},
        {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        13,
    ),
    "nearest_ceil_half_pixel": (["x", "", "s"], {"s": np.float32([1, 1, 0.6, 1.7])}, {"nearest_mode": "ceil"}, 13),
    "linear_half_pixel": (["x", "", "s"], {"s": np.float32([1, 1, 2, 2.5])}, {"mode": "linear"}, 13),
    "linear_align_corners_sizes": (
        ["x", "", "", "z"],
        {"z": np.int64([1, 2, 7, 4])},
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        13,
    ),
    "linear_pytorch_half_pixel_down": (
        ["x", "", "s"],
        {"s": np.float32([1, 1, 0.5, 0.8])},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        13,
    ),
    "linear_half_pixel_symmetric": (
        ["x", "", "s"],
        {"s": np.float32([1, 1, 1.5, 2])},
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
        19,
    ),
    "nearest_tf_half_pixel": (
        ["x", "", "s"],
        {"s": np.float32([1, 1, 2, 2])},
        {"coordinate_transformation_mode": "tf_half_pixel_for_nn"},
        13,
    ),
    "resize10": (["x", "s"], {"s": np.float32([1, 1, 2, 2])}, {"mode": "linear"}, 10),
    "upsample9_nearest": (["x", "s"], {"s": np.float32([1, 1, 2, 3])}, {}, 9),
    "upsample9_linear": (["x", "s"], {"s": np.float32([1, 1, 2, 2])}, {"mode": "linear"}, 9),
}


@pytest.mark.parametrize("case", sorted(RESIZE_CASES))
def test_resize_matches_onnxruntime(case: str) -> None:
    inputs, initializers, attrs, opset = RESIZE_CASES[case]
    op_type = "Upsample" if case.startswith("upsample") else "Resize"
    model = build([helper.make_node(op_type, inputs, ["y"], **attrs)], {"x": [1, 2, 5, 4]}, initializers, opset=opset)
    assert_matches_onnxruntime(model)


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_op_matches_onnxruntime(case: str) -> None:
    op_type, shape, initializers, attrs, opset = CASES[case]
    node_inputs = ["x", *initializers]
    if op_type == "Pad" and "a" in initializers and "v" in initializers:
        node_inputs = ["x", "p", "v", "a"]
    model = build([helper.make_node(op_type, node_inputs, ["y"], **attrs)], {"x": shape}, initializers, opset=opset)
    assert_matches_onnxruntime(model)


def test_split_forms_match_onnxruntime() -> None:
    for opset, inputs, attrs, count in [
        (17, ["x", "s"], {"axis": 1}, 2),
        (11, ["x"], {"axis": 1, "split": [1, 4]}, 2),
        (18, ["x"], {"axis": 1, "num_outputs": 3}, 3),
        (17, ["x"], {"axis": -1}, 2),
    ]:
        outs = [f"y{i}" for i in range(count)]
        node = helper.make_node("Split", inputs, outs, **attrs)
        model = build(
            [node], {"x": [2, 5, 4]}, {"s": i64(2, 3)} if "s" in inputs else {}, opset=opset, outputs=tuple(outs)
        )
        assert_matches_onnxruntime(model)


def test_maxpool_indices_match_onnxruntime() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1])
    model = build([node], {"x": [2, 3, 7, 6]}, outputs=("y", "i"))
    graph, proto = load(model)
    x = r(2, 3, 7, 6)
    want_values, want_indices = session(proto).run(None, {"x": x})
    values, indices = GraphInterpreter(graph)(torch.from_numpy(x))
    np.testing.assert_allclose(values.numpy(), want_values, rtol=1e-6)
    np.testing.assert_array_equal(indices.numpy(), want_indices)


def test_cast_to_int_and_variable_gather_indices() -> None:
    nodes = [
        helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
        helper.make_node("Gather", ["w", "i"], ["g"]),
        helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["g", "f"], ["y"]),
    ]
    model = build(nodes, {"x": [3, 4]}, {"w": r(4)})
    assert_matches_onnxruntime(model)


def test_attention_matches_onnxruntime() -> None:
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=2, kv_num_heads=2, is_causal=1)
    assert_matches_onnxruntime(build([node], {n: [2, 4, 8] for n in "qkv"}, opset=23))


def test_grouped_query_attention_with_a_mask_matches_onnxruntime() -> None:
    node = helper.make_node("Attention", ["q", "k", "v", "m"], ["y"], scale=0.3)
    mask = rng.normal(size=(3, 5)).astype(np.float32)
    model = build([node], {"q": [1, 4, 3, 6], "k": [1, 2, 5, 6], "v": [1, 2, 5, 4]}, {"m": mask}, opset=23)
    assert_matches_onnxruntime(model)


def test_microsoft_attention_matches_onnxruntime() -> None:
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2)
    model = build([node], {"x": [1, 5, 8]}, {"w": r(8, 24), "b": r(24)}, domains=("com.microsoft",))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8]))
    assert_matches_onnxruntime(model)


def test_microsoft_multi_head_attention_matches_onnxruntime() -> None:
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=2)
    model = build([node], {n: [1, 5, 8] for n in "qkv"}, domains=("com.microsoft",))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8]))
    assert_matches_onnxruntime(model)


def test_fused_activations_match_the_spelled_out_graph() -> None:
    """Passes rewrite x·Sigmoid(x), 0.5·x·(1+Erf(x/√2)), x/(1+|x|): the executor runs the fused ops."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["a"]),
        helper.make_node("Div", ["a", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["p"]),
        helper.make_node("Mul", ["a", "p"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["g"]),
        helper.make_node("Abs", ["g"], ["ab"]),
        helper.make_node("Add", ["ab", "one"], ["den"]),
        helper.make_node("Div", ["g", "den"], ["y"]),
    ]
    consts = {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    model = build(nodes, {"x": [2, 6]}, consts)
    graph, _ = load(model, passes=True)
    assert {"Silu", "Gelu", "Softsign"} <= {node.op_type for node in graph.nodes}
    assert_matches_onnxruntime(model, passes=True)


@pytest.mark.parametrize("name,shapes", [("cnn.onnx", {}), ("mlp.onnx", {"x": (1, 16)}), ("unbounded.onnx", {})])
def test_sample_models_match_onnxruntime(name: str, shapes: dict) -> None:
    model = onnx.load(str(SAMPLES / name))
    assert_matches_onnxruntime(model, shapes=shapes, passes=True, rtol=1e-4)


def test_float64_and_gradients() -> None:
    model = onnx.load(str(SAMPLES / "cnn.onnx"))
    graph, _ = load(model, passes=True)
    executor = GraphInterpreter(graph, dtype=torch.float64)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    (y,) = executor(x)
    assert y.dtype == torch.float64 and y.shape == (1, 10)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_every_op_with_a_rule_can_run() -> None:
    runnable = set(supported_ops())
    # Control flow is unsupported by its rule (only a constant If is analysed, once inlined).
    missing = {(entry.domain, entry.op_type) for entry in all_ops() if entry.family != "control flow"} - runnable
    assert not missing, missing


def test_unknown_op_is_named() -> None:
    model = build([helper.make_node("Mod", ["x", "m"], ["y"], fmod=1)], {"x": [1, 2, 4, 4]}, {"m": np.float32(0.7)})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 4, 4]))
    graph, _ = load(model)
    assert not can_execute(Node("n", "Mod", ["x", "m"], ["y"]))
    with pytest.raises(ExecutionError, match="Mod"):
        GraphInterpreter(graph)
