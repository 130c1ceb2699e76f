"""ONNX files → IR: initializers (old and new style), Constant nodes, external data, shape inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper, shape_inference

from ..errors import ModelLoadError
from ..ir import Graph, Node, Value, decode_attribute
from ..shapes import resolve_input_shapes

MIN_OPSET = 6
MAX_OPSET = 23


def parse_model(data: bytes, path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf raises its own DecodeError and friends
        raise ModelLoadError(f"{path} is not a readable ONNX model ({type(error).__name__})",
                             hint="the file may be truncated or corrupt; export it again") from error
    if not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{path} is not an ONNX model (no graph or opset)",
                             hint="pass an .onnx file, a TorchScript .pt or a torch.export .pt2")
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise ModelLoadError(f"cannot read the external data of {path}: {str(error).splitlines()[0]}",
                             hint="keep the weight files next to the model, as they were exported") from error
    opset = model_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelLoadError(f"{path} uses opset {opset}; lipaudit reads opsets {MIN_OPSET} to {MAX_OPSET}",
                             hint="convert it with onnx.version_converter.convert_version(model, 17)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{path} fails onnx.checker: {first_line}",
                             hint="re-export the model, or repair it with onnx tools") from error
    return model


def model_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _declared_inputs(graph: onnx.GraphProto) -> dict[str, list[int | str | None]]:
    initializers = {init.name for init in graph.initializer}
    declared: dict[str, list[int | str | None]] = {}
    for value_info in graph.input:
        if value_info.name in initializers:
            continue  # opset < 9 style: weights are listed as inputs too
        dims: list[int | str | None] = []
        for dim in value_info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        declared[value_info.name] = dims
    return declared


def _set_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    for value_info in model.graph.input:
        if value_info.name not in shapes:
            continue
        shape_proto = value_info.type.tensor_type.shape
        del shape_proto.dim[:]
        for d in shapes[value_info.name]:
            shape_proto.dim.add().dim_value = d


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "sparse_value":
        return numpy_helper.to_array(onnx.numpy_helper.to_array(attr.sparse_tensor))
    scalar = helper.get_attribute_value(attr)
    dtype = np.float32 if attr.name.startswith("value_float") else np.int64
    return np.asarray(scalar, dtype=dtype)


def _shapes_from_inference(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as error:  # inference raises InferenceError or a RuntimeError from C++
        raise ModelLoadError(f"ONNX shape inference failed: {str(error).strip().splitlines()[0]}",
                             hint="check --input-shape against what the model expects") from error
    shapes: dict[str, tuple[int, ...] | None] = {}
    graph = inferred.graph
    for value_info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value_info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        shapes[value_info.name] = tuple(dims)
    return shapes


def load_onnx(data: bytes, path: Path,
              input_shapes: dict[str, tuple[int, ...]]) -> tuple[Graph, onnx.ModelProto]:
    """The IR, and the ModelProto (external data loaded, input shapes fixed) it was read from."""
    model = parse_model(data, path)
    opset = model_opset(model)
    shapes = resolve_input_shapes(_declared_inputs(model.graph), input_shapes)
    _set_input_shapes(model, shapes)
    inferred = _shapes_from_inference(model)

    values: dict[str, Value] = {}
    for name, shape in inferred.items():
        values[name] = Value(name, shape)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        values[init.name] = Value(init.name, tuple(array.shape), array)
    for name, shape in shapes.items():
        values[name] = Value(name, shape)

    nodes: list[Node] = []
    for index, proto in enumerate(model.graph.node):
        name = proto.name or f"{proto.op_type}_{index}"
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            array = _constant_node_value(proto)
            values[proto.output[0]] = Value(proto.output[0], tuple(array.shape), array)
            continue
        attrs = {attr.name: decode_attribute(attr) for attr in proto.attribute}
        nodes.append(Node(name, proto.op_type, tuple(proto.input), tuple(proto.output), attrs, proto.domain))

    opsets = {("" if entry.domain == "ai.onnx" else entry.domain): int(entry.version) for entry in model.opset_import}
    graph = Graph(nodes, values, list(shapes), [out.name for out in model.graph.output], opset=opset,
                  format="onnx", metadata={"producer": model.producer_name, "ir_version": model.ir_version},
                  opset_imports=opsets)
    return graph, model
