"""Recognise a convolution of a circularly padded input (ops/circular_conv.py proves its factor).

The forms matched, ending in a Conv with no padding of its own whose input is read by it alone:
* Pad in wrap mode with constant pads on the spatial axes only (opset 19 exports, TorchScript);
* torch's opset ≤ 18 export, per padded axis: Concat(Slice(v, last b), v, Slice(v, first e)) on
  that axis, nested once per axis; each Concat's output read only by the next step, each Slice's
  by its Concat.
The fused node keeps the Conv's output name and reads the unpadded input. It is made only when the
convolution is a slice of one period of the circular one (periodic_conditions); otherwise the pad
and the Conv stay and are bounded as they are.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops.circular_conv import periodic_conditions
from ..ops.registry import FUSED_DOMAIN
from .manager import NodeRewrite
from .matching import axis_of, const_ints, copied_from, known_shape, read_only_by, selection


def _wrap_concat(graph: Graph, concat: Node) -> tuple[str, int, int, int, list[Node]] | None:
    """(padded value, axis, begin, end, [concat, slices]) for Concat(v[−b:], v, v[:e]) along one axis."""
    out_shape = known_shape(graph, concat.outputs[0])
    if out_shape is None or len(concat.inputs) != 3:
        return None
    axis = axis_of(concat.attr_int("axis"), len(out_shape))
    head, tail = selection(graph, concat.inputs[0]), selection(graph, concat.inputs[2])
    source = copied_from(graph, concat.inputs[1])
    shape = known_shape(graph, concat.inputs[1])
    if head is None or tail is None or shape is None or axis is None:
        return None
    size = shape[axis]
    begin, end = len(head.indices), len(tail.indices)
    if (
        head.source != source
        or tail.source != source
        or head.axis != axis
        or tail.axis != axis
        or list(head.indices) != list(range(size - begin, size))
        or list(tail.indices) != list(range(end))
    ):
        return None
    found = [graph.producer(concat.inputs[0]), graph.producer(concat.inputs[2])]
    slices = [s for s in found if s is not None]
    if len(slices) != len(found) or not all(read_only_by(graph, s.outputs[0], [concat]) for s in slices):
        return None
    return concat.inputs[1], axis, begin, end, [concat, *slices]


def _wrap_pad(graph: Graph, pad: Node, rank: int) -> tuple[str, list[int], list[Node]] | None:
    """(input, ONNX pads over every axis, [pad]) for a Pad in wrap mode with constant pads."""
    if pad.attr_str("mode", "constant") != "wrap":
        return None
    pads = const_ints(graph, pad, 1, "pads")
    axes = const_ints(graph, pad, 3, "axes") if len(pad.inputs) > 3 and pad.inputs[3] else list(range(rank))
    if pads is None or axes is None or len(pads) != 2 * len(axes):
        return None
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        positive = axis_of(axis, rank)
        if positive is None:
            return None
        full[positive], full[rank + positive] = pads[i], pads[len(axes) + i]
    return pad.inputs[0], full, [pad]


def _fuse(graph: Graph, conv: Node) -> bool:
    weight = graph.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    x_shape = known_shape(graph, conv.inputs[0])
    if weight is None or x_shape is None or len(x_shape) < 3:
        return False
    rank, n = len(x_shape), len(x_shape) - 2
    if conv.attr_str("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or any(conv.attr_ints("pads", (0,) * 2 * n)):
        return False
    value, pads = conv.inputs[0], [0] * (2 * rank)
    removed: list[Node] = []
    readers: list[Node] = [conv]
    while read_only_by(graph, value, readers):  # the pad's output goes once we fuse
        producer = graph.producer(value)
        if producer is None or producer.domain:
            break
        if producer.op_type == "Pad":
            found = _wrap_pad(graph, producer, rank) if not removed else None
            if found is not None:
                value, pads, removed = found
            break
        if producer.op_type == "Concat" and len(producer.inputs) == 1:  # torch's copy for an unpadded axis
            value, readers = producer.inputs[0], [producer]
            removed.append(producer)
            continue
        wrapped = _wrap_concat(graph, producer) if producer.op_type == "Concat" else None
        if wrapped is None or pads[wrapped[1]] or pads[rank + wrapped[1]]:
            break
        value, axis, begin, end, readers = wrapped
        pads[axis], pads[rank + axis] = begin, end
        removed += readers
    if not removed or any(pads[:2]) or any(pads[rank : rank + 2]):
        return False
    spatial = known_shape(graph, value)
    kernel = tuple(int(k) for k in np.shape(weight)[2:])
    wrap_pads = pads[2:rank] + pads[rank + 2 :]
    strides = conv.attr_ints("strides", (1,) * n) or (1,) * n
    dilations = conv.attr_ints("dilations", (1,) * n) or (1,) * n
    if spatial is None or not any(wrap_pads) or periodic_conditions(spatial[2:], kernel, strides, dilations, wrap_pads):
        return False
    for node in removed:
        graph.remove_node(node)
    conv.op_type, conv.domain = "CircularConv", FUSED_DOMAIN
    conv.attrs = {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "dilations": list(dilations),
        "group": conv.attr_int("group", 1),
        "wrap_pads": list(wrap_pads),
    }
    graph.set_inputs(conv, [value, *conv.inputs[1:]])
    conv.notes.append("fused from a circular pad and a Conv")
    return True


class FuseCircularConv(NodeRewrite):
    name = "fuse-circular-conv"
    op_types = ("Conv",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _fuse(graph, node)
