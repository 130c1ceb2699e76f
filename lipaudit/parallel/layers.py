"""The layers of one model as independent jobs: each measures one node's factors, ahead of compose.

The expensive factors are the operator norms of layers with weights (``MEASURED_OPS``); each one
reads only its node, that node's weights and the shapes around it, so it can be computed anywhere,
in any order. A job carries a one-node graph with just that; compose then propagates the factors
serially, in graph order, exactly as if it had computed them itself. The rules of these ops must
therefore read nothing of the graph beyond their node's own values; the tests compare every
sample model's report with a serial run to hold them to it.

A weight left on disk (``MappedTensor``) travels as its file slice: the job opens the bytes
itself, while it measures, so no process holds more than the layers it is measuring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..compose import node_factors
from ..ir import Graph, Node, Value
from ..load.mapped import ExternalSlice, slice_of
from ..ops import Factor, RuleContext
from ..spectral.device import exact_cuda_math
from .jobs import Executor, Job, TaskFailure

# Ops whose factor is an operator norm of their weights: the work worth a job of its own.
MEASURED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool"})

ProgressFn = Callable[[int, int, Node], None]


@dataclass
class LayerTask:
    """One node and what its rule reads: the shapes of its values, and its constants by shared key."""

    node: Node
    shapes: dict[str, tuple[int, ...] | None]
    constants: dict[str, str]  # value name → key in the job's shared inputs
    inputs: list[str]
    opset: int
    opset_imports: dict[str, int]
    method: str
    device: str


def measured_nodes(graph: Graph) -> list[Node]:
    """The nodes worth measuring in jobs, in graph order (nodes that read no variable input are not
    measured at all: compose treats them as constants)."""
    return [
        node for node in graph.nodes if node.op_type in MEASURED_OPS and not node.domain and graph.variable_inputs(node)
    ]


def layer_job(graph: Graph, ctx: RuleContext, node: Node, model_key: str, *, device: str | None = None) -> Job:
    names = [name for name in dict.fromkeys(node.all_inputs + node.outputs) if name]
    shapes = {name: graph.shape(name) for name in names}
    constants: dict[str, str] = {}
    shared: dict[str, Any] = {}
    for name in names:
        array = graph.const(name)
        if array is not None:
            key = f"{model_key}/{name}"
            constants[name] = key
            shared[key] = slice_of(array) or array
    task = LayerTask(
        node,
        shapes,
        constants,
        graph.variable_inputs(node),
        ctx.opset(node),
        dict(graph.opset_imports),
        ctx.method,
        device or str(ctx.device),
    )
    return Job(
        measure_layer,
        (task,),
        shared,
        label=f"{node.op_type} {node.name}",
        gpu=torch.device(task.device).type == "cuda",
    )


def _opened(value: Any) -> Any:
    return value.open() if isinstance(value, ExternalSlice) else value


def measure_layer(shared: dict[str, Any], task: LayerTask) -> list[Factor]:
    """The node's factors, one per output, computed on a graph of that node alone."""
    values = {name: Value(name, shape) for name, shape in task.shapes.items()}
    for name, key in task.constants.items():
        const = _opened(shared[key])
        values[name] = Value(name, tuple(const.shape), const)
    graph = Graph(
        [task.node],
        values,
        task.inputs,
        [name for name in task.node.outputs if name],
        opset=task.opset,
        opset_imports=task.opset_imports,
    )
    device = torch.device(task.device)
    with exact_cuda_math(device):
        return node_factors(task.node, RuleContext(graph, method=task.method, device=device))


def unmeasured(node: Node, failure: TaskFailure) -> list[Factor]:
    """What a layer whose job failed contributes: unknown, never a guess."""
    reason = f"{node.op_type} '{node.name}' could not be measured: {failure.reason}"
    return [Factor.unknown(reason)] * max(1, len(node.outputs))


def measure_layers(
    graph: Graph,
    ctx: RuleContext,
    executor: Executor,
    on_node: ProgressFn | None = None,
    *,
    model_key: str = "model",
    device: str | None = None,
) -> tuple[dict[Node, list[Factor]], list[str]]:
    """Every measured node's factors, by node, computed by ``executor``; and a notice per node whose
    job failed (its factors are then unknown, so the bound is incomplete)."""
    nodes = measured_nodes(graph)
    jobs = [layer_job(graph, ctx, node, model_key, device=device) for node in nodes]
    node_of = {id(job): node for job, node in zip(jobs, nodes)}

    def done(finished: int, total: int, job: Job) -> None:
        if on_node is not None:
            on_node(finished, total, node_of[id(job)])

    outcomes = executor.run(jobs, done)
    factors: dict[Node, list[Factor]] = {}
    notices: list[str] = []
    for node, outcome in zip(nodes, outcomes):
        if isinstance(outcome, TaskFailure):
            factors[node] = unmeasured(node, outcome)
            notices.append(f"layer '{node.name}' ({node.op_type}) was not measured: {outcome.reason}")
        else:
            factors[node] = outcome
    return factors, notices
