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
    # Runs at other inputs, each on the other side of a threshold the model compares its data with
    # (``ReduceSum(x) > c``): the IR is verified there too, so a branch the first run happened to
    # take is never taken for the model.
    crossings: list[RuntimeProbe] = field(default_factory=list)
    # The reference's own relative rounding where it computes in a float coarser than float32's
    # (bfloat16: 2⁻⁸), which the comparison then tolerates; 0 otherwise.
    rounding: float = 0.0


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


def graph_feeds(graph: Graph, seed: int) -> dict[str, np.ndarray] | None:
    """Seeded inputs for the graph's inputs at their shapes and element types (None where a shape
    is open), for a run of lipaudit's own executor where no runtime probe ran."""
    types = graph.metadata.get("elem_types") or {}
    shapes = {name: graph.shape(name) for name in graph.inputs}
    if any(shape is None or any(d is None or d < 0 for d in shape) for shape in shapes.values()):
        return None
    dtypes = {name: _ONNX_NUMPY.get(types.get(name, onnx.TensorProto.FLOAT), np.float32) for name in graph.inputs}
    return input_feeds({name: tuple(shape or ()) for name, shape in shapes.items()}, dtypes, seed)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _probe_feeds(
    model: onnx.ModelProto, graph: Graph, seed: int, *, weights_in_memory: bool = True
) -> dict[str, np.ndarray]:
    """The seeded inputs of a probe, once it is known that they and every value (the weights too,
    when they are in memory) fit in memory."""
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
        if (weights_in_memory or not value.is_const)
        and (shape := value.shape) is not None
        and all(d >= 0 for d in shape)
    )
    if planned > PROBE_MAX_BYTES:
        raise ProbeUnavailable(f"its intermediate values would take about {planned / 2**30:.1f} GiB at once")
    return input_feeds(shapes, dtypes, seed)


