"""Recognise piecewise-linear activations that the ONNX exporters spell out, and chains of clips.

* Softshrink (torch's, λ ≥ 0) is one Shrink(λ, bias = λ) through TorchScript and torch.export.
  The legacy exporter writes Where(x > λ, x − λ, 0) + Where(x < −λ, x + λ, 0), and dynamo writes
  Where(|x| > λ, x − sign(x)·λ, x·0).  Spelled out, the Wheres test the input and their rules
  report a jump; as one Shrink the function is continuous with slope at most 1.
* Clip(Clip(x, a₁, b₁), a₂, b₂) is Clip(x, g(a₁), g(b₁)) with g = Clip(·, a₂, b₂) (both monotone):
  dynamo's optimiser merges such chains (a clamp then a hardtanh) and the other paths keep two,
  whose slope ranges the recursion treats as two layers.
* Max(x, c) and Min(x, c) with a scalar constant c are Clips (a ReLU or ReLU6 written that way).
Every match is exact: constants are scalars, every intermediate is read only by the pattern.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite
from .matching import constant_operand, producer_of, read_only_by


def _made_by(graph: Graph, name: str, op_type: str, reader: Node) -> Node | None:
    """The producer of ``name`` when it is an ``op_type`` read only by ``reader``."""
    node = producer_of(graph, name, op_type)
    return node if node is not None and read_only_by(graph, name, [reader]) else None


def _with_scalar(graph: Graph, node: Node | None) -> tuple[str, float] | None:
    """(the variable input, the scalar) of a binary node whose second input is a scalar constant."""
    if node is None or len(node.inputs) != 2:
        return None
    value = graph.scalar(node.inputs[1])
    return None if value is None or graph.is_const(node.inputs[0]) else (node.inputs[0], value)


def _one_side(graph: Graph, where: Node, test: str, step: str) -> tuple[str, float, list[Node]] | None:
    """Where(x ≷ c, x ∓ c', 0) as the legacy exporter writes one side of softshrink:
    (x, c, the nodes) with ``test`` Greater and ``step`` Sub, or Less and Add (then c = −c')."""
    if len(where.inputs) != 3 or graph.scalar(where.inputs[2]) != 0.0:
        return None
    compare, shifted = _made_by(graph, where.inputs[0], test, where), _made_by(graph, where.inputs[1], step, where)
    level, shift = _with_scalar(graph, compare), _with_scalar(graph, shifted)
    if compare is None or shifted is None or level is None or shift is None or level[0] != shift[0]:
        return None
    if level[1] != (shift[1] if test == "Greater" else -shift[1]):
        return None
    return level[0], shift[1], [compare, shifted, where]


def _legacy_softshrink(graph: Graph, add: Node) -> tuple[str, float, list[Node]] | None:
    if len(add.inputs) != 2:
        return None
    for first, second in (add.inputs, add.inputs[::-1]):
        upper, lower = _made_by(graph, first, "Where", add), _made_by(graph, second, "Where", add)
        above = None if upper is None else _one_side(graph, upper, "Greater", "Sub")
        below = None if lower is None else _one_side(graph, lower, "Less", "Add")
        if above is not None and below is not None and above[:2] == below[:2]:
            return above[0], above[1], above[2] + below[2]
    return None


def _dynamo_softshrink(graph: Graph, where: Node) -> tuple[str, float, list[Node]] | None:
    if where.op_type != "Where" or len(where.inputs) != 3:
        return None
    test = _made_by(graph, where.inputs[0], "Greater", where)
    level = _with_scalar(graph, test)
    size = None if level is None or test is None else _made_by(graph, level[0], "Abs", test)
    shifted = _made_by(graph, where.inputs[1], "Sub", where)
    zeroed = _with_scalar(graph, _made_by(graph, where.inputs[2], "Mul", where))
    if size is None or level is None or shifted is None or zeroed is None or zeroed[1] != 0.0:
        return None
    x = size.inputs[0]
    step = _made_by(graph, shifted.inputs[1], "Mul", shifted) if len(shifted.inputs) == 2 else None
    signed = _with_scalar(graph, step)
    sign = None if signed is None or step is None else _made_by(graph, signed[0], "Sign", step)
    if sign is None or signed is None or shifted.inputs[0] != x or sign.inputs[0] != x or zeroed[0] != x:
        return None
    if signed[1] != level[1]:
        return None
    removed = [size, test, sign, step, shifted, graph.producer(where.inputs[2])]
    return x, level[1], [node for node in removed if node is not None]


def _fuse_softshrink(graph: Graph, last: Node) -> bool:
    found = _legacy_softshrink(graph, last) if last.op_type == "Add" else _dynamo_softshrink(graph, last)
    if found is None:
        return False
    x, lambd, pattern = found
    if lambd < 0 or graph.shape(last.outputs[0]) != graph.shape(x):
        return False
    for node in pattern:
        if node is not last and node in graph:
            graph.remove_node(node)
    last.op_type, last.attrs = "Shrink", {"lambd": float(lambd), "bias": float(lambd)}
    graph.set_inputs(last, [x])
    last.notes.append("fused from the exporter's softshrink")
    return True


def _bounds(graph: Graph, clip: Node) -> tuple[float, float] | None:
    """(low, high) of an opset ≥ 11 Clip with constant scalar bounds (a missing one is ∓∞)."""
    found = []
    for index, missing in ((1, -math.inf), (2, math.inf)):
        name = clip.inputs[index] if len(clip.inputs) > index else ""
        value = graph.scalar(name) if name else missing
        if value is None or math.isnan(value):
            return None
        found.append(float(value))
    return (found[0], found[1]) if found[0] <= found[1] else None


def _merge_clips(graph: Graph, outer: Node) -> bool:
    if graph.opset_of(outer) < 11 or not outer.inputs:
        return False
    inner = _made_by(graph, outer.inputs[0], "Clip", outer)
    if inner is None or graph.opset_of(inner) < 11:
        return False
    first, second = _bounds(graph, inner), _bounds(graph, outer)
    if first is None or second is None:
        return False
    low, high = (min(max(bound, second[0]), second[1]) for bound in first)
    given = [graph.const(name) for name in (*inner.inputs[1:], *outer.inputs[1:]) if name]
    dtype = next((array.dtype for array in given if array is not None), np.dtype(np.float32))
    names = []
    for bound, hint in ((low, "low"), (high, "high")):
        made = None if math.isinf(bound) else graph.new_value(f"{outer.name}_{hint}", const=np.array(bound, dtype))
        names.append("" if made is None else made.name)
    graph.remove_node(inner)
    graph.set_inputs(outer, [inner.inputs[0], *names])
    outer.notes.append("merged with the Clip before it")
    return True


def _clip_from_extreme(graph: Graph, node: Node) -> bool:
    """Max(x, c) is Clip(x, c, ∞) and Min(x, c) is Clip(x, −∞, c) for a scalar constant c (either
    operand): a ReLU or ReLU6 spelled Max/Min then gets the Clip's slope range in the recursion."""
    found = constant_operand(graph, node) if graph.opset_of(node) >= 11 else None
    if found is None or math.isnan(found[1]):
        return False
    x, value = found
    const = graph.const(next(name for name in node.inputs if name != x))
    if const is None or const.dtype.kind != "f":
        return False  # Clip-11 takes floats only; a Max of integers is a data path
    bound = graph.new_value(f"{node.name}_bound", const=np.array(value, const.dtype)).name
    graph.set_inputs(node, [x, bound, ""] if node.op_type == "Max" else [x, "", bound])
    node.notes.append(f"{node.op_type} with a constant, read as a Clip")
    node.op_type = "Clip"
    return True


class FusePiecewise(NodeRewrite):
    name = "fuse-piecewise"
    op_types = ("Add", "Where", "Clip", "Max", "Min")

    def rewrite(self, graph: Graph, node: Node) -> bool:
        if node.op_type == "Clip":
            return _merge_clips(graph, node)
        if node.op_type in ("Max", "Min"):
            return _clip_from_extreme(graph, node)
        return _fuse_softshrink(graph, node)
