"""Recognise dot-product attention that the ONNX exporters spell out as MatMul, Softmax, MatMul.

Both torch.onnx exporters write ``scaled_dot_product_attention`` in pieces (the scale split as
√scale on the queries and on the transposed keys), where the torch loaders keep one Attention op.
As one op it is bounded per head on a box (lipaudit.intervals.attention), which the pieces (a
product of two variables, then a softmax) are not; so the ONNX and torch forms of one model get the
same op and the same figure. The form matched, on 4-D (batch, heads, tokens, dim) values, or 3-D
(batch, tokens, dim) ones, which get an axis of one head around the op:

    MatMul(a·Q, b·Kᵀ) → (·c, + M)… → Softmax(last axis) → MatMul(·, V)

with a, b, c scalar constants (Mul, or Div by the constant), M constant masks added, and Kᵀ a
Transpose of the last two axes of K (or any value, whose transpose is then inserted). The scores
are then s·(Q·Kᵀ) + M' for s = a·b·Π c > 0 and M' the masks, each times the scales applied after
it: Attention(Q, K, V, M') with that scale. Every value in between must be read by the pattern alone.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import NodeRewrite
from .matching import axis_of, constant_operand, known_shape, read_only_by


def _scalar_step(graph: Graph, node: Node) -> tuple[str, float] | None:
    """(the variable, the factor) of a Mul by a nonzero scalar constant, or of a Div of the variable
    by one; None for anything else."""
    if node.domain or node.op_type not in ("Mul", "Div"):
        return None
    found = constant_operand(graph, node)
    if found is None or found[1] == 0 or (node.op_type == "Div" and node.inputs[0] != found[0]):
        return None
    source, value = found
    return source, value if node.op_type == "Mul" else 1.0 / value


def _scaled(graph: Graph, name: str, reader: Node) -> tuple[str, float, list[Node]]:
    """Walk back from ``name`` through Mul/Div by scalar constants read by the chain alone: (the
    value scaled, the product of the scales, the nodes walked through)."""
    factor, walked = 1.0, list[Node]()
    while True:
        node = graph.producer(name)
        if node is None:
            return name, factor, walked
        step = _scalar_step(graph, node)
        if step is None or not read_only_by(graph, name, [reader]):
            return name, factor, walked
        factor *= step[1]
        walked.append(node)
        name, reader = step[0], node


def _scores(graph: Graph, softmax: Node) -> tuple[Node, float, np.ndarray | None, list[Node]] | None:
    """The MatMul that makes the raw scores, α and β with softmax's input = α·raw + β, and the
    nodes in between."""
    name, reader = softmax.inputs[0], softmax
    alpha: float = 1.0
    beta: np.ndarray | None = None
    walked: list[Node] = []
    while True:
        node = graph.producer(name)
        if node is None or node.domain or not read_only_by(graph, name, [reader]):
            return None
        if node.op_type == "MatMul":
            return node, alpha, beta, walked
        if node.op_type in ("Mul", "Div"):
            step = _scalar_step(graph, node)
            if step is None:
                return None
            name, alpha = step[0], alpha * step[1]
        elif node.op_type == "Add":
            constants = [graph.const(n) for n in node.inputs if n and graph.is_const(n)]
            variables = [n for n in node.inputs if n and not graph.is_const(n)]
            if (
                len(constants) != 1
                or len(variables) != 1
                or known_shape(graph, variables[0]) != known_shape(graph, node.outputs[0])
            ):
                return None
            mask = alpha * np.asarray(constants[0], dtype=np.float64)
            beta = mask if beta is None else beta + mask
            name = variables[0]
        else:
            return None
        walked.append(node)
        reader = node


def _keys(graph: Graph, name: str, reader: Node) -> tuple[str, list[Node]]:
    """K from Kᵀ: the input of a Transpose of the last two axes read by the chain alone (that
    Transpose then goes), else None for the caller to insert one."""
    node = graph.producer(name)
    shape = known_shape(graph, name)
    if node is None or node.domain or node.op_type != "Transpose" or shape is None:
        return "", []
    rank = len(shape)
    swap = list(range(rank - 2)) + [rank - 1, rank - 2]
    if list(node.attr_ints("perm", ())) != swap or not read_only_by(graph, name, [reader]):
        return "", []
    return node.inputs[0], [node]


def _fuse(graph: Graph, softmax: Node) -> bool:
    shape = known_shape(graph, softmax.outputs[0])
    if shape is None or len(shape) not in (3, 4) or axis_of(softmax.attr_int("axis", -1), len(shape)) != len(shape) - 1:
        return False
    rank = len(shape)
    readers = graph.consumers(softmax.outputs[0])
    if len(readers) != 1 or graph.is_graph_output(softmax.outputs[0]):
        return False
    (combine,) = readers
    if combine.domain or combine.op_type != "MatMul" or combine.inputs[0] != softmax.outputs[0]:
        return False
    found = _scores(graph, softmax)
    if found is None:
        return False
    scores, alpha, mask, between = found
    if any(not name or graph.is_const(name) for name in (*scores.inputs, combine.inputs[1])):
        return False
    query, query_scale, query_walk = _scaled(graph, scores.inputs[0], scores)
    keys_t, keys_scale, keys_walk = _scaled(graph, scores.inputs[1], scores)
    keys, transposed = _keys(graph, keys_t, keys_walk[-1] if keys_walk else scores)
    value = combine.inputs[1]
    q, kt, v = known_shape(graph, query), known_shape(graph, keys_t), known_shape(graph, value)
    if q is None or kt is None or v is None or not len(q) == len(kt) == len(v) == rank:
        return False
    lead = rank - 2  # the batch axes (and the heads' in 4-D)
    if not (q[:lead] == kt[:lead] == v[:lead] and q[-1] == kt[-2] and kt[-1] == v[-2]):
        return False
    scale = alpha * query_scale * keys_scale
    if not (np.isfinite(scale) and scale > 0):
        return False
    # One node may sit on both walks (Q and Kᵀ the same scaled value): removed once. No operand may
    # come out of a node that goes (V the softmax itself, Q the Transpose that makes Kᵀ).
    removed = list(dict.fromkeys((scores, softmax, *between, *query_walk, *keys_walk, *transposed)))
    made = {name for node in removed for name in node.outputs}
    if {query, keys, value, keys_t if not keys else ""} & made:
        return False
    inserted: list[Node] = []
    if not keys:
        keys = graph.new_value(f"{keys_t}_keys", shape=kt[:lead] + (kt[-1], kt[-2])).name
        swap = list(range(lead)) + [rank - 1, rank - 2]
        inserted.append(Node(f"{combine.name}_keys", "Transpose", (keys_t,), (keys,), {"perm": swap}))
    inputs = [query, keys, value]
    if mask is not None:
        # float64: a mask added before a scale is that scale times the mask, which float32 would round
        masked = np.ascontiguousarray(np.broadcast_to(mask, shape), np.float64)
        inputs.append(graph.new_value(f"{combine.name}_mask", const=masked).name)
    if rank == 3:  # (batch, tokens, dim): one head, an axis of 1 for it around the 4-D op
        inputs = [_one_head(graph, name, combine, inserted) for name in inputs]
    for node in removed:
        graph.remove_node(node)
    attrs = {"scale": float(scale)}
    note = "fused from MatMul, Softmax, MatMul (dot-product attention)"
    if rank == 3:
        out = combine.outputs[0]
        attended = graph.new_value(f"{out}_one_head", shape=(q[0], 1, q[1], v[2])).name
        inserted.append(Node(f"{combine.name}_attention", "Attention", tuple(inputs), (attended,), attrs, notes=[note]))
        graph.insert_nodes(combine, inserted)
        combine.op_type, combine.attrs = "Reshape", {}
        graph.set_inputs(
            combine, [attended, graph.new_value(f"{out}_shape", const=np.array([q[0], q[1], v[2]], np.int64)).name]
        )
        return True
    if inserted:
        graph.insert_nodes(combine, inserted)
    combine.op_type, combine.attrs = "Attention", attrs
    graph.set_inputs(combine, inputs)
    combine.notes.append(note)
    return True


def _one_head(graph: Graph, name: str, before: Node, inserted: list[Node]) -> str:
    """``name`` (batch, a, b) as (batch, 1, a, b): a Reshape appended to ``inserted``, or for a
    constant (the mask) the reshaped constant."""
    const = graph.const(name)
    shape = known_shape(graph, name)
    assert shape is not None
    target = (shape[0], 1) + tuple(shape[1:])
    if const is not None:
        return graph.new_value(f"{name}_one_head", const=np.asarray(const).reshape(target)).name
    moved = graph.new_value(f"{name}_one_head", shape=target).name
    dims = graph.new_value(f"{name}_one_head_shape", const=np.array(target, np.int64)).name
    inserted.append(Node(f"{before.name}_{name}_one_head", "Reshape", (name, dims), (moved,), {}))
    return moved


class FuseAttention(NodeRewrite):
    name = "fuse-attention"
    op_types = ("Softmax",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _fuse(graph, node)
