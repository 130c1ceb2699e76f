"""Recognise GroupNorm that the ONNX exporters spell out through InstanceNormalization.

    y = Reshape(InstanceNormalization(Reshape(x, (N, G, −1)), 1, 0), shape of x) · γ + β

with γ and β constants per channel (shape (C, 1, …, 1)): both torch exporters write nn.GroupNorm
so, where TorchScript and torch.export give one GroupNormalization.  Spelled out, the scale and
the shift are two more nodes that round in float32 (compose.float32_margin), so the twins' figures
differed by two margins; fused, every path has the same graph.  The match is exact: the first
Reshape splits the channels into G contiguous groups of the same batch, the second restores x's
shape, the InstanceNormalization has unit scale and zero bias, and every intermediate is read only
by the pattern.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite


def _constant_operand(graph: Graph, node: Node) -> tuple[str, np.ndarray] | None:
    """(the variable input, the constant) of a binary node with exactly one constant input."""
    if len(node.inputs) != 2:
        return None
    consts = [graph.const(name) for name in node.inputs]
    if (consts[0] is None) == (consts[1] is None):
        return None
    index = 0 if consts[0] is not None else 1
    return node.inputs[1 - index], np.asarray(consts[index])


def _per_channel(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The C values of a constant that broadcasts against ``shape`` (N, C, …) along the channels
    only, or None (a scalar gives C copies)."""
    rank, channels = len(shape), shape[1]
    if values.ndim > rank:
        return None
    full = (1,) * (rank - values.ndim) + values.shape
    if any(size != 1 for axis, size in enumerate(full) if axis != 1) or full[1] not in (1, channels):
        return None
    return np.broadcast_to(values.reshape(-1), (channels,)).copy()


def _sole(graph: Graph, name: str, reader: Node) -> Node | None:
    """The default-domain producer of ``name`` when ``reader`` is its only reader."""
    node = graph.producer(name)
    if node is None or node.domain or graph.sole_consumer(name) is not reader or graph.is_graph_output(name):
        return None
    return node


def _fuse(graph: Graph, add: Node) -> bool:
    shift = _constant_operand(graph, add)
    scaled = None if shift is None else _sole(graph, shift[0], add)
    if shift is None or scaled is None or scaled.op_type != "Mul":
        return False
    scale = _constant_operand(graph, scaled)
    restored = None if scale is None else _sole(graph, scale[0], scaled)
    if scale is None or restored is None or restored.op_type != "Reshape":
        return False
    normalised = _sole(graph, restored.inputs[0], restored)
    if normalised is None or normalised.op_type != "InstanceNormalization" or len(normalised.inputs) != 3:
        return False
    grouped = _sole(graph, normalised.inputs[0], normalised)
    if grouped is None or grouped.op_type != "Reshape":
        return False
    source = grouped.inputs[0]
    shape, split = graph.shape(source), graph.shape(grouped.outputs[0])
    if shape is None or split is None or len(shape) < 3 or graph.shape(restored.outputs[0]) != shape:
        return False
    groups = split[1] if len(split) == 3 and split[0] == shape[0] else 0
    if groups < 1 or shape[1] % groups or split[2] * groups != int(np.prod(shape[1:])):
        return False
    unit, zero = graph.const(normalised.inputs[1]), graph.const(normalised.inputs[2])
    if unit is None or zero is None or not (np.all(unit == 1) and np.all(zero == 0)):
        return False
    gamma, beta = _per_channel(scale[1], shape), _per_channel(shift[1], shape)
    if gamma is None or beta is None:
        return False
    epsilon = normalised.attr_float("epsilon")
    for node in (scaled, restored, normalised, grouped):
        graph.remove_node(node)
    gamma_value = graph.new_value(f"{add.name}_scale", const=gamma.astype(scale[1].dtype))
    beta_value = graph.new_value(f"{add.name}_bias", const=beta.astype(shift[1].dtype))
    add.op_type = "GroupNormalization"
    add.attrs = {"num_groups": groups, "epsilon": float(epsilon)}
    graph.set_inputs(add, [source, gamma_value.name, beta_value.name])
    add.notes.append("fused from Reshape · InstanceNormalization · Reshape · γ + β")
    return True


class FuseGroupNorm(NodeRewrite):
    name = "fuse-group-norm"
    op_types = ("Add",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _fuse(graph, node)