def _session(model: onnx.ModelProto, optimised: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimised else level.ORT_DISABLE_ALL
    options.log_severity_level = 4  # its errors reach the user as ProbeUnavailable's one line
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class _FallbackSession:
    """onnxruntime unoptimised (every value as the graph writes it), or optimised where that fails:
    onnxruntime runs some models only optimised (an If's branch output pre-allocated at a shape ONNX
    inference got wrong). The values asked for are graph outputs, which no optimisation removes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.session: Any = None
        self.optimised = False

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> Any:
        try:
            if self.session is None:
                self.session = _session(self.model)
            return self.session.run(names, feed)
        except Exception:
            if self.optimised:
                raise
            self.session, self.optimised = _session(self.model, optimised=True), True
            return self.session.run(names, feed)


# Ops onnxruntime (1.2x) can crash the process on, rather than raise: DFT with its optional inputs
# left empty segfaults. A model holding one is not run here (it has no rule either).
RUNTIME_CRASHES = frozenset({"DFT"})


def refuse_runtime_crashes(model: onnx.ModelProto) -> None:
    """Raise ProbeUnavailable when ``model`` holds an op onnxruntime may crash on."""
    found = sorted({node.op_type for node in model.graph.node if node.op_type in RUNTIME_CRASHES})
    if found:
        raise ProbeUnavailable(f"onnxruntime can crash on {', '.join(found)}, so the model is not run")


def probe_onnx(model: onnx.ModelProto, graph: Graph, seed: int) -> RuntimeProbe:
    """Run ``model`` (input shapes fixed) in onnxruntime once, keeping every node output of the main graph."""
    refuse_runtime_crashes(model)
    feeds = _probe_feeds(model, graph, seed)
    exposed = copy.deepcopy(model)
    present = {out.name for out in exposed.graph.output}
    names = [name for node in exposed.graph.node for name in node.output if name and name not in present]
    exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    wanted = [out.name for out in exposed.graph.output]
    session = _FallbackSession(exposed)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = session.run(wanted, {name: inputs[name] for name in graph.inputs})
        except Exception as error:  # onnxruntime's own errors: an op or opset it lacks, an input it refuses
            raise ProbeUnavailable(f"onnxruntime cannot run the model: {_first_line(error)}") from error
        return {name: np.asarray(value) for name, value in zip(wanted, results)}

    probe = RuntimeProbe("onnxruntime", feeds, run(feeds))
    probe.crossings = threshold_crossings(graph, probe, run)
    return probe


def probe_onnx_by_node(model: onnx.ModelProto, graph: Graph, seed: int) -> RuntimeProbe:
    """The same probe, one node at a time: for a model whose weights stay on disk (memory-mapped).

    Each node of the main graph runs alone in onnxruntime, fed the values computed before it, with
    only its own weights read from the mapping (the IR's constants) and let go after it. The values
    it computes are the ones one run of the whole model computes, so the shapes and the
    verification are the same as for a model loaded whole.
    """
    refuse_runtime_crashes(model)
    feeds = _probe_feeds(model, graph, seed, weights_in_memory=False)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _run_by_node(model, graph, inputs)

    probe = RuntimeProbe("onnxruntime", feeds, run(feeds))
    probe.crossings = threshold_crossings(graph, probe, run)
    return probe


def _run_by_node(model: onnx.ModelProto, graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from .onnx_graph import outer_scope_reads, subgraphs

    values = dict(feeds)
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            const = graph.const(node.output[0])
            if const is None:
                raise ProbeUnavailable(f"constant '{node.output[0]}' was not read")
            values[node.output[0]] = np.asarray(const)
            continue
        reads = [name for name in node.input if name]
        reads += sorted({name for body in subgraphs(node) for name in outer_scope_reads(body)})
        inputs, weights = [], []
        for name in dict.fromkeys(reads):
            if name in values:
                array = values[name]
                if array.dtype.kind not in "biuf":
                    raise ProbeUnavailable(f"'{name}' holds {array.dtype} values, which a node alone cannot be fed")
                element = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
                inputs.append(onnx.helper.make_tensor_value_info(name, element, list(array.shape)))
            elif (const := graph.const(name)) is not None:
                weights.append(onnx.numpy_helper.from_array(np.asarray(const), name))
            else:
                raise ProbeUnavailable(f"node '{node.name or node.op_type}' reads '{name}', which nothing computed")
        alone = onnx.helper.make_graph(
            [node], f"node_{index}", inputs, [onnx.ValueInfoProto(name=name) for name in node.output if name], weights
        )
        single = onnx.helper.make_model(alone, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        single.functions.extend(model.functions)
        try:
            results = _FallbackSession(single).run(None, {vi.name: values[vi.name] for vi in inputs})
        except Exception as error:  # onnxruntime's own errors, as for the whole model
            raise ProbeUnavailable(f"onnxruntime cannot run the model: {_first_line(error)}") from error
        del single, alone, weights  # this layer's weights, read from the mapping: let them go
        values.update((name, np.asarray(result)) for name, result in zip([n for n in node.output if n], results))
    return {name: array for name, array in values.items() if name not in feeds}


# Comparisons of data with a constant: a threshold the model branches or steps on.
_COMPARISONS = frozenset({"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"})
# The inputs tried for the other side of each threshold: the first run's inputs scaled by t, then
# shifted by s (a sum or a mean of the data crosses its threshold on one of them).
CROSSING_SCALES = (-1.0, 0.25, -0.25, 4.0, -4.0, 16.0, -16.0, 0.01)  # never 0: every entry a tie
CROSSING_SHIFTS = (-1.0, 1.0, -4.0, 4.0, -16.0, 16.0)


def data_thresholds(graph: Graph) -> list[str]:
    """The outputs of comparisons of a value computed from the network input's *values* with a constant
    (``ReduceSum(x) > c``; not a comparison of static shapes), in a graph not yet folded."""
    from ..ir.data_shapes import data_shape_reason

    dependent = set(graph.inputs)
    data_shaped: dict[str, str] = {}

    class _Values:  # the graph, where "constant" means "not computed from the input's values"
        @staticmethod
        def is_const(name: str) -> bool:
            return name not in dependent

    found = []
    for node in graph.nodes:
        reads = [name for name in node.all_inputs if name]
        if node.op_type in ("Shape", "Size") and not node.domain:
            moves = bool(reads) and reads[0] in data_shaped  # a count of data, not a static shape
        else:
            moves = any(name in dependent for name in reads)
        reason = data_shape_reason(node, _Values(), data_shaped)  # type: ignore[arg-type]
        if reason is not None:
            data_shaped.update((name, reason) for name in node.outputs if name)
        if not moves:
            continue
        dependent.update(name for name in node.outputs if name)
        operands = [name for name in node.inputs if name]
        if node.op_type in _COMPARISONS and not node.domain and len(operands) == 2:
            if any(graph.is_const(name) for name in operands):
                found.append(node.outputs[0])
    return found


def threshold_crossings(
    graph: Graph, probe: RuntimeProbe, run: Any, *, limit: int = len(CROSSING_SCALES) + len(CROSSING_SHIFTS)
) -> list[RuntimeProbe]:
    """Runs at inputs on the other side of each data threshold of the graph from ``probe``'s (one run
    per threshold crossed, the first candidate that crosses it), at most ``limit`` runs tried."""
    thresholds = [name for name in data_thresholds(graph) if name in probe.values]
    if not thresholds:
        return []
    floats = [name for name, array in probe.feeds.items() if array.dtype.kind == "f"]
    candidates = [
        {name: (array * t).astype(array.dtype) if name in floats else array for name, array in probe.feeds.items()}
        for t in CROSSING_SCALES
    ] + [
        {name: (array + s).astype(array.dtype) if name in floats else array for name, array in probe.feeds.items()}
        for s in CROSSING_SHIFTS
    ]
    crossings: list[RuntimeProbe] = []
    left = set(thresholds)
    for feeds in candidates[:limit] if floats else []:
        try:
            values = run(feeds)
        except ProbeUnavailable:  # an input the model refuses (a log of a negative...): not a crossing
            continue
        crossed = {name for name in left if name in values and not np.array_equal(values[name], probe.values[name])}
        if crossed:
            crossings.append(RuntimeProbe(probe.reference, feeds, values))
            left -= crossed
        if not left:
            break
    return crossings


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
