"""Evaluate nodes whose inputs are all known, so rules see constants instead of shape arithmetic.

Exporters compute reshape targets with Shape → Gather → Concat chains; once the input shapes are
fixed those are constants. ``Shape`` and ``Size`` are folded only where a static argument proves the
shape depends on the input shapes and constants alone (lipaudit.ir.data_shapes), never because
a run saw it: the shape of NonZero's output is a count of data.
"""

from __future__ import annotations

import numpy as np
from onnx import ValueInfoProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..ir import Graph, Node, Value
from ..ir.data_shapes import data_shape_reason
from ..load.probe import RUNTIME_CRASHES
from .manager import Pass

# Ops whose output is not a function of their inputs' values: never fold.
_NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


# Ops the reference evaluator computes otherwise than the runtime: it ignores the recurrent ops'
# activations (an LSTM with Affine folded to the default's values). They fold by onnxruntime only.
RUNTIME_FIRST = frozenset({"LSTM", "GRU", "RNN"})


def _known_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    shape = graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(shape)


def _shape_of(node: Node, graph: Graph) -> np.ndarray | None:
    shape = _known_shape(graph, node.inputs[0])
    if shape is None:
        return None
    return np.asarray(shape[node.attr_int("start", 0) : node.attr("end", None)], dtype=np.int64)


def _attribute_value(value):
    """An IR attribute as make_node takes it back (tensors as TensorProto)."""
    return numpy_helper.from_array(value) if isinstance(value, np.ndarray) else value


def _evaluate(node: Node, graph: Graph) -> list[np.ndarray | None] | None:
    # with the outer-scope values a Loop's or Scan's body reads, which the runtime's copy must hold
    inputs = [name for name in node.all_inputs if name]
    try:
        attrs = {key: _attribute_value(value) for key, value in node.attrs.items()}
        proto = helper.make_node(node.op_type, node.inputs, node.outputs, domain=node.domain or None, **attrs)
    except Exception:  # an attribute make_node cannot write back: the node stays; its rule decides
        return None
    if node.op_type in RUNTIME_FIRST:
        return _by_runtime(proto, graph, inputs)
    try:
        evaluator = ReferenceEvaluator(proto, opsets={"": graph.opset})
        found = list(evaluator.run(None, {name: graph.const(name) for name in inputs}))
    except Exception:  # an op the reference evaluator lacks or reads more strictly than the runtime
        return _by_runtime(proto, graph, inputs)
    if any(np.asarray(value).dtype.kind in "fc" for value in found if value is not None):
        # Float arithmetic rounds as each evaluator does (a float Range: 0.7 in the reference
        # evaluator, 0.70000005 in onnxruntime, a threshold apart): the runtime's values are the model's.
        return _by_runtime(proto, graph, inputs) or found
    return found


def _by_runtime(proto, graph: Graph, inputs: list[str]) -> list[np.ndarray | None] | None:
    """The node run by onnxruntime, which runs the model: the legacy exporter writes CumSum's axis
    as a 1-element tensor, which onnxruntime accepts and the reference evaluator refuses, and the
    shape arithmetic around it must still fold."""
    if proto.op_type in RUNTIME_CRASHES:
        return None
    try:
        import onnxruntime as ort

        initializers = [numpy_helper.from_array(np.asarray(graph.const(name)), name) for name in dict.fromkeys(inputs)]
        body = helper.make_graph([proto], "fold", [], [ValueInfoProto(name=name) for name in proto.output if name])
        body.initializer.extend(initializers)
        opsets = [helper.make_opsetid(domain, version) for domain, version in graph.opset_imports.items()]
        model = helper.make_model(body, opset_imports=opsets)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        named = [name for name in proto.output if name]
        values = dict(zip(named, session.run(named, {})))
        # By position, as the node lists its outputs: an omitted one ('') has no value.
        return [np.asarray(values[name]) if name else None for name in proto.output]
    except Exception:  # the runtime cannot run it either: the node stays; its rule decides
        return None


def _results(node: Node, graph: Graph, data_shaped: dict[str, str]) -> list[np.ndarray | None] | None:
    if node.domain:
        return None
    if node.op_type in ("Shape", "Size") and node.inputs and node.inputs[0] in data_shaped:
        return None
    if node.op_type == "Shape":
        shape = _shape_of(node, graph)
        return None if shape is None else [shape]
    if node.op_type == "Size":
        known = _known_shape(graph, node.inputs[0])
        return None if known is None else [np.asarray(int(np.prod(known)), dtype=np.int64)]
    if node.op_type not in _NONDETERMINISTIC and all(graph.is_const(n) for n in node.all_inputs if n):
        return _evaluate(node, graph)
    return None


class FoldConstants(Pass):
    name = "fold-constants"

    def run(self, graph: Graph) -> bool:
        changed = False
        data_shaped: dict[str, str] = {}  # filled in graph order, as the folds above make constants
        for node in list(graph.nodes):
            results = _results(node, graph, data_shaped)
            if results is None:
                reason = data_shape_reason(node, graph, data_shaped)
                if reason is not None:
                    data_shaped.update((name, reason) for name in node.outputs if name)
                continue
            if len(results) != len(node.outputs) or any(n and r is None for n, r in zip(node.outputs, results)):
                continue  # an evaluator that did not give every output by position: the node stays
            for name, array in zip(node.outputs, results):
                if name:
                    array = np.asarray(array)
                    graph.add_value(Value(name, tuple(array.shape), array))
            graph.remove_node(node)
            changed = True
        return changed
