"""ONNX graphs (the main graph or a subgraph) → IR nodes and values.

A node with subgraphs (If, Loop, Scan) reads every outer-scope value its bodies name: those
become its implicit inputs, so the node depends on them like on any input and is never taken for
a constant. The bodies stay as GraphProto attributes until a pass inlines a branch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelLoadError
from ..ir import Node, Value, decode_attribute
from ..ir.graph import unused_name
from .mapped import MAPPABLE_DTYPES, ExternalSlice, FileMappings, all_finite

# A single tensor with more entries than this is refused up front rather than exhausting memory
# (about 1.6 GB in float32, 3.2 GB in float64 for the lower bound).
MAX_TENSOR_ENTRIES = 400_000_000


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            found.extend(attribute.graphs)
    return found


def outer_scope_reads(graph: onnx.GraphProto) -> set[str]:
    """Names the graph (and the graphs nested in it) read without defining them."""
    defined = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    defined |= {init.values.name for init in graph.sparse_initializer}
    read: set[str] = set()
    for node in graph.node:
        read.update(name for name in node.input if name and name not in defined)
        for body in subgraphs(node):
            read.update(name for name in outer_scope_reads(body) if name not in defined)
        defined.update(name for name in node.output if name)
    read.update(out.name for out in graph.output if out.name not in defined)
    return read


def renamed_graph(graph: onnx.GraphProto, rename: dict[str, str]) -> onnx.GraphProto:
    """A copy of ``graph`` reading renamed outer-scope values (a name it defines itself shadows them)."""
    defined = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    defined |= {name for node in graph.node for name in node.output}
    visible = {old: new for old, new in rename.items() if old not in defined}
    copy = onnx.GraphProto()
    copy.CopyFrom(graph)
    if not visible:
        return copy
    for node in copy.node:
        for i, name in enumerate(node.input):
            if name in visible:
                node.input[i] = visible[name]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                attribute.g.CopyFrom(renamed_graph(attribute.g, visible))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    body.CopyFrom(renamed_graph(body, visible))
    for out in copy.output:
        if out.name in visible:
            out.name = visible[out.name]
    return copy


def check_size(name: str, shape: tuple[int, ...] | list[int]) -> None:
    entries = math.prod(int(d) for d in shape) if shape else 1
    if entries > MAX_TENSOR_ENTRIES:
        raise ModelLoadError(
            f"value '{name}' would hold {entries:.3g} entries (shape {list(shape)}), more than "
            f"lipaudit handles ({MAX_TENSOR_ENTRIES:.0e})",
            hint="check the model's shapes and --input-shape",
        )


def uses_external_data(tensor: onnx.TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


class ExternalData:
    """External data left in its files: tensors are memory-mapped where numpy can read the bytes as
    they are, and read into memory (one at a time) where they need a conversion."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir.resolve()
        self.mappings = FileMappings()

    def locate(self, tensor: onnx.TensorProto, what: str) -> tuple[ExternalSlice, int]:
        """Where the tensor's bytes are, checked (inside the model's folder, a regular file, long
        enough), and how many bytes it takes."""
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        target = (self.base_dir / location).resolve()
        hint = "keep the weight files next to the model, as they were exported"
        if not location or Path(location).is_absolute() or self.base_dir not in target.parents:
            raise ModelLoadError(f"{what} '{tensor.name}' points outside the model's folder ('{location}')", hint=hint)
        if not target.is_file():
            raise ModelLoadError(f"the external data file '{location}' of {what} '{tensor.name}' is missing", hint=hint)
        try:
            offset = int(entries.get("offset", 0))
            length = int(entries["length"]) if "length" in entries else None
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except (ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(
                f"{what} '{tensor.name}' has unreadable external data fields ({error})",
                hint="the model is malformed; export it again",
            ) from error
        shape = tuple(int(d) for d in tensor.dims)
        entries_count = math.prod(shape)
        # 4-bit types pack two entries in a byte.
        nbytes = (
            (entries_count + 1) // 2
            if dtype.name in ("int4", "uint4", "float4_e2m1")
            else entries_count * dtype.itemsize
        )
        if length is not None and length != nbytes:
            raise ModelLoadError(
                f"{what} '{tensor.name}' declares {length} bytes of external data, but its "
                f"shape {list(shape)} takes {nbytes}",
                hint="the model is malformed; export it again",
            )
        if offset < 0 or offset + nbytes > target.stat().st_size:
            raise ModelLoadError(
                f"the external data file '{location}' is too short for {what} '{tensor.name}'",
                hint="the weight file may be truncated; export the model again",
            )
        return ExternalSlice(str(target), offset, dtype.name, shape), nbytes

    def array(self, tensor: onnx.TensorProto, what: str) -> np.ndarray:
        piece, nbytes = self.locate(tensor, what)
        if piece.dtype in MAPPABLE_DTYPES:
            return self.mappings.tensor(piece)
        with open(piece.path, "rb") as handle:
            handle.seek(piece.offset)
            data = handle.read(nbytes)
        loaded = onnx.TensorProto()
        loaded.CopyFrom(tensor)
        loaded.raw_data = data
        loaded.data_location = onnx.TensorProto.DEFAULT
        del loaded.external_data[:]
        return tensor_array(loaded, what)

    def all_finite(self, tensor: onnx.TensorProto, what: str) -> bool:
        piece, _ = self.locate(tensor, what)
        if piece.dtype in MAPPABLE_DTYPES:
            return all_finite(piece)
        array = self.array(tensor, what)
        return bool(np.all(np.isfinite(array.astype(np.float64))))


def tensor_array(tensor: onnx.TensorProto, what: str, external: ExternalData | None = None) -> np.ndarray:
    """A TensorProto as numpy, with a clean error for corrupt or non-finite weights."""
    check_size(tensor.name, list(tensor.dims))
    if external is not None and uses_external_data(tensor):
        return external.array(tensor, what)
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as error:  # numpy/protobuf raise ValueError, TypeError… on malformed data
        raise ModelLoadError(
            f"{what} '{tensor.name}' cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})",
            hint="the file may be truncated or corrupt; export it again",
        ) from error
    return array


def sparse_array(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """A SparseTensorProto as a dense numpy array (linear or coordinate indices)."""
    dims = tuple(int(d) for d in sparse.dims)
    check_size(sparse.values.name or "sparse constant", dims)
    values = numpy_helper.to_array(sparse.values).ravel()
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(dims, dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def constant_node_value(node: onnx.NodeProto, external: ExternalData | None = None) -> np.ndarray:
    """The tensor a Constant node holds, in any of its attribute forms."""
    if len(node.attribute) != 1:
        raise ModelLoadError(
            f"Constant node '{node.name}' must have exactly one attribute, not {len(node.attribute)}",
            hint="the model is malformed; export it again",
        )
    attr = node.attribute[0]
    if attr.name == "value":
        return tensor_array(attr.t, "constant", external)
    if attr.name == "sparse_value":
        return sparse_array(attr.sparse_tensor)
    value = helper.get_attribute_value(attr)
    if attr.name in ("value_string", "value_strings"):
        decoded = (
            [v.decode("utf-8", "replace") for v in value]
            if isinstance(value, list)
            else value.decode("utf-8", "replace")
        )
        return np.asarray(decoded, dtype=object)
    dtype = np.float32 if attr.name.startswith("value_float") else np.int64
    return np.asarray(value, dtype=dtype)


def ir_nodes(
    graph: onnx.GraphProto,
    values: dict[str, Value],
    *,
    rename: dict[str, str] | None = None,
    prefix: str = "",
    external: ExternalData | None = None,
) -> list[Node]:
    """The nodes of ``graph`` as IR nodes; Constant nodes and initializers become constant values.

    ``rename`` maps names defined in this graph to the names they take in the IR (for an inlined
    branch); names it does not map, outer-scope ones included, are kept. ``external``: where
    external data not loaded with the model is read from (memory-mapped).
    """
    rename = rename if rename is not None else {}

    def ir(name: str) -> str:
        return rename.get(name, name) if name else ""

    for init in graph.initializer:
        array = tensor_array(init, "initializer", external)
        values[ir(init.name)] = Value(ir(init.name), tuple(array.shape), array)
    for sparse in graph.sparse_initializer:
        array = sparse_array(sparse)
        values[ir(sparse.values.name)] = Value(ir(sparse.values.name), tuple(array.shape), array)
    nodes: list[Node] = []
    # A generated name gives way to the names the model's author wrote (a --max-layer-factor table
    # names those); the IR graph makes any name still repeated unique (ir.Graph).
    written = {proto.name for proto in graph.node if proto.name}
    for index, proto in enumerate(graph.node):
        name = prefix + (proto.name or unused_name(f"{proto.op_type}_{index}", written))
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            array = constant_node_value(proto, external)
            values[ir(proto.output[0])] = Value(ir(proto.output[0]), tuple(array.shape), array)
            continue
        attrs = {attr.name: decode_attribute(attr) for attr in proto.attribute}
        if rename:
            for key, value in attrs.items():
                if isinstance(value, onnx.GraphProto):
                    attrs[key] = renamed_graph(value, rename)
                elif isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto):
                    attrs[key] = [renamed_graph(body, rename) for body in value]
        implicit = sorted({ir(n) for body in subgraphs(proto) for n in outer_scope_reads(body)})
        nodes.append(
            Node(
                name,
                proto.op_type,
                tuple(ir(n) for n in proto.input),
                tuple(ir(n) for n in proto.output),
                attrs,
                proto.domain,
                implicit_inputs=tuple(implicit),
            )
        )
    return nodes


_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def non_finite_initializers(graph: onnx.GraphProto, external: ExternalData | None = None) -> str | None:
    """The name of the first float initializer or Constant node holding NaN or Inf, if any
    (external data left on disk is read in chunks, never whole).  One whose only uses lead to a
    softmax through Adds or the branches of Wheres may hold −∞: an attention mask as the ONNX
    exporters write it (the softmax after it gives those entries 0)."""
    masks = _only_added(graph)
    for init in graph.initializer:
        if init.data_type in _FLOATS:
            if external is not None and uses_external_data(init):
                check_size(init.name, list(init.dims))
                if external.all_finite(init, "initializer"):
                    continue
                if init.name in masks and _finite_or_mask(tensor_array(init, "initializer", external), True):
                    continue  # a mask is read whole: the size of the scores it is added to
                return init.name
            if not _finite_or_mask(tensor_array(init, "initializer"), init.name in masks):
                return init.name
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        try:
            array = constant_node_value(node, external)
        except ModelLoadError:
            continue  # malformed: the loader says so when it reads the node
        if array.dtype.kind == "f" and not _finite_or_mask(array, node.output[0] in masks):
            return node.output[0]
    return None


def _finite_or_mask(array: np.ndarray, mask: bool) -> bool:
    values = array.astype(np.float64)
    if np.all(np.isfinite(values)):
        return True
    return mask and not np.any(np.isnan(values) | (values == np.inf))


# Ops that only move or copy a mask's entries on its way to the Add (the legacy exporter expands
# and reshapes a key-padding mask there).
_MASK_MOVES = frozenset({"Expand", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten", "Tile"})


def _only_added(graph: onnx.GraphProto) -> set[str]:
    """The names every path from which (in this graph, none in a subgraph) goes through moves of its
    entries (``_MASK_MOVES``) and Adds or the branches of Wheres, at least one, into a Softmax or
    LogSoftmax, or into the mask input of an Attention op, and nowhere else: where an entry of −∞
    is an attention mask."""
    uses: dict[str, list[onnx.NodeProto]] = {}
    other: set[str] = set(output.name for output in graph.output)
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
        for body in subgraphs(node):
            other.update(name for inner in body.node for name in inner.input)

    def masks(name: str, added: bool, depth: int = 0) -> bool:
        readers = uses.get(name, [])
        if name in other or not readers or depth > len(graph.node):
            return False
        for node in readers:
            if node.domain:
                return False
            if node.op_type in ("Softmax", "LogSoftmax"):
                ok = added
            elif node.op_type == "Attention" and list(node.input[3:4]) == [name] and node.input[:3].count(name) == 0:
                ok = True  # opset 23's attn_mask: added to the scores before the op's own softmax
            elif node.op_type == "Add" or _a_branch(node, name):
                ok = all(masks(out, True, depth + 1) for out in node.output)
            elif node.op_type in _MASK_MOVES:
                ok = node.input[0] == name and all(masks(out, added, depth + 1) for out in node.output)
            else:
                ok = False
            if not ok:
                return False
        return True

    return {name for name in uses if masks(name, False)}


def _a_branch(node: onnx.NodeProto, name: str) -> bool:
    """Whether ``name`` is one of a Where's branches, not its condition."""
    return node.op_type == "Where" and name in node.input[1:] and name != node.input[0]
