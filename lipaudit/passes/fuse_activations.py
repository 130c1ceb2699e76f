"""Recognise activations that exporters spell out in pieces.

Spelled out, x·sigmoid(x) is a Mul of two variable values, which has no global bound; as one
activation it has the constant 1.0999.
"""

from __future__ import annotations

import math

from ..ir import Graph, Node
from ..ops.activation import softplus_cut_is_invisible
from .manager import NodeRewrite
from .matching import read_only_by

_INV_SQRT2 = 1 / math.sqrt(2)


def _exactly(value: float | None, target: float) -> bool:
    """For 0.5 and 1: exact in float32, and the fused op's constant scales with them."""
    return value is not None and value == target


# Irrational constants are stored rounded to float32 (relative error < 1e-7). A looser match would
# accept functions whose slope exceeds the fused op's constant (GELU's margin is 7e-6).
def _close(value: float | None, target: float, tol: float = 1e-6) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


def _producer_of(graph: Graph, name: str, op_type: str) -> Node | None:
    node = graph.producer(name)
    return node if node is not None and node.op_type == op_type and not node.domain else None


def _other_input(node: Node, name: str) -> str | None:
    others = [i for i in node.inputs if i != name]
    if len(node.inputs) == 2 and node.inputs[0] == node.inputs[1] == name:
        return name
    return others[0] if len(others) == 1 else None


def _replace(
    graph: Graph, last: Node, removed: list[Node], op_type: str, source: str, label: str, **attrs: object
) -> bool:
    """Make ``last`` compute op_type(source) and drop the pattern's other nodes.

    Refused when the pattern's output is not shaped like its input: a constant of a larger shape
    broadcasts x into several copies, which the elementwise op alone would not make.
    """
    out_shape, in_shape = graph.shape(last.outputs[0]), graph.shape(source)
    if out_shape is None or in_shape is None or tuple(out_shape) != tuple(in_shape):
        return False
    for node in removed:
        graph.remove_node(node)
    last.op_type, last.attrs, last.domain = op_type, dict(attrs), ""
    graph.set_inputs(last, [source])
    last.notes.append(f"fused from {label}")
    return True


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
            return _replace(graph, mul, [gate], "Silu", x, "x·Sigmoid(x)")
        if (
            gate.op_type == "HardSigmoid"
            and gate.inputs[0] == x
            and _single_use(graph, [gate])
            and _close(gate.attr_float("alpha"), 1 / 6)
            and _exactly(gate.attr_float("beta"), 0.5)
        ):
            return _replace(graph, mul, [gate], "HardSwish", x, "x·HardSigmoid(x)")
        softplus = _producer_of(graph, gate.inputs[0], "Softplus") if gate.op_type == "Tanh" else None
        if softplus is not None and softplus.inputs[0] == x and _single_use(graph, [gate, softplus]):
            return _replace(graph, mul, [gate, softplus], "Mish", x, "x·Tanh(Softplus(x))")
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
    return _exactly(graph.scalar(_other_input(node, other_than) or ""), 0.5)


def _scaled_by(graph: Graph, name: str, target: float) -> tuple[str, Node] | None:
    """(x, node) when ``name`` is the output of Mul(x, c) with c ≈ target."""
    node = _producer_of(graph, name, "Mul")
    if node is None or len(node.inputs) != 2:
        return None
    for var, const in (node.inputs, node.inputs[::-1]):
        if _close(graph.scalar(const), target):
            return var, node
    return None


def _tanh_argument_source(graph: Graph, tanh: Node) -> tuple[str, list[Node]] | None:
    """The x of tanh(√(2/π)·(x + 0.044715·x³)), with the nodes that compute the argument."""
    outer = _scaled_by(graph, tanh.inputs[0], math.sqrt(2 / math.pi))
    inner = _producer_of(graph, outer[0], "Add") if outer else None
    if outer is None or inner is None or len(inner.inputs) != 2:
        return None
    for x, cubic_term in (inner.inputs, inner.inputs[::-1]):
        scaled = _scaled_by(graph, cubic_term, 0.044715)
        cube = _cube_nodes(graph, scaled[0], x) if scaled else None
        if scaled is not None and cube is not None:
            return x, [outer[1], inner, scaled[1], *cube]
    return None


