"""Recognise activations that exporters spell out in pieces.

Spelled out, x·sigmoid(x) is a Mul of two variable values, which has no global bound; as one
activation it has the constant 1.0999.
"""

from __future__ import annotations

import math

from ..ir import Graph, Node

_INV_SQRT2 = 1 / math.sqrt(2)


def _close(value: float | None, target: float, tol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


def _producer_of(graph: Graph, name: str, op_type: str) -> Node | None:
    node = graph.producer(name)
    return node if node is not None and node.op_type == op_type and not node.domain else None


def _other_input(node: Node, name: str) -> str | None:
    others = [i for i in node.inputs if i != name]
    if len(node.inputs) == 2 and node.inputs[0] == node.inputs[1] == name:
        return name
    return others[0] if len(others) == 1 else None


def _replace(graph: Graph, last: Node, removed: list[Node], op_type: str, source: str, label: str) -> None:
    """Make ``last`` compute op_type(source) and drop the pattern's other nodes."""
    for node in removed:
        graph.nodes.remove(node)
    last.op_type, last.inputs, last.attrs, last.domain = op_type, [source], {}, ""
    last.notes.append(f"fused from {label}")


def _single_use(graph: Graph, nodes: list[Node]) -> bool:
    """Every intermediate output is read once (by the pattern) and is not a graph output."""
    return all(graph.sole_consumer(node.outputs[0]) is not None for node in nodes)


def _fuse_gated(graph: Graph, mul: Node) -> bool:
    """x·Sigmoid(x) → Silu, x·HardSigmoid(x; 1/6, 1/2) → HardSwish, x·Tanh(Softplus(x)) → Mish."""
    for gate_name in mul.inputs:
        x = _other_input(mul, gate_name)
        gate = graph.producer(gate_name)
        if x is None or gate is None or gate.domain:
            continue
        if gate.op_type == "Sigmoid" and gate.inputs[0] == x and _single_use(graph, [gate]):
            _replace(graph, mul, [gate], "Silu", x, "x·Sigmoid(x)")
            return True
        if (gate.op_type == "HardSigmoid" and gate.inputs[0] == x and _single_use(graph, [gate])
                and _close(gate.attrs.get("alpha", 0.2), 1 / 6) and _close(gate.attrs.get("beta", 0.5), 0.5)):
            _replace(graph, mul, [gate], "HardSwish", x, "x·HardSigmoid(x)")
            return True
        softplus = _producer_of(graph, gate.inputs[0], "Softplus") if gate.op_type == "Tanh" else None
        if softplus is not None and softplus.inputs[0] == x and _single_use(graph, [gate, softplus]):
            _replace(graph, mul, [gate, softplus], "Mish", x, "x·Tanh(Softplus(x))")
            return True
    return False


def _erf_argument_source(graph: Graph, erf: Node) -> tuple[str, Node] | None:
    """The x of erf(x/√2), with the scaling node."""
    scale = graph.producer(erf.inputs[0])
    if scale is None or scale.domain or len(scale.inputs) != 2:
        return None
    x, c = scale.inputs
    if scale.op_type == "Div" and _close(graph.scalar(c), math.sqrt(2)):
        return x, scale
    if scale.op_type == "Mul":
        for var, const in ((x, c), (c, x)):
            if _close(graph.scalar(const), _INV_SQRT2):
                return var, scale
    return None


def _is_half(graph: Graph, node: Node, other_than: str) -> bool:
    return _close(graph.scalar(_other_input(node, other_than) or ""), 0.5)


def _fuse_erf_gelu(graph: Graph, erf: Node) -> bool:
    """0.5·x·(1 + erf(x/√2)) in any association → Gelu."""
    found = _erf_argument_source(graph, erf)
    if found is None:
        return False
    x, scale = found
    add = graph.sole_consumer(erf.outputs[0])
    if add is None or add.op_type != "Add" or not _close(graph.scalar(_other_input(add, erf.outputs[0]) or ""), 1.0):
        return False
    cdf = add.outputs[0]  # 1 + erf(x/√2); the three factors are x, cdf and 0.5
    first = graph.sole_consumer(cdf)
    if first is None or first.op_type != "Mul":
        return False
    partner = _other_input(first, cdf)
    second = graph.sole_consumer(first.outputs[0])
    if partner == x and second is not None and second.op_type == "Mul" and _is_half(graph, second, first.outputs[0]):
        chain, last = [first], second  # (x·cdf)·0.5
    elif (_is_half(graph, first, cdf) and second is not None and second.op_type == "Mul"
          and _other_input(second, first.outputs[0]) == x):
        chain, last = [first], second  # x·(0.5·cdf)
    else:
        half_x = graph.producer(partner) if partner else None
        if half_x is None or half_x.op_type != "Mul" or x not in half_x.inputs or not _is_half(graph, half_x, x):
            return False
        chain, last = [half_x], first  # (0.5·x)·cdf
    chain = [scale, erf, add] + chain
    if not _single_use(graph, chain):
        return False
    _replace(graph, last, chain, "Gelu", x, "0.5·x·(1 + Erf(x/√2))")
    return True


def _fuse_softsign(graph: Graph, div: Node) -> bool:
    """x / (1 + |x|) → Softsign."""
    x, denominator = div.inputs[:2]
    add = _producer_of(graph, denominator, "Add")
    if add is None:
        return False
    for abs_name in add.inputs:
        absolute = _producer_of(graph, abs_name, "Abs")
        if (absolute is not None and absolute.inputs[0] == x
                and _close(graph.scalar(_other_input(add, abs_name) or ""), 1.0)
                and _single_use(graph, [absolute, add])):
            _replace(graph, div, [absolute, add], "Softsign", x, "x / (1 + |x|)")
            return True
    return False


def fuse_activations(graph: Graph) -> None:
    for node in list(graph.nodes):
        if node not in graph.nodes or node.domain:
            continue
        if node.op_type == "Mul":
            _fuse_gated(graph, node)
        elif node.op_type == "Erf":
            _fuse_erf_gelu(graph, node)
        elif node.op_type == "Div":
            _fuse_softsign(graph, node)
