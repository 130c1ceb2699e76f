"""Recognise LayerNorm and RMSNorm that exporters spell out in pieces.

    LayerNorm: d = x − ReduceMean(x); z = d / Sqrt(ReduceMean(d²) + ε)
    RMSNorm:   z = x / Sqrt(ReduceMean(x²) + ε)

with d² as Pow(d, 2) or Mul(d, d), and the division as Div(d, s), Mul(d, Reciprocal(s)) or
Mul(d, Div(1, s)). Spelled out, the division is a quotient of two variable values (unbounded, and
on a domain the quotient rule is very loose); as one op (lipaudit::Normalize) it has the exact
Jacobian norm 1/√(σ² + ε). The γ·z + β that follows stays as it is (Mul and Add by constants).
The match is exact: same axes in both means (kept dimensions), ε a constant scalar, every
intermediate read only by the pattern.
"""

from __future__ import annotations

from ..ir import Graph, Node
from .manager import NodeRewrite


def _producer(graph: Graph, name: str, *op_types: str) -> Node | None:
    node = graph.producer(name)
    return node if node is not None and not node.domain and node.op_type in op_types else None


def _scalar(graph: Graph, name: str) -> float | None:
    """A constant with one entry (a larger constant would broadcast the result into copies)."""
    const = graph.const(name)
    return graph.scalar(name) if const is not None and const.size == 1 else None


def _only_reader(graph: Graph, name: str, reader: Node) -> bool:
    return graph.sole_consumer(name) is reader


def _reduced_axes(graph: Graph, node: Node) -> tuple[int, ...] | None:
    """The axes a keepdims ReduceMean averages over, as non-negative integers (None: not readable)."""
    if not node.attr_int("keepdims", 1):
        return None
    shape = graph.shape(node.inputs[0])
    if shape is None:
        return None
    rank = len(shape)
    if len(node.inputs) > 1 and node.inputs[1]:
        const = graph.const(node.inputs[1])
        if const is None:
            return None
        axes = [int(a) for a in const.ravel()]
    else:
        axes = list(node.attr_ints("axes", ()))
    if not axes:
        if node.attr_int("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return tuple(sorted({a + rank if a < 0 else a for a in axes}))


def _square_of(graph: Graph, name: str) -> tuple[str, Node] | None:
    """(t, node) when ``name`` is t² as Pow(t, 2) or Mul(t, t)."""
    node = _producer(graph, name, "Pow", "Mul")
    if node is None or len(node.inputs) != 2:
        return None
    if node.op_type == "Pow" and _scalar(graph, node.inputs[1]) == 2.0:
        return node.inputs[0], node
    if node.op_type == "Mul" and node.inputs[0] == node.inputs[1]:
        return node.inputs[0], node
    return None


def _split_division(graph: Graph, last: Node) -> tuple[str, str, list[Node]] | None:
    """(numerator, the square root's output, nodes between) for Div(t, s) or t·(1/s)."""
    if last.op_type == "Div" and len(last.inputs) == 2:
        return last.inputs[0], last.inputs[1], []
    if last.op_type != "Mul" or len(last.inputs) != 2:
        return None
    for numerator, inverse_name in (last.inputs, last.inputs[::-1]):
        inverse = _producer(graph, inverse_name, "Reciprocal", "Div")
        if inverse is None or not _only_reader(graph, inverse_name, last):
            continue
        if inverse.op_type == "Reciprocal":
            return numerator, inverse.inputs[0], [inverse]
        if len(inverse.inputs) == 2 and _scalar(graph, inverse.inputs[0]) == 1.0:
            return numerator, inverse.inputs[1], [inverse]
    return None


def _fuse(graph: Graph, last: Node) -> bool:
    split = _split_division(graph, last)
    if split is None:
        return False
    numerator, root_name, between = split
    reader = between[0] if between else last
    root = _producer(graph, root_name, "Sqrt")
    if root is None or not _only_reader(graph, root_name, reader):
        return False
    shifted = _producer(graph, root.inputs[0], "Add")
    if shifted is None or not _only_reader(graph, root.inputs[0], root) or len(shifted.inputs) != 2:
        return False
    for mean_square_name, epsilon_name in (shifted.inputs, shifted.inputs[::-1]):
        epsilon = _scalar(graph, epsilon_name)
        mean_square = _producer(graph, mean_square_name, "ReduceMean")
        if epsilon is not None and mean_square is not None:
            break
    else:
        return False
    if not _only_reader(graph, mean_square_name, shifted):
        return False
    axes = _reduced_axes(graph, mean_square)
    square = _square_of(graph, mean_square.inputs[0])
    if axes is None or square is None or square[0] != numerator:
        return False
    if not _only_reader(graph, mean_square.inputs[0], mean_square):
        return False
    pattern = [square[1], mean_square, shifted, root, *between]
    source, centered = numerator, 0
    deviation = _producer(graph, numerator, "Sub")
    if deviation is not None and len(deviation.inputs) == 2:
        mean = _producer(graph, deviation.inputs[1], "ReduceMean")
        if (
            mean is not None
            and mean.inputs[0] == deviation.inputs[0]
            and _reduced_axes(graph, mean) == axes
            and _only_reader(graph, mean.outputs[0], deviation)
            and {n for n in graph.consumers(numerator)} == {square[1], last}
            and not graph.is_graph_output(numerator)
        ):
            pattern = [mean, deviation, *pattern]
            source, centered = deviation.inputs[0], 1
    if epsilon < 0:
        return False
    for node in pattern:
        graph.remove_node(node)
    last.op_type, last.domain = "Normalize", "lipaudit"
    last.attrs = {"axes": list(axes), "epsilon": float(epsilon), "centered": centered}
    graph.set_inputs(last, [source])
    last.notes.append("fused from " + ("(x − mean)/√(var + ε)" if centered else "x/√(mean x² + ε)"))
    return True


class FuseNormalization(NodeRewrite):
    name = "fuse-normalization"
    op_types = ("Div", "Mul")

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _fuse(graph, node)