def _cube_nodes(graph: Graph, name: str, x: str) -> list[Node] | None:
    """The nodes computing x³ as Pow(x, 3) or x·(x·x), as torch exports it."""
    node = graph.producer(name)
    if node is None or node.domain:
        return None
    if node.op_type == "Pow" and node.inputs[0] == x and _exactly(graph.scalar(node.inputs[1]), 3.0):
        return [node]
    if node.op_type == "Mul" and x in node.inputs:
        square = _producer_of(graph, _other_input(node, x) or "", "Mul")
        if square is not None and square.inputs == (x, x):
            return [node, square]
    return None


def _fuse_gelu(graph: Graph, squash: Node) -> bool:
    """0.5·x·(1 + erf(x/√2)) or 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), any association → Gelu."""
    found: tuple[str, list[Node]] | None
    if squash.op_type == "Erf":
        erf_source = _erf_argument_source(graph, squash)
        found = (erf_source[0], [erf_source[1]]) if erf_source else None
        label = "0.5·x·(1 + Erf(x/√2))"
    else:
        found = _tanh_argument_source(graph, squash)
        label = "0.5·x·(1 + Tanh(√(2/π)(x + 0.044715x³)))"
    if found is None:
        return False
    approximate = "none" if squash.op_type == "Erf" else "tanh"
    x, argument_nodes = found
    add = graph.sole_consumer(squash.outputs[0])
    if (
        add is None
        or add.op_type != "Add"
        or not _exactly(graph.scalar(_other_input(add, squash.outputs[0]) or ""), 1.0)
    ):
        return False
    cdf = add.outputs[0]  # 1 + erf(…) or 1 + tanh(…); the three factors are x, cdf and 0.5
    first = graph.sole_consumer(cdf)
    if first is None or first.op_type != "Mul":
        return False
    partner = _other_input(first, cdf)
    second = graph.sole_consumer(first.outputs[0])
    if partner == x and second is not None and second.op_type == "Mul" and _is_half(graph, second, first.outputs[0]):
        chain, last = [first], second  # (x·cdf)·0.5
    elif (
        _is_half(graph, first, cdf)
        and second is not None
        and second.op_type == "Mul"
        and _other_input(second, first.outputs[0]) == x
    ):
        chain, last = [first], second  # x·(0.5·cdf)
    else:
        half_x = graph.producer(partner) if partner else None
        if half_x is None or half_x.op_type != "Mul" or x not in half_x.inputs or not _is_half(graph, half_x, x):
            return False
        chain, last = [half_x], first  # (0.5·x)·cdf
    chain = [*argument_nodes, squash, add, *chain]
    if not _single_use(graph, chain):
        return False
    return _replace(graph, last, chain, "Gelu", x, label, approximate=approximate)


def _fuse_softsign(graph: Graph, div: Node) -> bool:
    """x / (1 + |x|) → Softsign."""
    x, denominator = div.inputs[:2]
    add = _producer_of(graph, denominator, "Add")
    if add is None:
        return False
    for abs_name in add.inputs:
        absolute = _producer_of(graph, abs_name, "Abs")
        if (
            absolute is not None
            and absolute.inputs[0] == x
            and _exactly(graph.scalar(_other_input(add, abs_name) or ""), 1.0)
            and _single_use(graph, [absolute, add])
        ):
            return _replace(graph, div, [absolute, add], "Softsign", x, "x / (1 + |x|)")
    return False


def _softplus_branch(graph: Graph, x: str, smooth: str, scaled: str) -> tuple[float, list[Node]] | None:
    """(β, nodes) when ``smooth`` is Softplus(βx)/β computed from ``scaled`` = βx (x itself when β = 1)."""
    if scaled == x:
        node = _producer_of(graph, smooth, "Softplus")
        return (1.0, [node]) if node is not None and node.inputs[0] == x else None
    times = _producer_of(graph, scaled, "Mul")
    beta = graph.scalar(_other_input(times, x) or "") if times is not None and x in times.inputs else None
    last = graph.producer(smooth)
    if beta is None or last is None or last.domain or len(last.inputs) != 2:
        return None
    inner = _producer_of(graph, last.inputs[0], "Softplus")
    divisor = graph.scalar(last.inputs[1])
    if inner is None or inner.inputs[0] != scaled or divisor is None:
        return None
    if not (
        (last.op_type == "Div" and divisor == beta) or (last.op_type == "Mul" and _close(divisor * beta, 1.0, 1e-7))
    ):
        return None
    return beta, [inner, last]


