"""Attention whose keys and values are constants (cross-attention to a fixed memory) is a linear map,
a softmax and a linear map: written out so, as the ONNX exporters write it.

The torch loaders keep ``scaled_dot_product_attention`` as one Attention op, and an Attention op
is bounded only on a box (its scores multiply two variables).  With K and V constant nothing is
multiplied: softmax(s·Q·Kᵀ + M)·V is globally Lipschitz, and as MatMul(Q, s·Kᵀ) [+ M], Softmax,
MatMul(·, V) it is the graph the ONNX exports of the same model give (the fusion leaves those
pieces alone), so every path gets the same verdict and figure.  The causal flag and a boolean mask
become an additive mask of 0 and −∞, as the op's own run reads them.
"""

from __future__ import annotations

import numpy as np

from ..intervals.attention import causal_allowed
from ..ir import Graph, Node
from ..ops.attention import attention_scale
from .manager import NodeRewrite
from .matching import known_shape


def _split(graph: Graph, node: Node) -> bool:
    if any(node.outputs[1:]) or len(node.inputs) > 4:
        return False
    if node.attr_float("softcap", 0.0) or not node.inputs[0] or graph.is_const(node.inputs[0]):
        return False
    keys, values = graph.const(node.inputs[1]), graph.const(node.inputs[2])
    mask = graph.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if keys is None or values is None or (len(node.inputs) > 3 and node.inputs[3] and mask is None):
        return False
    query = known_shape(graph, node.inputs[0])
    out = known_shape(graph, node.outputs[0])
    if query is None or out is None or len(query) != 4 or keys.ndim != 4 or values.ndim != 4:
        return False
    keys, values = np.asarray(keys, np.float64), np.asarray(values, np.float64)
    if keys.shape[1] != query[1]:  # grouped-query attention: each key/value head serves a group
        if query[1] % keys.shape[1]:
            return False
        keys = np.repeat(keys, query[1] // keys.shape[1], axis=1)
        values = np.repeat(values, query[1] // values.shape[1], axis=1)
    scale = attention_scale(node, query[-1])
    scores_shape = tuple(query[:-1]) + (keys.shape[-2],)
    added = _additive_mask(mask, bool(node.attr_int("is_causal", 0)), scores_shape)
    name, tag = node.outputs[0], node.name
    scores = graph.new_value(f"{name}_scores", shape=scores_shape).name
    transposed = graph.new_value(f"{name}_keys_t", const=scale * np.swapaxes(keys, -1, -2)).name
    inserted = [Node(f"{tag}_scores", "MatMul", (node.inputs[0], transposed), (scores,))]
    if added is not None:
        masked = graph.new_value(f"{name}_masked", shape=scores_shape).name
        mask_value = graph.new_value(f"{name}_mask", const=added).name
        inserted.append(Node(f"{tag}_mask", "Add", (scores, mask_value), (masked,)))
        scores = masked
    weights = graph.new_value(f"{name}_weights", shape=scores_shape).name
    inserted.append(Node(f"{tag}_softmax", "Softmax", (scores,), (weights,), {"axis": -1}))
    graph.insert_nodes(node, inserted)
    node.op_type, node.attrs = "MatMul", {}
    graph.set_inputs(node, [weights, graph.new_value(f"{name}_values", const=values).name])
    node.notes.append("attention with constant keys and values, written out as MatMul, Softmax, MatMul")
    return True


def _additive_mask(mask: np.ndarray | None, causal: bool, shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask as the op adds it (a boolean one keeps its True entries: the others get −∞), with the
    causal mask's −∞ above the diagonal (aligned top-left, as the op's run aligns it)."""
    added = None
    if mask is not None:
        mask = np.asarray(mask)
        added = np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask.astype(np.float64)
        added = np.broadcast_to(added, shape)
    if causal:
        allowed = causal_allowed(*shape[-2:])
        causal_mask = np.broadcast_to(np.where(allowed, 0.0, -np.inf), shape)
        added = causal_mask if added is None else added + causal_mask
    return None if added is None else np.ascontiguousarray(added)


class SplitConstantAttention(NodeRewrite):
    name = "split-constant-attention"
    op_types = ("Attention",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _split(graph, node)
