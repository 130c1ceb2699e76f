"""Passes are objects that rewrite a graph and say whether they changed it; the manager repeats them.

A pass keeps the function the graph computes unchanged. The manager runs its passes in order, and
again while any of them changed the graph (a fusion can expose a fold, a fold a merge), up to a cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import Graph, Node, fill_default_attributes


class Pass:
    name = "pass"

    def run(self, graph: Graph) -> bool:
        """Rewrite ``graph`` in place; True when anything changed."""
        raise NotImplementedError


@dataclass
class PassManager:
    passes: list[Pass]
    max_rounds: int = 8
    rounds: int = field(default=0, init=False)

    def run(self, graph: Graph) -> bool:
        """Run every pass until a round changes nothing (at most ``max_rounds`` rounds)."""
        changed_any = False
        for rounds in range(1, self.max_rounds + 1):
            self.rounds = rounds
            changed = False
            for one in self.passes:
                changed |= one.run(graph)
            changed_any |= changed
            if not changed:
                break
        return changed_any


class NodeRewrite(Pass):
    """A pass that tries one rewrite at each node of ``op_types`` (default domain) in graph order,
    skipping nodes an earlier rewrite removed."""

    op_types: tuple[str, ...] = ()

    def rewrite(self, graph: Graph, node: Node) -> bool:
        """Rewrite around ``node``; True when the graph changed."""
        raise NotImplementedError

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes:
            if node in graph and not node.domain and node.op_type in self.op_types:
                changed |= self.rewrite(graph, node)
        return changed


class FillDefaultAttributes(Pass):
    """Copy each op's attribute defaults from its ONNX schema (a load-time step)."""

    name = "fill-default-attributes"

    def run(self, graph: Graph) -> bool:
        return fill_default_attributes(graph)


class RemoveUnused(Pass):
    """Drop nodes whose outputs reach no graph output."""

    name = "remove-unused"

    def run(self, graph: Graph) -> bool:
        return graph.remove_unused()