def _fuse_softplus_cut(graph: Graph, where: Node) -> bool:
    """Where(βx > t, x, Softplus(βx)/β) → Softplus(βx)/β: torch's softplus with its threshold, as the
    dynamo exporter writes it. The cut's jump is rounding where softplus_cut_is_invisible says so."""
    if len(where.inputs) != 3:
        return False
    condition, x, smooth = where.inputs
    greater = _producer_of(graph, condition, "Greater")
    threshold = graph.scalar(greater.inputs[1]) if greater is not None else None
    if greater is None or threshold is None or graph.shape(where.outputs[0]) != graph.shape(smooth):
        return False
    found = _softplus_branch(graph, x, smooth, greater.inputs[0])
    level = graph.const(greater.inputs[1])
    # the comparison's constant has the model's float type: in float64 the cut's jump is no rounding
    if found is None or level is None or not softplus_cut_is_invisible(found[0], threshold, level.dtype):
        return False
    if graph.sole_consumer(condition) is None:
        return False
    graph.replace_uses(where.outputs[0], smooth)
    graph.remove_node(where)
    graph.remove_node(greater)
    found[1][-1].notes.append("fused from Where(βx > t, x, Softplus(βx)/β)")
    return True


def _fuse_threshold(graph: Graph, where: Node) -> bool:
    """Where(x ≤ t, t, x) or Where(x > t, x, t) → Max(x, t): torch's threshold with value = t, as the
    dynamo exporter writes it (continuous, slope 1; another value jumps and stays a Where)."""
    condition, when_true, when_false = where.inputs
    test = graph.producer(condition)
    if test is None or test.domain or test.op_type not in ("LessOrEqual", "Greater") or len(test.inputs) != 2:
        return False
    x, t = test.inputs
    level = graph.scalar(t)
    kept, floor = (when_false, when_true) if test.op_type == "LessOrEqual" else (when_true, when_false)
    if level is None or kept != x or graph.scalar(floor) != level or graph.sole_consumer(condition) is not where:
        return False
    if graph.shape(where.outputs[0]) != graph.shape(x):
        return False
    graph.remove_node(test)
    graph.set_inputs(where, [x, floor])
    where.op_type, where.attrs = "Max", {}
    where.notes.append("fused from Where(x ≤ t, t, x)")
    return True


def _fuse_log_sigmoid(graph: Graph, log: Node) -> bool:
    """Log(Sigmoid(x)) → −Softplus(−x), the same function: spelled out, the Log's rule sees an input
    that may reach 0 (unbounded); as written here it is 1-Lipschitz, as TorchScript's log_sigmoid
    maps to (load/aten_ops.py)."""
    sigmoid = _producer_of(graph, log.inputs[0], "Sigmoid") if log.inputs else None
    if sigmoid is None or not read_only_by(graph, log.inputs[0], [log]):
        return False
    shape = graph.shape(log.outputs[0])
    if shape is None or graph.shape(sigmoid.inputs[0]) != shape:
        return False
    # fresh values: the runtime's check compares every value by name, and these are new ones
    negated = graph.new_value(f"{log.name}_negated", shape=tuple(shape)).name
    smooth = graph.new_value(f"{log.name}_softplus", shape=tuple(shape)).name
    graph.remove_node(sigmoid)
    graph.insert_nodes(
        log,
        [
            Node(f"{log.name}_negated", "Neg", (sigmoid.inputs[0],), (negated,)),
            Node(f"{log.name}_softplus", "Softplus", (negated,), (smooth,)),
        ],
    )
    log.op_type, log.attrs = "Neg", {}
    graph.set_inputs(log, [smooth])
    log.notes.append("fused from Log(Sigmoid(x)) as −Softplus(−x)")
    return True


class FuseActivations(NodeRewrite):
    name = "fuse-activations"
    op_types = ("Mul", "Erf", "Tanh", "Div", "Where", "Log")

    def rewrite(self, graph: Graph, node: Node) -> bool:
        if node.op_type == "Log":
            return _fuse_log_sigmoid(graph, node)
        if node.op_type == "Where":
            return len(node.inputs) == 3 and (_fuse_softplus_cut(graph, node) or _fuse_threshold(graph, node))
        if node.op_type == "Mul":
            return _fuse_gated(graph, node)
        if node.op_type == "Div":
            return _fuse_softsign(graph, node)
        return _fuse_gelu(graph, node)
