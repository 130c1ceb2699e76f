"""One run of the model's own runtime at the given input shapes, with every intermediate value kept.

It serves twice. The shapes it sees are the ones the rules use (ONNX shape inference and stale
value_info can be wrong: MaxPool with ceil_mode and padding, an editing tool's leftovers), and its
values are what the faithfulness check compares the IR against, node by node.

For ONNX the runtime is onnxruntime, with every node output of the main graph exposed; for the
torch formats the loaders run every aten op themselves, and record what they computed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..ir import Graph, Value

# onnxruntime keeps every exposed value alive at once: past this many bytes in all, the probe is
# skipped (with a notice) rather than risk the memory.
PROBE_MAX_BYTES = 2 * 2**30

_ONNX_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.UINT32: np.uint32,
    onnx.TensorProto.UINT64: np.uint64,
    onnx.TensorProto.BOOL: np.bool_,
}


@dataclass
class RuntimeProbe:
    """The inputs fed to the runtime and every value it computed from them, by IR name."""

    reference: str
    feeds: dict[str, np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    # The outputs of the model's own entry point (the torch module's forward), when they are not
    # among ``values``: compared with the IR's outputs in order.
    outputs: list[np.ndarray] | None = None


class ProbeUnavailable(Exception):
    """The runtime cannot be run on this model here; ``str(error)`` says why."""


def input_feeds(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """Seeded standard normal values for float inputs; zeros (the smallest valid index) for the others."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in shapes.items():
        dtype = np.dtype(dtypes.get(name, np.float32))
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def probe_onnx(model: onnx.ModelProto, graph: Graph, seed: int) -> RuntimeProbe:
    """Run ``model`` (input shapes fixed) in onnxruntime once, keeping every node output of the main graph."""
    import onnxruntime as ort

    declared = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    dtypes = {}
    for name in graph.inputs:
        if declared.get(name) not in _ONNX_NUMPY:
            raise ProbeUnavailable(f"input '{name}' is not a numeric tensor")
        dtypes[name] = _ONNX_NUMPY[declared[name]]
    shapes = {name: tuple(graph.shape(name) or ()) for name in graph.inputs}
    planned = sum(
        4 * math.prod(shape)
        for value in graph.values.values()
        if (shape := value.shape) is not None and all(d >= 0 for d in shape)
    )
    if planned > PROBE_MAX_BYTES:
        raise ProbeUnavailable(f"its intermediate values would take about {planned / 2**30:.1f} GiB at once")
    exposed = copy.deepcopy(model)
    present = {out.name for out in exposed.graph.output}
    names = [name for node in exposed.graph.node for name in node.output if name and name not in present]
    exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    feeds = input_feeds(shapes, dtypes, seed)
    try:
        session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
        wanted = [out.name for out in session.get_outputs()]
        results = session.run(wanted, {name: feeds[name] for name in graph.inputs})
    except Exception as error:  # onnxruntime's own errors: an op or opset it lacks, a custom domain
        raise ProbeUnavailable(f"onnxruntime cannot run the model: {_first_line(error)}") from error
    return RuntimeProbe("onnxruntime", feeds, {name: np.asarray(value) for name, value in zip(wanted, results)})


def probe_module(module: Any, graph: Graph, seed: int) -> RuntimeProbe:
    """Only the outputs of a torch module (any callable on tensors) on seeded float inputs."""
    import torch

    feeds = input_feeds({name: tuple(graph.shape(name) or ()) for name in graph.inputs}, {}, seed)
    with torch.no_grad():
        result = module(*[torch.from_numpy(feeds[name]) for name in graph.inputs])
    flat = [result] if isinstance(result, torch.Tensor) else list(result)
    return RuntimeProbe("torch", feeds, {}, [t.detach().cpu().numpy() for t in flat])


def apply_runtime_shapes(graph: Graph, probe: RuntimeProbe) -> list[str]:
    """Give every IR value the shape the runtime produced; the disagreements, as notices."""
    disagreements = []
    for name, array in probe.values.items():
        value = graph.get(name)
        if value is None and graph.producer(name) is not None:
            # Shape inference left it out (a Reshape to a computed target): the runtime's is the shape.
            value = graph.add_value(Value(name))
        if value is None or value.is_const:
            continue
        shape = tuple(int(d) for d in array.shape)
        if value.shape is not None and tuple(value.shape) != shape and all(d >= 0 for d in value.shape):
            disagreements.append(f"'{name}': {list(value.shape)} declared or inferred, {list(shape)} at run time")
        value.shape = shape
    if not disagreements:
        return []
    shown = "; ".join(disagreements[:3]) + (f"; and {len(disagreements) - 3} more" if len(disagreements) > 3 else "")
    return [f"shapes from {probe.reference} replace what the model declares for {len(disagreements)} value(s): {shown}"]
