"""Recognise ℓ2-norm pooling spelled out as square → average pool → (affine, clamp) → square root.

Spelled out, the square and the root have no global bound (their slopes are unbounded); together
they are a norm per window (ops/pooling.py, L2Pool, proves the factor). The forms matched:

* the square: Pow(x, 2) or Mul(x, x);
* the pool: AveragePool (any padding, stride, ceil_mode, count_include_pad), GlobalAveragePool, or
  ReduceMean over every spatial axis with keepdims;
* between pool and root, each read by the next alone, any sequence of: Mul or Div by a positive
  scalar constant, Add or Sub of a scalar constant, a clamp from below (Max with a scalar constant,
  Clip with a constant min and no max), and the identities of a non-negative value (Relu, Abs,
  and torch's lp_pool Sign(u)·Relu(Abs(u)));
* the root: Sqrt, or Pow(·, 0.5).

The ε exporters add under the root (sqrt(mean(x²) + ε), deel-torchlip and hand-written RMS pools)
and a clamp from below only flatten the root near 0, so any offset ≥ 0 and any floor keep the
factor; a negative offset (under a floor) makes the slope exceed it, and is left unfused: its
pieces then stay unbounded. The fused node keeps the root's output name.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node
from ..ops.sorting import FUSED_DOMAIN
from .manager import NodeRewrite
from .matching import axis_of, const_ints, constant_operand, known_shape, producer_of, read_only_by

_POOL_ATTRIBUTES = ("kernel_shape", "strides", "pads", "auto_pad", "dilations", "ceil_mode", "count_include_pad")


class _Affine:
    """The value max(scale·mean + bias, floor) of the chain so far, mean ≥ 0 the pooled squares."""

    def __init__(self) -> None:
        self.scale, self.bias, self.floor = 1.0, 0.0, -math.inf

    def non_negative(self) -> bool:
        return self.scale >= 0 and max(self.bias, self.floor) >= 0

    def step(self, graph: Graph, node: Node, value: str) -> bool:
        """Apply ``node`` (which reads ``value``); False when it is not an affine step or a clamp."""
        operand = constant_operand(graph, node)
        if node.op_type in ("Relu", "Abs"):
            return self.non_negative()
        if node.op_type == "Clip":
            low = graph.scalar(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
            if (
                node.inputs[0] != value
                or low is None
                or (len(node.inputs) > 2 and node.inputs[2])
                or not all(not name or graph.is_const(name) for name in node.inputs[1:])
            ):
                return False
            self.floor = max(self.floor, low)
            return True
        if operand is None or operand[0] != value:
            return False
        c = operand[1]
        if node.op_type == "Mul" and c > 0:
            self.scale, self.bias, self.floor = self.scale * c, self.bias * c, self.floor * c
        elif node.op_type == "Div" and c > 0 and node.inputs[0] == value:
            self.scale, self.bias, self.floor = self.scale / c, self.bias / c, self.floor / c
        elif node.op_type == "Add":
            self.bias, self.floor = self.bias + c, self.floor + c
        elif node.op_type == "Sub" and node.inputs[0] == value:
            self.bias, self.floor = self.bias - c, self.floor - c
        elif node.op_type == "Max":
            self.floor = max(self.floor, c)
        else:
            return False
        return True


def _square_source(graph: Graph, name: str) -> tuple[str, Node] | None:
    """(x, node) when ``name`` is Pow(x, 2) or Mul(x, x)."""
    node = producer_of(graph, name, "Pow", "Mul")
    if node is None or len(node.inputs) != 2:
        return None
    if node.op_type == "Mul" and node.inputs[0] == node.inputs[1]:
        return node.inputs[0], node
    if (
        node.op_type == "Pow"
        and graph.is_const(node.inputs[1])
        and graph.scalar(node.inputs[1]) == 2.0
        and not graph.is_const(node.inputs[0])
    ):
        return node.inputs[0], node
    return None


def _pool_attributes(graph: Graph, pool: Node, x: str) -> dict | None:
    """AveragePool attributes computing what ``pool`` computes on ``x``'s square."""
    shape = known_shape(graph, x)
    if shape is None or len(shape) < 3:
        return None
    if pool.op_type == "AveragePool":
        return {key: pool.attrs[key] for key in _POOL_ATTRIBUTES if key in pool.attrs}
    if pool.op_type == "ReduceMean":
        axes = const_ints(graph, pool, 1, "axes")
        positives = [p for p in (axis_of(a, len(shape)) for a in axes or []) if p is not None]
        if (
            axes is None
            or len(positives) != len(axes)
            or sorted(positives) != list(range(2, len(shape)))
            or not pool.attr_int("keepdims", 1)
        ):
            return None
    n = len(shape) - 2
    return {
        "kernel_shape": list(shape[2:]),
        "strides": [1] * n,
        "pads": [0] * (2 * n),
        "dilations": [1] * n,
        "auto_pad": "NOTSET",
        "ceil_mode": 0,
        "count_include_pad": 0,
    }


