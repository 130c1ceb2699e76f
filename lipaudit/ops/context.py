"""What a rule may read besides its node: the graph, the user's settings, and shape helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ir import Graph, Node


class RuleInputError(ValueError):
    """The node is malformed or lacks what the rule needs (a shape, a constant)."""


@dataclass
class RuleContext:
    graph: Graph
    method: str = "auto"
    device: torch.device = torch.device("cpu")

    def opset(self, node: Node) -> int:
        return self.graph.opset_of(node)

    def input_shape(self, node: Node, index: int = 0) -> tuple[int, ...]:
        return self.known_shape(node, node.inputs[index], "input")

    def output_shape(self, node: Node, index: int = 0) -> tuple[int, ...]:
        return self.known_shape(node, node.outputs[index], "output")

    def known_shape(self, node: Node, name: str, role: str = "input") -> tuple[int, ...]:
        const = self.graph.const(name)
        shape = tuple(const.shape) if const is not None else self.graph.shape(name)
        if shape is None or any(d is None or d < 0 for d in shape):
            raise RuleInputError(f"the shape of {role} '{name}' of {node.op_type} '{node.name}' is unknown")
        return tuple(int(d) for d in shape)

    def const_input(self, node: Node, index: int) -> np.ndarray | None:
        if index >= len(node.inputs):
            return None
        return self.graph.const(node.inputs[index])

    def is_variable(self, node: Node, index: int) -> bool:
        return index < len(node.inputs) and bool(node.inputs[index]) and not self.graph.is_const(node.inputs[index])


def broadcast_copies(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """How many output entries each entry of a tensor of ``shape`` feeds after numpy broadcasting."""
    copies = 1
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    for dim, out_dim in zip(padded, out_shape):
        if dim == 1 and out_dim != 1:
            copies *= out_dim
    return copies


def broadcast_gain(coefficients: np.ndarray, var_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> float:
    """Operator norm of x -> c ⊙ broadcast(x): sqrt(max over entries of x of Σ c² over its copies)."""
    squared = np.broadcast_to(np.asarray(coefficients, dtype=np.float64) ** 2, out_shape)
    padded = (1,) * (len(out_shape) - len(var_shape)) + tuple(var_shape)
    axes = tuple(i for i, (dim, out_dim) in enumerate(zip(padded, out_shape)) if dim == 1 and out_dim != 1)
    summed = squared.sum(axis=axes) if axes else squared
    return float(np.sqrt(summed.max())) if summed.size else 0.0
