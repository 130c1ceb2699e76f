"""ONNX files → IR: initializers (old and new style), Constant nodes, external data, shape inference.

External data is loaded with the model, unless the caller asks for it to stay on disk
(``map_external_data=True``): then each weight is memory-mapped, read only where it is used,
and ``loaded.source`` holds the model without its weights (it cannot be run as it is).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import external_data_helper, inliner, shape_inference

from ..errors import ModelLoadError
from ..ir import Graph, Value
from ..shapes import resolve_input_shapes
from .legacy_broadcast import align_legacy_broadcast
from .onnx_graph import ExternalData, check_size, ir_nodes, non_finite_initializers, subgraphs, uses_external_data
from .sniff import sniff_format

MIN_OPSET = 6
MAX_OPSET = 23
# Past this size a file is not a graph with external data but a model with its weights inline:
# nothing of it can be left on disk, so its external data is not looked for ahead of the load.
MAX_GRAPH_FILE_BYTES = 256 * 2**20


def external_data_bytes(path: Path) -> int:
    """How many bytes of external data an ONNX file's initializers refer to (0 for other files, and
    for files too large to be a graph alone); reads the graph, not the weights."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_GRAPH_FILE_BYTES:
            return 0
        with path.open("rb") as handle:
            if sniff_format(handle.read(2)) != "onnx":
                return 0
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not readable as ONNX: the loader says why
        return 0
    external = ExternalData(path.parent)
    total = 0
    for init in model.graph.initializer:
        if uses_external_data(init):
            try:
                total += external.locate(init, "initializer")[1]
            except ModelLoadError:
                continue  # the loader reports it
    return total


def parse_model(data: bytes, path: Path, *, map_external_data: bool = False) -> onnx.ModelProto:
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf raises its own DecodeError and friends
        raise ModelLoadError(
            f"{path} is not a readable ONNX model ({type(error).__name__})",
            hint="the file may be truncated or corrupt; export it again",
        ) from error
    if not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(
            f"{path} is not an ONNX model (no graph or opset)",
            hint="pass an .onnx file, a TorchScript .pt or a torch.export .pt2",
        )
    try:
        if not map_external_data:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        for tensor in _side_tensors(model.graph, main=True):
            # onnx reads these from the current folder, and so does onnxruntime given the model as
            # bytes: a file of the same name there would be read instead of the model's own.
            if uses_external_data(tensor):
                external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
                tensor.data_location = onnx.TensorProto.DEFAULT
                del tensor.external_data[:]
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise ModelLoadError(
            f"cannot read the external data of {path}: {str(error).splitlines()[0]}",
            hint="keep the weight files next to the model, as they were exported",
        ) from error
    opset = model_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelLoadError(
            f"{path} uses opset {opset}; lipaudit reads opsets {MIN_OPSET} to {MAX_OPSET}",
            hint="convert it with onnx.version_converter.convert_version(model, 17)",
        )
    try:
        # With the weights left on disk, the checker reads the file: it then finds them next to it.
        onnx.checker.check_model(str(path) if map_external_data else model)
    except Exception as error:  # ValidationError, and UnicodeDecodeError on names that are not UTF-8
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"{path} fails onnx.checker: {first_line}", hint="re-export the model, or repair it with onnx tools"
        ) from error
    _check_attributes(model.graph, path)
    return model


# Attribute values native shape inference trusts: far out of range they crash it, not fail it.
_AXIS_LIKE = frozenset({"axis", "axes", "perm"})
_SIZE_LIKE = frozenset(
    {
        "kernel_shape",
        "strides",
        "dilations",
        "pads",
        "output_padding",
        "output_shape",
        "group",
        "num_groups",
        "blocksize",
        "num_outputs",
        "k",
    }
)
_AXIS_LIMIT = 2**15
_SIZE_LIMIT = 2**31 - 1


def _check_attributes(graph: onnx.GraphProto, path: Path) -> None:
    """Refuse attribute values no model can mean, before native shape inference sees them."""
    for node in graph.node:
        for attribute in node.attribute:
            limit = (
                _AXIS_LIMIT if attribute.name in _AXIS_LIKE else _SIZE_LIMIT if attribute.name in _SIZE_LIKE else None
            )
            values = (
                list(attribute.ints)
                if attribute.type == onnx.AttributeProto.INTS
                else [attribute.i]
                if attribute.type == onnx.AttributeProto.INT
                else []
            )
            if limit is not None and any(abs(v) > limit for v in values):
                raise ModelLoadError(
                    f"{path}: attribute '{attribute.name}' of {node.op_type} "
                    f"'{node.name or node.op_type}' is out of range ({values[:4]})",
                    hint="the model is malformed; export it again",
                )
            if attribute.type == onnx.AttributeProto.GRAPH:
                _check_attributes(attribute.g, path)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    _check_attributes(body, path)


