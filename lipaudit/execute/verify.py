"""The faithfulness check: does the IR compute what the model file computes?

An upper bound is only worth something for the function that ships. We run the IR (the graph
after loading and rewriting, exactly what the analyzers measured) with the torch executor, and
the model's own runtime (onnxruntime for ONNX, the loaded module for TorchScript / torch.export),
on a few random inputs of the stated shape. On a mismatch we find the first node whose output
diverges by bisecting over intermediate values that exist in both graphs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import ExecutionError, VerificationError
from .executor import Executor
from ..ir import Graph
from ..report import Verification, skipped

DEFAULT_INPUTS = 2
AUTO_MAX_PARAMETERS = 50_000_000  # verification is on by default below this
RTOL = 1e-3  # relative to the largest entry of the reference value: float32 noise is far below
ATOL = 1e-5

_ONNX_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # FLOAT, FLOAT16, DOUBLE


@dataclass
class Comparison:
    max_abs_diff: float
    tolerance: float
    ok: bool
    detail: str = ""


def compare(got: torch.Tensor | np.ndarray, want: np.ndarray) -> Comparison:
    """Entrywise, with a tolerance relative to the reference's largest entry (float32 rounding)."""
    have = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = np.asarray(want)
    if have.shape != want.shape:
        return Comparison(float("inf"), 0.0, False, f"shape {list(have.shape)} instead of {list(want.shape)}")
    if want.size == 0:
        return Comparison(0.0, 0.0, True)
    if want.dtype.kind in "biu" or have.dtype.kind in "biu":
        differ = int(np.count_nonzero(have.astype(np.float64) != want.astype(np.float64)))
        return Comparison(float(differ > 0), 0.0, differ == 0, f"{differ} entries differ" if differ else "")
    a, b = have.astype(np.float64), want.astype(np.float64)
    finite = np.isfinite(b)
    same_specials = np.array_equal(np.isfinite(a), finite) and np.array_equal(np.isnan(a), np.isnan(b)) and \
        np.array_equal(a[np.isinf(b)], b[np.isinf(b)])
    if not finite.any():
        return Comparison(0.0 if same_specials else float("inf"), 0.0, same_specials)
    diff = float(np.abs(a[finite] - b[finite]).max()) if np.isfinite(a[finite]).all() else float("inf")
    tolerance = ATOL + RTOL * float(np.abs(b[finite]).max())
    ok = same_specials and diff <= tolerance
    return Comparison(diff, tolerance, ok, "" if same_specials else "non-finite entries differ")


class _Reference:
    name = ""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def locate(self, executor: Executor, feeds: dict[str, np.ndarray], output: str) -> tuple[str, Comparison] | None:
        """The first IR value whose computation diverges, with how far; None if it cannot tell."""
        return None


class _OnnxReference(_Reference):
    name = "onnxruntime"

    def __init__(self, model: Any, graph: Graph) -> None:
        self.model = model
        self.graph = graph
        self._value_info: dict[str, Any] | None = None
        self._main_session = None

    def input_dtypes(self) -> dict[str, Any]:
        kinds = {vi.name: vi.type.tensor_type.elem_type for vi in self.model.graph.input}
        return {name: _ONNX_FLOAT_TYPES.get(kinds.get(name, 1)) for name in self.graph.inputs}

    def _session(self, outputs: Sequence[str] = ()):
        import onnxruntime as ort

        model = self.model
        if outputs:
            model = copy.deepcopy(self.model)
            present = {out.name for out in model.graph.output}
            for name in outputs:
                if name not in present:
                    model.graph.output.append(self.value_info()[name])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        names = list(outputs) if outputs is not None else list(self.graph.outputs)
        if outputs is None:
            if self._main_session is None:
                self._main_session = self._session()
            session = self._main_session
        else:
            session = self._session(outputs)
        return session.run(names, {name: feeds[name] for name in self.graph.inputs})

    def value_info(self) -> dict[str, Any]:
        """Typed value infos of the model's node outputs (float tensors only), from shape inference."""
        if self._value_info is None:
            from onnx import shape_inference

            inferred = shape_inference.infer_shapes(self.model, check_type=False, strict_mode=False)
            infos = list(inferred.graph.value_info) + list(inferred.graph.output)
            produced = {out for node in self.model.graph.node for out in node.output}
            self._value_info = {vi.name: vi for vi in infos if vi.name in produced
                                and vi.type.tensor_type.elem_type in _ONNX_FLOAT_TYPES}
        return self._value_info

    def locate(self, executor: Executor, feeds: dict[str, np.ndarray], output: str) -> tuple[str, Comparison] | None:
        known = self.value_info()
        candidates = [out for node in self.graph.nodes for out in node.outputs if out and out in known]
        if output not in candidates:
            return None
        position = {name: i for i, name in enumerate(candidates)}
        cache: dict[int, Comparison] = {}

        def probe(index: int) -> Comparison:
            if index not in cache:
                name = candidates[index]
                (want,) = self.run(feeds, [name])
                got = executor.run(feeds, keep=[name])[name]
                cache[index] = compare(got, want)
            return cache[index]

        hi = position[output]
        cache[hi] = probe(hi)
        while True:
            hi = _bisect(hi, lambda i: not probe(i).ok)
            # A DAG is not a chain: the value just before in topological order may be on another branch.
            # Make sure no input of the node we found diverges; if one does, look before it.
            producer = self.graph.producer(candidates[hi])
            diverging = [position[name] for name in (producer.inputs if producer else [])
                         if name in position and position[name] < hi and not probe(position[name]).ok]
            if not diverging:
                return candidates[hi], probe(hi)
            hi = max(diverging)


