"""A framework-neutral layer graph: what every loader produces and every rule reads.

Values know their producer and their consumers (as in onnx-ir): the graph keeps both maps, and
only its own mutators change a node's inputs or outputs, so the maps never go stale. Looking a
value up never creates it; ``add_value`` and ``new_value`` do.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .attributes import AttributeReader, schema_defaults


@dataclass
class Value:
    """A tensor flowing through the graph. ``const`` is set when its content is known."""

    name: str
    shape: tuple[int, ...] | None = None
    const: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclass(eq=False)
class Node(AttributeReader):
    """One operator application. Compared by identity; ``inputs``/``outputs`` change only through Graph.

    An input name of ``""`` is a missing optional input, an output name of ``""`` an unused output.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)  # schema defaults filled in at load time
    domain: str = ""
    notes: list[str] = field(default_factory=list)  # what rewrites did to it, shown in the report
    # Outer-scope values its subgraphs (If/Loop/Scan bodies) read: inputs in all but name.
    implicit_inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(self.outputs)
        self.implicit_inputs = tuple(self.implicit_inputs)
        if self.domain == "ai.onnx":
            self.domain = ""

    @property
    def all_inputs(self) -> tuple[str, ...]:
        """The explicit inputs, then the outer-scope values its subgraphs read."""
        return self.inputs + self.implicit_inputs

    @property
    def label(self) -> str:
        """The op type, prefixed by its domain when that is not the default one."""
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type


# The note a node renamed for its repeated name carries: limits set for the name it was written with
# still apply to it (config.layer_violations, written_names).
RENAMED = "named '{}' in the model; renamed, as another node has that name"
_RENAMED = re.compile("^" + re.escape(RENAMED).replace(re.escape("{}"), "(.*)") + "$")


def unused_name(name: str, taken: Container[str]) -> str:
    """``name``, or the first of name_2, name_3, … not in ``taken``."""
    found, k = name, 1
    while found in taken:
        k += 1
        found = f"{name}_{k}"
    return found


def written_names(notes: list[str]) -> list[str]:
    """The names a node was written with before it was renamed (from its notes)."""
    return [found.group(1) for note in notes if (found := _RENAMED.match(note))]


