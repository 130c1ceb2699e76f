"""Evaluate nodes whose inputs are all known, so rules see constants instead of shape arithmetic.

Exporters compute reshape targets with Shape → Gather → Concat chains; once the input shapes are
fixed those are constants, and a Reshape's target must be known for nothing else than clarity.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ..ir import Graph, Node

# Ops whose output is not a function of their inputs' values: never fold.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


def _known_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    shape = graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(shape)


def _shape_of(node: Node, graph: Graph) -> np.ndarray | None:
    shape = _known_shape(graph, node.inputs[0])
    if shape is None:
        return None
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", None)
    return np.asarray(shape[start:end], dtype=np.int64)


def _evaluate(node: Node, graph: Graph) -> list[np.ndarray] | None:
    inputs = [name for name in node.inputs if name]
    proto = helper.make_node(node.op_type, node.inputs, node.outputs, domain=node.domain or None, **node.attrs)
    try:
        evaluator = ReferenceEvaluator(proto, opsets={"": graph.opset})
        return list(evaluator.run(None, {name: graph.const(name) for name in inputs}))
    except Exception:  # an op the reference evaluator lacks stays a node; its rule decides
        return None


def fold_constants(graph: Graph) -> None:
    kept: list[Node] = []
    for node in graph.nodes:
        results: list[np.ndarray] | None = None
        if node.op_type == "Shape" and node.domain == "":
            shape = _shape_of(node, graph)
            results = None if shape is None else [shape]
        elif node.op_type == "Size" and node.domain == "" and _known_shape(graph, node.inputs[0]) is not None:
            results = [np.asarray(int(np.prod(_known_shape(graph, node.inputs[0]))), dtype=np.int64)]
        elif node.op_type not in _NONDETERMINISTIC and all(graph.is_const(n) for n in node.inputs if n):
            results = _evaluate(node, graph)
        if results is None:
            kept.append(node)
            continue
        for name, array in zip(node.outputs, results):
            if name:
                array = np.asarray(array)
                graph.value(name).const = array
                graph.value(name).shape = tuple(array.shape)
    graph.nodes = kept
