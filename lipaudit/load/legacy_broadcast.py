"""Opset < 7 broadcasting with an ``axis``, rewritten to the numpy broadcasting every later opset uses.

Add, Sub, Mul, Div (6), Pow, And, Or, Xor, Equal, Greater and Less (1) broadcast their second
input B over the first A only with ``broadcast=1``, and then ``axis`` says where B's dimensions
start in A's: a per-channel (C,) scale on an NCHW tensor is written ``axis=1``.  Numpy aligns B with
A's last axes instead, which is a different function wherever the shapes allow both (W == C).  So B
gets trailing unit dimensions (the initializer reshaped, else an Unsqueeze before the node) and
the attribute goes: the ops then mean what their later versions mean.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from ..errors import ModelLoadError
from ..ir.graph import unused_name
from .onnx_graph import subgraphs

LEGACY_BROADCAST_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less"})
NUMPY_BROADCAST_SINCE = 7


def align_legacy_broadcast(graph: onnx.GraphProto, opset: int) -> bool:
    """Rewrite ``graph``'s legacy axis broadcasts in place (subgraphs too); whether any changed.

    ``graph`` must carry inferred shapes (value_info): B's trailing dimensions come from the ranks."""
    if opset >= NUMPY_BROADCAST_SINCE:
        return False
    ranks = _ranks(graph)
    initializers = {init.name: init for init in graph.initializer}
    taken = set(ranks) | set(initializers) | {out for node in graph.node for out in node.output}
    rewritten: list[onnx.NodeProto] = []
    changed = False
    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        for body in subgraphs(node):
            changed |= align_legacy_broadcast(body, opset)
        axis = next((a for a in node.attribute if a.name == "axis"), None)
        broadcast = next((a.i for a in node.attribute if a.name == "broadcast"), 0)
        if node.domain not in ("", "ai.onnx") or node.op_type not in LEGACY_BROADCAST_OPS or axis is None:
            rewritten.append(node)
            continue
        node.attribute.remove(axis)
        changed = True
        if not broadcast or len(node.input) < 2:
            rewritten.append(node)
            continue
        a, b = node.input[0], node.input[1]
        rank_a, rank_b = ranks.get(a), ranks.get(b)
        if rank_a is None or rank_b is None:
            raise ModelLoadError(
                f"node '{node.name or node.op_type}' broadcasts along axis {axis.i} (opset {opset}) and the "
                "ranks of its inputs are unknown",
                hint="give every input's shape with --input-shape, or convert the model to opset 7 or later",
            )
        start = axis.i + rank_a if axis.i < 0 else axis.i
        trailing = rank_a - start - rank_b
        if trailing < 0 or start < 0:
            raise ModelLoadError(
                f"node '{node.name or node.op_type}' broadcasts a rank-{rank_b} input from axis {axis.i} of a "
                f"rank-{rank_a} one, which does not fit",
                hint="the model is invalid at its opset",
            )
        if trailing == 0:
            rewritten.append(node)
            continue
        aligned = unused_name(f"{b}_from_axis_{start}", taken)
        taken.add(aligned)
        if b in initializers:
            array = numpy_helper.to_array(initializers[b])
            graph.initializer.append(numpy_helper.from_array(array.reshape(array.shape + (1,) * trailing), aligned))
        else:
            axes = list(range(rank_b, rank_b + trailing))
            rewritten.append(helper.make_node("Unsqueeze", [b], [aligned], name=aligned, axes=axes))
            graph.value_info.append(_aligned_info(graph, b, aligned, trailing))
        ranks[aligned] = rank_b + trailing
        node.input[1] = aligned
        rewritten.append(node)
    if changed:
        del graph.node[:]
        graph.node.extend(rewritten)
    return changed


def _ranks(graph: onnx.GraphProto) -> dict[str, int | None]:
    ranks: dict[str, int | None] = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = info.type.tensor_type
        ranks[info.name] = len(tensor.shape.dim) if tensor.HasField("shape") else None
    for init in graph.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def _aligned_info(graph: onnx.GraphProto, source: str, name: str, trailing: int) -> onnx.ValueInfoProto:
    info = next(i for i in list(graph.input) + list(graph.value_info) + list(graph.output) if i.name == source)
    aligned = onnx.ValueInfoProto()
    aligned.CopyFrom(info)
    aligned.name = name
    for _ in range(trailing):
        aligned.type.tensor_type.shape.dim.add().dim_value = 1
    return aligned