def _is_root(graph: Graph, node: Node) -> bool:
    if node.domain:
        return False
    if node.op_type == "Sqrt":
        return True
    return (
        node.op_type == "Pow"
        and len(node.inputs) == 2
        and graph.is_const(node.inputs[1])
        and graph.scalar(node.inputs[1]) == 0.5
    )


def _sign_times_magnitude(graph: Graph, value: str) -> tuple[list[Node], str] | None:
    """torch's lp_pool writes sign(u)·relu(|u|): ([Sign, Abs, Relu, Mul], the Mul's output) when the
    readers of ``value`` are exactly that diamond."""
    readers = graph.consumers(value)
    sign = next((n for n in readers if n.op_type == "Sign" and not n.domain), None)
    absolute = next((n for n in readers if n.op_type == "Abs" and not n.domain), None)
    if sign is None or absolute is None or not read_only_by(graph, value, [sign, absolute]):
        return None
    relu = graph.sole_consumer(absolute.outputs[0])
    if relu is None or relu.op_type != "Relu" or relu.domain:
        return None
    product = graph.sole_consumer(relu.outputs[0])
    if (
        product is None
        or product.op_type != "Mul"
        or product.domain
        or sorted(product.inputs) != sorted([sign.outputs[0], relu.outputs[0]])
        or not read_only_by(graph, sign.outputs[0], [product])
    ):
        return None
    return [sign, absolute, relu, product], product.outputs[0]


def _fuse_from_pool(graph: Graph, pool: Node) -> bool:
    squared = _square_source(graph, pool.inputs[0]) if pool.inputs else None
    if squared is None:
        return False
    x, square = squared
    attributes = _pool_attributes(graph, pool, x)
    if attributes is None:
        return False
    chain, value, affine = [pool], pool.outputs[0], _Affine()
    while True:
        diamond = _sign_times_magnitude(graph, value)
        if diamond is not None:
            if not affine.non_negative():
                return False
            chain += diamond[0]
            value = diamond[1]
            continue
        reader = graph.sole_consumer(value)
        if reader is None or reader.domain:
            return False
        if _is_root(graph, reader) and reader.inputs[0] == value:
            root = reader
            break
        if not affine.step(graph, reader, value):
            return False
        chain.append(reader)
        value = reader.outputs[0]
    if not (affine.scale >= 0 and affine.bias >= 0 and math.isfinite(affine.scale) and math.isfinite(affine.bias)):
        return False
    if known_shape(graph, root.outputs[0]) != known_shape(graph, pool.outputs[0]):
        return False
    removed = chain + ([square] if read_only_by(graph, square.outputs[0], [pool]) else [])
    for node in removed:
        graph.remove_node(node)
    root.op_type, root.domain = "L2Pool", FUSED_DOMAIN
    root.attrs = dict(attributes, scale=float(np.float64(affine.scale)), bias=float(affine.bias))
    if affine.floor > affine.bias:  # a floor at or below the offset never binds
        root.attrs["floor"] = float(affine.floor)
    graph.set_inputs(root, [x])
    root.notes.append(f"fused from square → {pool.op_type} → root (ℓ2-norm pooling)")
    return True


class FuseL2Pool(NodeRewrite):
    name = "fuse-l2-pool"
    op_types = ("AveragePool", "GlobalAveragePool", "ReduceMean")

    def rewrite(self, graph: Graph, node: Node) -> bool:
        return _fuse_from_pool(graph, node)