class Graph:
    """Nodes in topological order, with producer and consumer maps kept by the mutators."""

    def __init__(
        self,
        nodes: Iterable[Node],
        values: dict[str, Value],
        inputs: list[str],
        outputs: list[str],
        *,
        opset: int = 0,
        format: str = "",
        metadata: dict[str, Any] | None = None,
        opset_imports: dict[str, int] | None = None,
    ) -> None:
        self.values = values
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.opset = opset
        self.opset_imports = dict(opset_imports or {"": opset})
        self.format = format
        self.metadata = dict(metadata or {})
        self._order: dict[Node, None] = {}
        self._listed: list[Node] | None = None
        self._producer: dict[str, Node] = {}
        self._consumers: dict[str, dict[Node, None]] = {}
        # Node names are unique: the analyses key factors and slopes by them, and ONNX only asks
        # for unique names within one graph (an inlined If branch may repeat a name of the main
        # graph; unnamed nodes get op_index names that a named one may already use).
        self._named: dict[str, Node] = {}
        for node in nodes:
            self.append_node(node)

    # ------------------------------------------------------------------ reading

    @property
    def nodes(self) -> list[Node]:
        if self._listed is None:
            self._listed = list(self._order)
        return self._listed

    def __contains__(self, node: Node) -> bool:
        return node in self._order

    def opset_of(self, node: Node) -> int:
        return self.opset_imports.get(node.domain, self.opset if not node.domain else 1)

    def get(self, name: str) -> Value | None:
        return self.values.get(name) if name else None

    def value(self, name: str) -> Value:
        """The value named ``name``; KeyError when the graph has none."""
        found = self.get(name)
        if found is None:
            raise KeyError(f"the graph has no value named '{name}'")
        return found

    def const(self, name: str) -> np.ndarray | None:
        found = self.get(name)
        return None if found is None else found.const

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None

    def shape(self, name: str) -> tuple[int, ...] | None:
        found = self.get(name)
        return None if found is None else found.shape

    def variable_inputs(self, node: Node) -> list[str]:
        """The inputs (subgraph reads included) that depend on the network input, one per position."""
        return [name for name in node.all_inputs if name and not self.is_const(name)]

    def producer(self, name: str) -> Node | None:
        return self._producer.get(name)

    def consumers(self, name: str) -> list[Node]:
        """The nodes reading ``name``, in graph order."""
        readers = self._consumers.get(name)
        if not readers:
            return []
        if len(readers) == 1:
            return list(readers)
        position = self.positions()
        return sorted(readers, key=position.__getitem__)

    def is_graph_output(self, name: str) -> bool:
        return name in self.outputs

    def is_used(self, name: str) -> bool:
        return bool(name) and (bool(self._consumers.get(name)) or name in self.outputs)

    def sole_consumer(self, name: str) -> Node | None:
        """The only node reading ``name``, when it is not also a graph output."""
        readers = self._consumers.get(name)
        if not readers or len(readers) != 1 or self.is_graph_output(name):
            return None
        return next(iter(readers))

    def positions(self) -> dict[Node, int]:
        return {node: index for index, node in enumerate(self.nodes)}

    def scalar(self, name: str) -> float | None:
        """The value of a constant with one distinct entry (a broadcast scalar), else None."""
        const = self.const(name)
        if const is None or const.size == 0 or const.dtype.kind not in "biuf":
            return None
        flat = const.astype(float).ravel()
        return float(flat[0]) if (flat == flat[0]).all() else None

    def parameter_count(self) -> int:
        """Entries of the constants the nodes read (weights left behind by rewrites do not count)."""
        used = {name for node in self.nodes for name in node.all_inputs if name}
        return int(
            sum(
                const.size
                for const in (self.values[name].const for name in used if name in self.values)
                if const is not None
            )
        )

    # ------------------------------------------------------------------ values

    def add_value(self, value: Value) -> Value:
        self.values[value.name] = value
        return value

    def new_value(self, hint: str, *, shape: tuple[int, ...] | None = None, const: np.ndarray | None = None) -> Value:
        """A value with a fresh name built from ``hint``."""
        name, k = hint, 0
        while name in self.values or name in self._producer:
            k += 1
            name = f"{hint}_{k}"
        if const is not None and shape is None:
            shape = tuple(np.shape(const))
        return self.add_value(Value(name, shape, const))

    # ------------------------------------------------------------------ nodes

    def append_node(self, node: Node) -> None:
        self._order[node] = None
        self._listed = None
        self._link(node)

    def insert_nodes(self, before: Node, nodes: list[Node]) -> None:
        """Insert ``nodes`` (in order) just before ``before``."""
        order: dict[Node, None] = {}
        for existing in self._order:
            if existing is before:
                order.update(dict.fromkeys(nodes))
            order[existing] = None
        self._order = order
        self._listed = None
        for node in nodes:
            self._link(node)

    def remove_node(self, node: Node) -> None:
        del self._order[node]
        self._listed = None
        self._unlink(node)

    def set_inputs(self, node: Node, inputs: Iterable[str], implicit: Iterable[str] | None = None) -> None:
        self._unlink_inputs(node)
        node.inputs = tuple(inputs)
        if implicit is not None:
            node.implicit_inputs = tuple(implicit)
        self._link_inputs(node)

    def set_input(self, node: Node, index: int, name: str) -> None:
        inputs = list(node.inputs)
        inputs[index] = name
        self.set_inputs(node, inputs)

    def set_outputs(self, node: Node, outputs: Iterable[str]) -> None:
        for name in node.outputs:
            if name and self._producer.get(name) is node:
                del self._producer[name]
        node.outputs = tuple(outputs)
        for name in node.outputs:
            if name:
                self._producer[name] = node

    def replace_uses(self, old: str, new: str) -> None:
        """Every read of ``old`` (by nodes and as a graph output) reads ``new`` instead."""
        for node in list(self._consumers.get(old, {})):
            self.set_inputs(
                node,
                [new if name == old else name for name in node.inputs],
                [new if name == old else name for name in node.implicit_inputs],
            )
        self.outputs = [new if name == old else name for name in self.outputs]

    def remove_unused(self) -> bool:
        """Drop nodes whose outputs reach no graph output (dead code left by rewrites)."""
        needed = set(self.outputs)
        dead: list[Node] = []
        for node in reversed(self.nodes):
            if any(out in needed for out in node.outputs):
                needed.update(name for name in node.all_inputs if name)
            else:
                dead.append(node)
        for node in dead:
            self.remove_node(node)
        return bool(dead)

    def check_links(self) -> None:
        """Raise AssertionError when the maps disagree with the nodes (for tests of passes)."""
        producers = {out: node for node in self.nodes for out in node.outputs if out}
        assert producers == self._producer, "producer map is stale"
        consumers: dict[str, set[int]] = {}
        for node in self.nodes:
            for name in node.all_inputs:
                if name:
                    consumers.setdefault(name, set()).add(id(node))
        linked = {name: {id(n) for n in readers} for name, readers in self._consumers.items() if readers}
        assert consumers == linked, "consumer map is stale"

    # ------------------------------------------------------------------ internals

    def _link(self, node: Node) -> None:
        if self._named.get(node.name, node) is not node:
            node.notes.append(RENAMED.format(node.name))
            node.name = unused_name(node.name, self._named)
        self._named[node.name] = node
        for name in node.outputs:
            if name:
                self._producer[name] = node
        self._link_inputs(node)

    def _unlink(self, node: Node) -> None:
        if self._named.get(node.name) is node:
            del self._named[node.name]
        for name in node.outputs:
            if name and self._producer.get(name) is node:
                del self._producer[name]
        self._unlink_inputs(node)

    def _link_inputs(self, node: Node) -> None:
        for name in node.all_inputs:
            if name:
                self._consumers.setdefault(name, {})[node] = None

    def _unlink_inputs(self, node: Node) -> None:
        for name in node.all_inputs:
            readers = self._consumers.get(name)
            if readers is not None:
                readers.pop(node, None)
                if not readers:
                    del self._consumers[name]


def fill_default_attributes(graph: Graph) -> bool:
    """Give every node the schema defaults of the attributes it leaves out; returns whether any changed."""
    changed = False
    for node in graph.nodes:
        for name, value in schema_defaults(node.op_type, node.domain, graph.opset_of(node)).items():
            if name not in node.attrs:
                node.attrs[name] = list(value) if isinstance(value, list) else value
                changed = True
    return changed