def model_opset(model: onnx.ModelProto) -> int:
    versions = sorted({int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")})
    if len(versions) > 1:  # onnxruntime reads the nodes at the last entry, the range check saw the first
        raise ModelLoadError(
            f"the model imports the default ONNX domain at opsets {' and '.join(map(str, versions))}",
            hint="keep one opset_import entry for the default domain",
        )
    return versions[0] if versions else 1


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


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference from the inputs alone: value_info an editing tool left stale is dropped first."""
    fresh = onnx.ModelProto()
    fresh.CopyFrom(model)
    del fresh.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(fresh, check_type=False, strict_mode=False, data_prop=True)
    except Exception as error:  # inference raises InferenceError or a RuntimeError from C++
        raise ModelLoadError(
            f"ONNX shape inference failed: {str(error).strip().splitlines()[0]}",
            hint="check --input-shape against what the model expects",
        ) from error


def value_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """The shapes a graph's value infos declare (-1 for a dimension they leave open)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value_info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value_info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        if all(d >= 0 for d in dims):
            check_size(value_info.name, dims)
        shapes[value_info.name] = dims
    return shapes


def value_types(graph: onnx.GraphProto) -> dict[str, int]:
    """The element types (TensorProto codes) that a graph's value infos declare."""
    return {
        info.name: int(info.type.tensor_type.elem_type)
        for info in list(graph.input) + list(graph.value_info) + list(graph.output)
        if info.type.tensor_type.elem_type
    }


def _inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Model-local functions (``export_modules_as_functions``) inlined into the graph, each body
    converted to the model's opset; one that cannot be stays a call, which no rule knows (reported)."""
    if not model.functions:
        return model
    try:
        return inliner.inline_local_functions(model, convert_version=True)
    except Exception:  # the inliner raises C++ errors of several kinds
        return model


def load_onnx(
    data: bytes, path: Path, input_shapes: dict[str, tuple[int, ...]], *, map_external_data: bool = False
) -> tuple[Graph, onnx.ModelProto]:
    """The IR, and the ModelProto (external data loaded, input shapes fixed) it was read from.

    Shapes here are ONNX inference's; the pipeline replaces them with the runtime's where it can.
    """
    model = _inline_functions(parse_model(data, path, map_external_data=map_external_data))
    external = ExternalData(path.parent) if map_external_data else None
    opset = model_opset(model)
    shapes = resolve_input_shapes(_declared_inputs(model.graph), input_shapes)
    for name, shape in shapes.items():
        check_size(name, shape)
    corrupt = non_finite_initializers(model.graph, external)
    if corrupt is not None:
        raise ModelLoadError(
            f"the weight '{corrupt}' holds NaN or Inf values",
            hint="the weights are corrupt (a diverged training run or a damaged file)",
        )
    _set_input_shapes(model, shapes)
    inferred = _inferred(model)
    align_legacy_broadcast(inferred.graph, opset)

    values = {name: Value(name, shape) for name, shape in value_shapes(inferred.graph).items()}
    # Nodes come from the inferred model: their subgraphs carry the shapes inference found in them.
    nodes = ir_nodes(inferred.graph, values, external=external)
    for name, shape in shapes.items():
        values[name] = Value(name, shape)
    opsets = {("" if entry.domain == "ai.onnx" else entry.domain): int(entry.version) for entry in model.opset_import}
    graph = Graph(
        nodes,
        values,
        list(shapes),
        [out.name for out in model.graph.output],
        opset=opset,
        format="onnx",
        metadata={
            "producer": model.producer_name,
            "ir_version": model.ir_version,
            "inputs_with_defaults": _inputs_with_defaults(model),
            "elem_types": value_types(inferred.graph),
        },
        opset_imports=opsets,
    )
    return graph, model


def _inputs_with_defaults(model: onnx.ModelProto) -> list[str]:
    """Inputs that are also initializers: from IR version 4 a caller may feed them (the initializer
    is a default), and lipaudit reads them as their default. Before it every weight was listed so."""
    if model.ir_version < 4:
        return []
    initializers = {init.name for init in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name in initializers]


def _side_tensors(graph: onnx.GraphProto, main: bool) -> list[onnx.TensorProto]:
    """Every tensor of ``graph`` but the main graph's dense initializers (which may stay on disk,
    memory-mapped): sparse initializers, tensor attributes, and all tensors of subgraphs."""
    found: list[onnx.TensorProto] = [] if main else list(graph.initializer)
    for sparse in graph.sparse_initializer:
        found += [sparse.values, sparse.indices]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                found.append(attribute.t)
            found += list(attribute.tensors)
            for sparse in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                found += [sparse.values, sparse.indices]
        for body in subgraphs(node):
            found += _side_tensors(body, main=False)
    return found
