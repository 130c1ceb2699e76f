"""LSTM, GRU and RNN nodes written out step by step as the graph nodes of their cell equations.

The interval-Jacobian engines (lipaudit.domain) have rules for matrix products, gates and
entrywise products, not for a whole recurrent op: written out, a cell's Jacobian on a box keeps
how its gates' slopes line up step after step, which the op's own rule (a product of norms per
step) loses. The equations are the op's own (lipaudit.intervals.cells, through each op class's
``step``), emitted by ``GraphAlgebra`` instead of computed, so the written-out graph computes the
op's function. Not one of the rewrite passes: the domain mode runs it on a copy of the graph for
those engines only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, Node, Value, fill_default_attributes
from ..ops.recurrent import Recurrent
from ..ops.registry import resolve
from .manager import NodeRewrite


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


class GraphAlgebra:
    """The cell algebra over value names: each operation appends the node that computes it. A value
    known before the run (an initial state given as a constant, and what only constants reach) is
    computed here instead, and a zero one is None (the engines read nodes of variables only)."""

    def __init__(self, graph: Graph, prefix: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.graph, self.prefix, self.shape, self.dtype = graph, prefix, shape, dtype
        self.nodes: list[Node] = []
        self.known: dict[str, np.ndarray] = {}

    def emit(
        self, op_type: str, inputs: list[str], shape: tuple[int, ...] | None = None, out: str = "", **attrs: Any
    ) -> str:
        """The new node's output: ``out`` (a name the graph already holds) or a fresh value."""
        shape = shape or self.shape
        if out and self.graph.shape(out) is None:
            self.graph.values[out] = Value(out, shape)  # a copy's own value: the original graph keeps its own
        out = out or self.graph.new_value(f"{self.prefix}_{op_type.lower()}", shape=shape).name
        self.nodes.append(Node(f"{self.prefix}/{op_type}_{len(self.nodes)}", op_type, tuple(inputs), (out,), attrs))
        return out

    def constant(self, array: Any, hint: str = "c") -> str:
        array = np.asarray(array, self.dtype)
        name = self.graph.new_value(f"{self.prefix}_{hint}", const=array).name
        self.known[name] = array
        return name

    def _apply(self, op_type: str, fn: Any, *values: str | None) -> str | None:
        """``op_type`` of ``values`` (None: zeros), computed here when every value is known."""
        if all(v is None or v in self.known for v in values):
            arrays = [np.zeros(self.shape, self.dtype) if v is None else self.known[v] for v in values]
            result = np.asarray(fn(*arrays), self.dtype)
            return None if not np.any(result) else self.constant(result)
        return self.emit(op_type, [v if v is not None else self.constant(np.zeros(self.shape)) for v in values])

    def affine(self, x: str | None, weight: Any, bias: Any) -> str | None:
        weight_t = np.asarray(weight).T
        if x is None or x in self.known:
            return self._apply("Add", lambda a: a @ weight_t + bias, x)
        product = self.emit("MatMul", [x, self.constant(weight_t, "w")])
        return product if not np.any(np.asarray(bias)) else self.emit("Add", [product, self.constant(bias, "b")])

    def add(self, a: str | None, b: str | None) -> str | None:
        if a is None or b is None:
            return b if a is None else a
        return self._apply("Add", np.add, a, b)

    def mul(self, a: str | None, b: str | None) -> str | None:
        if a is None or b is None:
            return None
        return self._apply("Mul", np.multiply, a, b)

    def scale(self, a: str | None, constant: Any) -> str | None:
        if a is None or not np.any(np.asarray(constant)):
            return None
        return self.mul(a, self.constant(np.broadcast_to(np.asarray(constant), self.shape), "p"))

    def sigmoid(self, a: str | None) -> str | None:
        return self._apply("Sigmoid", _sigmoid, a)

    def tanh(self, a: str | None) -> str | None:
        return self._apply("Tanh", np.tanh, a)

    def relu(self, a: str | None) -> str | None:
        return self._apply("Relu", lambda v: np.maximum(v, 0), a)

    def blend(self, z: str | None, a: str | None, b: str | None) -> str | None:
        """(1 − z)·a + z·b, as torch's own GRU export writes it."""
        keep = self._apply("Sub", np.subtract, self.constant(np.ones(self.shape), "one"), z)
        return self.add(self.mul(keep, a), self.mul(z, b))


