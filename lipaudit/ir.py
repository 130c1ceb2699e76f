"""A framework-neutral layer graph: what every loader produces and every analyzer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Value:
    """A tensor flowing through the graph. ``const`` is set when its content is known."""

    name: str
    shape: tuple[int, ...] | None = None
    const: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclass
class Node:
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)  # loaders decode string attributes to str
    domain: str = ""
    notes: list[str] = field(default_factory=list)  # what rewrites did to it, shown in the report


@dataclass
class Graph:
    """Nodes in topological order. An input name of ``""`` is a missing optional input."""

    nodes: list[Node]
    values: dict[str, Value]
    inputs: list[str]
    outputs: list[str]
    opset: int = 0
    format: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Value:
        if name not in self.values:
            self.values[name] = Value(name)
        return self.values[name]

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        return self.value(name).const

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.value(name).shape

    def variable_inputs(self, node: Node) -> list[str]:
        """The inputs that depend on the network input (the ones a Lipschitz factor applies to)."""
        return [name for name in node.inputs if name and not self.is_const(name)]

    def consumers(self, name: str) -> list[Node]:
        return [node for node in self.nodes if name in node.inputs]

    def producer(self, name: str) -> Node | None:
        for node in self.nodes:
            if name in node.outputs:
                return node
        return None

    def is_graph_output(self, name: str) -> bool:
        return name in self.outputs

    def sole_consumer(self, name: str) -> Node | None:
        """The only node reading ``name``, when it is not also a graph output."""
        readers = self.consumers(name)
        if len(readers) != 1 or self.is_graph_output(name):
            return None
        return readers[0]

    def scalar(self, name: str) -> float | None:
        """The value of a constant with one distinct entry (a broadcast scalar), else None."""
        const = self.const(name)
        if const is None or const.size == 0:
            return None
        flat = const.astype(float).ravel()
        return float(flat[0]) if (flat == flat[0]).all() else None

    def remove_unused(self) -> None:
        """Drop nodes whose outputs reach no graph output (dead code left by rewrites)."""
        needed = set(self.outputs)
        kept: list[Node] = []
        for node in reversed(self.nodes):
            if any(out in needed for out in node.outputs):
                kept.append(node)
                needed.update(name for name in node.inputs if name)
        self.nodes = list(reversed(kept))

    def parameter_count(self) -> int:
        """Entries of the constants the nodes read (weights left behind by rewrites do not count)."""
        used = {name for node in self.nodes for name in node.inputs if name}
        return int(sum(self.values[name].const.size for name in used
                       if name in self.values and self.values[name].const is not None))
