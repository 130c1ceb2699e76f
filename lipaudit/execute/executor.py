"""The executor: runs a Graph node by node with the registered ops, freeing values after their last use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ExecutionError
from ..ir import Graph, Node
from ..ops import Env, Op, all_ops, resolve
from ..spectral.device import exact_cuda_math

_NUMPY_TO_TORCH = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
}


def _const_tensor(array: np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    array = np.asarray(array)  # np.array(..., copy=True) keeps 0-d scalars 0-d, unlike ascontiguousarray
    if array.dtype.kind == "f":
        return torch.as_tensor(np.array(array, dtype=np.float64), device=device).to(dtype)
    if array.dtype in _NUMPY_TO_TORCH:
        return torch.as_tensor(np.array(array), device=device)
    if array.dtype.kind in "iu":
        return torch.as_tensor(np.array(array, dtype=np.int64), device=device)
    raise ExecutionError(f"cannot execute with a constant of dtype {array.dtype}", node="", op="")


def _runnable(node: Node, opset: int) -> Op | None:
    op = resolve(node, opset)
    return op if op is not None and op.executable() else None


def can_execute(node: Node, opset: int = 10**6) -> bool:
    return _runnable(node, opset) is not None


def supported_ops() -> list[tuple[str, str]]:
    """(domain, op_type) pairs the executor can run."""
    return sorted({(op.domain, op.op_type) for op in all_ops() if op.executable()})


class GraphInterpreter:
    """Runs a Graph. ``GraphInterpreter(graph)(x)`` returns the graph outputs, in order.

    Raises ExecutionError at construction when some node's op cannot be run (naming the first),
    and at run time when a node fails.
    """

    def __init__(self, graph: Graph, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("the executor computes in float32 or float64")
        self.graph = graph
        self.device = torch.device(device)
        self.dtype = dtype
        self._env = Env(graph.opset, dtype, self.device)
        self._ops: list[Op] = []
        for node in graph.nodes:
            op = _runnable(node, graph.opset_of(node))
            if op is None:
                raise ExecutionError(
                    f"cannot execute op {node.label} (node '{node.name}')",
                    hint="the faithfulness check and the lower bound need every op",
                    node=node.name,
                    op=node.label,
                )
            self._ops.append(op)
        self._consts: dict[str, Tensor] = {}
        produced = {out for node in graph.nodes for out in node.outputs if out}
        for name in {n for node in graph.nodes for n in node.inputs if n} | set(graph.outputs):
            if name in produced or name in graph.inputs:
                continue
            const = graph.const(name)
            if const is None:
                raise ExecutionError(f"value '{name}' is neither computed, an input nor a constant", node=name, op="")
            self._consts[name] = _const_tensor(const, dtype, self.device)
        # The last node reading each value, so intermediates are freed as soon as they are used.
        self._last_use: dict[str, int] = {}
        for index, node in enumerate(graph.nodes):
            for name in node.inputs:
                if name:
                    self._last_use[name] = index

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    def run(
        self,
        feeds: Mapping[str, Tensor | np.ndarray],
        *,
        keep: Iterable[str] = (),
        on_node: Callable[[Node, list[Any], list[Any]], None] | None = None,
    ) -> dict[str, Tensor]:
        """Graph outputs and the values named in ``keep``, by name.

        ``on_node(node, args, outputs)`` sees every node's inputs and outputs as they are computed.
        """
        wanted = set(self.graph.outputs) | set(keep)
        values: dict[str, Tensor] = dict(self._consts)
        for name in self.graph.inputs:
            if name not in feeds:
                raise ExecutionError(f"no value given for input '{name}'", node=name, op="")
            value = feeds[name]
            tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
            values[name] = tensor.to(self.device, self.dtype) if tensor.is_floating_point() else tensor.to(self.device)
        with exact_cuda_math(self.device):
            for index, (node, op) in enumerate(zip(self.graph.nodes, self._ops)):
                args = [values[name] if name else None for name in node.inputs]
                try:
                    result = op.run(self._env, node, args)
                except ExecutionError:
                    raise
                except (
                    RuntimeError,
                    ValueError,
                    TypeError,
                    IndexError,
                    KeyError,
                    StopIteration,
                    ArithmeticError,
                ) as error:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise ExecutionError(
                        f"executing {node.op_type} '{node.name}' failed: {first}", node=node.name, op=node.op_type
                    ) from error
                outputs = result if isinstance(result, (list, tuple)) else [result]
                if on_node is not None:
                    on_node(node, args, list(outputs))
                for name, tensor in zip(node.outputs, outputs):
                    if name:
                        values[name] = tensor
                for name in node.inputs:
                    if name and self._last_use.get(name) == index and name not in wanted and name not in self._consts:
                        values.pop(name, None)
        missing = [name for name in wanted if name not in values]
        if missing:
            raise ExecutionError(f"value '{missing[0]}' was not computed", node=missing[0], op="")
        return {name: values[name] for name in wanted}

    def run_node(self, node: Node, args: list[Any]) -> list[Any]:
        """One node of the graph on the given inputs (the verifier's second look at a node)."""
        op = self._ops[self.graph.nodes.index(node)]
        with exact_cuda_math(self.device):
            result = op.run(self._env, node, args)
        return list(result) if isinstance(result, (list, tuple)) else [result]

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        results = self.run(dict(zip(self.graph.inputs, inputs)))
        return [results[name] for name in self.graph.outputs]


def execute(
    graph: Graph,
    feeds: Mapping[str, Tensor | np.ndarray],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Run ``graph`` once on ``feeds``: its outputs by name."""
    return GraphInterpreter(graph, device=device, dtype=dtype).run(feeds)