class UnrollRecurrent(NodeRewrite):
    name = "unroll-recurrent"
    op_types = ("LSTM", "GRU", "RNN")

    def rewrite(self, graph: Graph, node: Node) -> bool:
        op = resolve(node, graph.opset_of(node))
        shape = graph.shape(node.inputs[0])
        if not isinstance(op, Recurrent) or op.unsupported(node) or shape is None or len(shape) != 3:
            return False
        if not all(isinstance(d, int) and d > 0 for d in shape):
            return False
        args = _constant_args(graph, node, op)
        if args is None:
            return False
        layout = node.attr_int("layout", 0)
        steps, batch = (shape[1], shape[0]) if layout else (shape[0], shape[1])
        hidden = node.attr_int("hidden_size")
        alg = GraphAlgebra(graph, node.name or node.op_type, (batch, hidden), np.asarray(args[1]).dtype)
        picks = {t: alg.emit("Gather", [node.inputs[0], alg.constant(t, "t")], (batch, shape[2]), axis=int(layout))
                 for t in range(steps)}  # fmt: skip
        finals: list[list[str | None]] = []
        sequences: list[list[str | None]] = []
        for d, backwards in enumerate(op.directions(node)):
            states = [_initial_state(alg, node, index, d, layout) for index in op.state_inputs]
            outputs: dict[int, str | None] = {}
            for t in range(steps - 1, -1, -1) if backwards else range(steps):
                states = op.step(node, args, d, picks[t], states, alg)
                outputs[t] = states[0]
            finals.append(states)
            sequences.append([outputs[t] for t in range(steps)])
        _write_outputs(alg, node, sequences, finals, layout)
        graph.insert_nodes(node, alg.nodes)
        graph.remove_node(node)
        return True


def _constant_args(graph: Graph, node: Node, op: Recurrent) -> list[Any] | None:
    """The node's inputs as ``step`` reads them: W, R, B and the peepholes as arrays (zeros where
    absent); None when one is computed from the input or the sequence lengths vary."""
    hidden, directions = node.attr_int("hidden_size"), len(op.directions(node))
    defaults = {3: np.zeros((directions, 2 * op.gates * hidden), np.float32), 7: np.zeros((directions, 3 * hidden))}
    args: list[Any] = [None] * 8
    for index in (1, 2, 3, 7) if op.gates == 4 else (1, 2, 3):
        name = node.inputs[index] if len(node.inputs) > index else ""
        value = graph.const(name) if name else defaults[index]
        if value is None:
            return None
        args[index] = np.asarray(value)
    lengths = node.inputs[4] if len(node.inputs) > 4 else ""
    if lengths:
        given, shape = graph.const(lengths), graph.shape(node.inputs[0])
        steps = shape[1] if node.attr_int("layout", 0) else shape[0]  # type: ignore[index]
        if given is None or np.any(np.asarray(given) != steps):
            return None
    return args


def _initial_state(alg: GraphAlgebra, node: Node, index: int, direction: int, layout: int) -> str | None:
    """Direction ``direction``'s initial state: a value, a constant (None when zero or absent)."""
    name = node.inputs[index] if len(node.inputs) > index else ""
    if not name:
        return None
    given = alg.graph.const(name)
    if given is not None:
        state = np.take(np.asarray(given), direction, axis=int(layout))
        return alg.constant(np.broadcast_to(state, alg.shape)) if np.any(state) else None
    return alg.emit("Gather", [name, alg.constant(direction, "d")], axis=int(layout))


def _write_outputs(
    alg: GraphAlgebra, node: Node, sequences: list[list[str | None]], finals: list[list[str | None]], layout: int
) -> None:
    """Y (steps, directions, batch, hidden), Y_h and Y_c (directions, batch, hidden), or batch first
    with ``layout`` 1, under the node's own output names."""
    batch, hidden = alg.shape
    directions, steps = len(sequences), len(sequences[0])
    wanted = list(node.outputs) + [""] * 3
    if wanted[0]:
        one_step = (1, 1, batch, hidden)
        per_direction = [
            alg.emit("Concat", [_reshaped(alg, h, one_step) for h in hs], (steps, 1, batch, hidden), axis=0)
            for hs in sequences
        ]
        stacked = (steps, directions, batch, hidden)
        if layout:
            y = alg.emit("Concat", per_direction, stacked, axis=1)
            alg.emit("Transpose", [y], (batch, steps, directions, hidden), wanted[0], perm=[2, 0, 1, 3])
        else:
            alg.emit("Concat", per_direction, stacked, wanted[0], axis=1)
    for k, name in enumerate(wanted[1:3]):
        if not name or k >= len(finals[0]):
            continue
        parts = [_reshaped(alg, states[k], (1, batch, hidden)) for states in finals]
        if layout:
            joined = alg.emit("Concat", parts, (directions, batch, hidden), axis=0)
            alg.emit("Transpose", [joined], (batch, directions, hidden), name, perm=[1, 0, 2])
        else:
            alg.emit("Concat", parts, (directions, batch, hidden), name, axis=0)


def _reshaped(alg: GraphAlgebra, name: str | None, shape: tuple[int, ...]) -> str:
    if name is None:  # a state that stays zero
        return alg.constant(np.zeros(shape), "zeros")
    target = alg.graph.new_value(f"{alg.prefix}_shape", const=np.asarray(shape, np.int64)).name
    return alg.emit("Reshape", [name, target], shape)


def unrolled_copy(graph: Graph) -> Graph | None:
    """A copy of ``graph`` with every recurrent node it can write out written out (the original is
    untouched), or None when there is none."""
    if not any(node.op_type in UnrollRecurrent.op_types and not node.domain for node in graph.nodes):
        return None
    copy = Graph(
        list(graph.nodes),
        dict(graph.values),
        graph.inputs,
        graph.outputs,
        opset=graph.opset,
        format=graph.format,
        metadata=graph.metadata,
        opset_imports=graph.opset_imports,
    )
    if not UnrollRecurrent().run(copy):
        return None
    fill_default_attributes(copy)
    return copy