def _bisect(hi: int, diverges: Callable[[int], bool]) -> int:
    """The smallest index i ≤ hi such that diverges(j) for every probed j in [i, hi]; diverges(hi) holds."""
    lo = -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if diverges(mid):
            hi = mid
        else:
            lo = mid
    return hi


class _TorchReference(_Reference):
    name = "torch"

    def __init__(self, module: Any, graph: Graph) -> None:
        self.module = module
        self.graph = graph

    def input_dtypes(self) -> dict[str, Any]:
        return {name: np.float32 for name in self.graph.inputs}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            result = self.module(*[torch.from_numpy(feeds[name]) for name in self.graph.inputs])
        return [t.detach().cpu().numpy() for t in _flatten(result)]


def _flatten(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [t for value in result.values() for t in _flatten(value)]
    if isinstance(result, (list, tuple)):
        return [t for value in result for t in _flatten(value)]
    return []


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def verify(graph: Graph, source: Any, fmt: str, *, inputs: int = DEFAULT_INPUTS, seed: int = 0,
           device: str | torch.device = "cpu") -> Verification:
    """Compare the IR with the reference runtime on ``inputs`` random inputs.

    Returns a Verification (``checked=False`` with the reason when it cannot compare: an op the
    executor cannot run, no reference, non-float inputs). Raises VerificationError on a mismatch.
    """
    if source is None:
        return skipped("no reference model to compare with")
    reference: _Reference = _OnnxReference(source, graph) if fmt == "onnx" else _TorchReference(source, graph)
    try:
        executor = Executor(graph, device=device, dtype=torch.float32)
    except ExecutionError as error:
        return skipped(_first_line(error))
    dtypes = reference.input_dtypes()
    for name, dtype in dtypes.items():
        if dtype is None:
            return skipped(f"input '{name}' is not a float tensor")
    shapes = {name: graph.shape(name) for name in graph.inputs}
    for name, shape in shapes.items():
        if shape is None or any(d is None or d < 0 for d in shape):
            return skipped(f"the shape of input '{name}' is not known")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(inputs):
        feeds = {name: rng.standard_normal(shapes[name]).astype(dtypes[name]) for name in graph.inputs}
        try:
            expected = reference.run(feeds)
        except Exception as error:  # the runtime's own errors: an op or opset it lacks, a custom domain
            return skipped(f"{reference.name} cannot run the model: {_first_line(error)}")
        if len(expected) != len(graph.outputs):
            return skipped(f"{reference.name} returns {len(expected)} outputs; the IR has {len(graph.outputs)}")
        try:
            got = executor.run(feeds)
        except ExecutionError as error:
            return skipped(_first_line(error))
        for name, want in zip(graph.outputs, expected):
            result = compare(got[name], want)
            if not result.ok:
                _raise_mismatch(graph, reference, executor, feeds, name, result)
            worst = max(worst, result.max_abs_diff)
    return Verification(True, max_abs_diff=worst, inputs=inputs, reference=reference.name)


def _raise_mismatch(graph: Graph, reference: _Reference, executor: Executor, feeds: dict[str, np.ndarray],
                    output: str, result: Comparison) -> None:
    try:
        located = reference.locate(executor, feeds, output)
    except ExecutionError:
        located = None
    hint = ("lipaudit's reading of the model does not compute what the model computes, so no bound is "
            "reported; please report this model (--no-verify skips the check)")
    value, found = located if located is not None else (output, result)
    node = graph.producer(value)
    how = found.detail or f"by up to {found.max_abs_diff:.3g} (tolerance {found.tolerance:.3g})"
    if node is None:
        raise VerificationError(f"the IR's output '{output}' differs from {reference.name}'s {how}", hint,
                                node="", op="")
    raise VerificationError(f"the IR differs from {reference.name} at node '{node.name}' ({node.op_type}): "
                            f"its output '{value}' differs {how}", hint, node=node.name, op=node.op_type)


__all__ = ["AUTO_MAX_PARAMETERS", "DEFAULT_INPUTS", "Verification", "compare", "skipped", "verify"]
