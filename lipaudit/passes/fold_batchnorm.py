"""Fold an inference BatchNorm into the Conv, ConvTranspose, Gemm or MatMul that feeds it.

The fused layer is measured as one operator, whose norm is never above the product of the two
factors and is often well below it.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops.normalization import batchnorm_scale
from .manager import Pass


def _bn_parameters(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(multiplier, offset) of y = multiplier·x + offset per channel, or None if not foldable."""
    if bn.attr_int("training_mode", 0) or any(bn.outputs[1:]):
        return None
    parts = [graph.const(name) for name in bn.inputs[1:5]]
    if len(parts) != 4 or any(p is None for p in parts):
        return None
    scale, bias, mean, var = (np.asarray(p, np.float64) for p in parts)
    if scale.ndim != 1 or not bn.attr_int("spatial", 1):
        return None  # opset < 9 spatial=0: statistics per activation, not per channel
    with np.errstate(divide="ignore", invalid="ignore"):
        multiplier = batchnorm_scale(scale, var, bn.attr_float("epsilon"))
    if not np.all(np.isfinite(multiplier)):
        return None  # a division by zero: left to the BatchNormalization rule, which says so
    return multiplier, bias - mean * multiplier


def _scaled_weight(producer: Node, graph: Graph, multiplier: np.ndarray) -> np.ndarray | None:
    weight = np.asarray(graph.const(producer.inputs[1]), np.float64)
    if producer.op_type == "Conv":
        return weight * multiplier.reshape((-1,) + (1,) * (weight.ndim - 1))
    if producer.op_type == "ConvTranspose":
        groups = producer.attr_int("group")
        per_group = weight.shape[1]
        # Output channel of weight[c_in, j] is group(c_in)·per_group + j.
        group_of_input = np.arange(weight.shape[0]) // (weight.shape[0] // groups)
        index = group_of_input[:, None] * per_group + np.arange(per_group)[None, :]
        return weight * multiplier[index].reshape(index.shape + (1,) * (weight.ndim - 2))
    if producer.op_type == "Gemm":
        return weight * (multiplier[:, None] if producer.attr_int("transB") else multiplier[None, :])
    if producer.op_type == "MatMul" and weight.ndim == 2:
        return weight * multiplier[None, :]
    return None


def _output_channels(producer: Node, graph: Graph) -> int:
    """How many output channels (features) the producer's weight has."""
    weight = graph.const(producer.inputs[1])
    assert weight is not None  # _foldable_producer checked it
    if producer.op_type == "Conv":
        return int(weight.shape[0])
    if producer.op_type == "ConvTranspose":
        return int(weight.shape[1]) * producer.attr_int("group")
    if producer.op_type == "Gemm":
        return int(weight.shape[0] if producer.attr_int("transB") else weight.shape[1])
    return int(weight.shape[1])


def _foldable_producer(graph: Graph, bn: Node) -> Node | None:
    producer = graph.producer(bn.inputs[0])
    if producer is None or graph.sole_consumer(bn.inputs[0]) is not bn:
        return None
    if producer.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or producer.domain:
        return None
    if len(producer.inputs) < 2 or graph.is_const(producer.inputs[0]) or not graph.is_const(producer.inputs[1]):
        return None
    if producer.op_type == "Gemm" and (producer.attr_float("alpha") != 1.0 or producer.attr_float("beta") != 1.0):
        return None
    shape = graph.shape(bn.inputs[0])
    if producer.op_type in ("Gemm", "MatMul") and (shape is None or len(shape) != 2):
        return None  # BatchNorm's channel axis is 1, the features axis only for 2-D outputs
    weight = graph.const(producer.inputs[1])
    assert weight is not None  # checked above
    if (weight.ndim != 2) if producer.op_type in ("Gemm", "MatMul") else (weight.ndim < 3):
        return None  # a malformed weight: left to the producer's own rule, which says so
    return producer


class FoldBatchNorm(Pass):
    name = "fold-batchnorm"

    def run(self, graph: Graph) -> bool:
        changed = False
        for bn in [n for n in graph.nodes if n.op_type == "BatchNormalization" and not n.domain]:
            changed |= self._fold(graph, bn)
        return changed

    @staticmethod
    def _fold(graph: Graph, bn: Node) -> bool:
        producer = _foldable_producer(graph, bn)
        parameters = _bn_parameters(graph, bn) if producer is not None else None
        if producer is None or parameters is None:
            return False
        multiplier, offset = parameters
        if _output_channels(producer, graph) != multiplier.size:
            return False
        weight = _scaled_weight(producer, graph, multiplier)
        if weight is None:
            return False
        bias_name = producer.inputs[2] if len(producer.inputs) > 2 and producer.inputs[2] else ""
        old_bias = graph.const(bias_name) if bias_name else np.zeros(1)
        if old_bias is None:
            return False
        bias = np.asarray(old_bias, np.float64) * multiplier + offset
        new_weight = graph.new_value(f"{producer.name}::weight_bn_folded", const=weight)
        new_bias = graph.new_value(
            f"{producer.name}::bias_bn_folded",
            const=bias.reshape(multiplier.shape) if bias.size == multiplier.size else bias,
        )
        if producer.op_type == "MatMul":
            producer.op_type = "Gemm"
            producer.attrs = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
        graph.remove_node(bn)
        graph.set_inputs(producer, [producer.inputs[0], new_weight.name, new_bias.name])
        graph.set_outputs(producer, [bn.outputs[0]])
        producer.notes.append(f"BatchNormalization '{bn.name}' folded in")
        return True
