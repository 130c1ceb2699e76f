"""Passes say whether they changed the graph; the manager repeats them until nothing changes."""

from __future__ import annotations

from lipaudit.ir import Graph, Node, Value
from lipaudit.passes import Pass, PassManager


class DropOneIdentity(Pass):
    """Removes the first Identity it finds: needs one round per Identity."""

    name = "drop-one-identity"

    def run(self, graph: Graph) -> bool:
        for node in graph.nodes:
            if node.op_type == "Identity":
                graph.replace_uses(node.outputs[0], node.inputs[0])
                graph.remove_node(node)
                return True
        return False


def _identities(count: int) -> Graph:
    names = ["x"] + [f"v{i}" for i in range(count)]
    nodes = [Node(f"n{i}", "Identity", (names[i],), (names[i + 1],)) for i in range(count)]
    return Graph(nodes, {"x": Value("x", (1,))}, ["x"], [names[-1]])


def test_the_manager_repeats_until_nothing_changes() -> None:
    graph = _identities(3)
    manager = PassManager([DropOneIdentity()])
    assert manager.run(graph) and graph.nodes == [] and graph.outputs == ["x"]
    assert manager.rounds == 4  # three that changed something, one that did not
    assert not manager.run(graph)


def test_the_manager_stops_at_its_cap() -> None:
    graph = _identities(5)
    PassManager([DropOneIdentity()], max_rounds=2).run(graph)
    assert len(graph.nodes) == 3
