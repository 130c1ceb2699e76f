"""Inline an If whose condition is a constant: its taken branch becomes ordinary nodes.

torch.onnx.export of scripted code writes an If for every `if` on a shape; once the input shapes
are fixed and shape arithmetic folded, the condition is a constant and the usual rules apply to
the branch. The branch's own names are prefixed with the If node's, so they cannot clash.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from ..passes.manager import Pass
from .onnx import value_shapes
from .onnx_graph import ir_nodes


def _defined(branch) -> list[str]:
    names = [init.name for init in branch.initializer] + [init.values.name for init in branch.sparse_initializer]
    return names + [name for node in branch.node for name in node.output if name]


class InlineConstantIf(Pass):
    name = "inline-constant-if"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes:
            if node.op_type == "If" and not node.domain and node.inputs and graph.is_const(node.inputs[0]):
                changed |= self._inline(graph, node)
        return changed

    @staticmethod
    def _inline(graph: Graph, node: Node) -> bool:
        condition = np.asarray(graph.const(node.inputs[0]))
        if condition.size != 1:
            return False
        branch = node.attrs.get("then_branch" if bool(condition.ravel()[0]) else "else_branch")
        if branch is None or len(branch.output) != len(node.outputs):
            return False
        rename = {}
        for name in _defined(branch):
            rename[name] = graph.new_value(f"{node.name}/{name}").name
        values: dict[str, Value] = {}
        nodes = ir_nodes(branch, values, rename=rename, prefix=f"{node.name}/")
        for old, shape in value_shapes(branch).items():
            if old in rename and rename[old] not in values:
                values[rename[old]] = Value(rename[old], shape)
        for value in values.values():
            existing = graph.get(value.name)
            if existing is None or value.const is not None or existing.shape is None:
                graph.add_value(value)
        # No runtime probe sees inside a branch: these shapes are ONNX inference's (or the branch's
        # declarations) until an execution of the graph confirms them (lipaudit.execute.verify).
        unconfirmed = graph.metadata.setdefault("unconfirmed_shapes", set())
        unconfirmed.update(name for name, value in values.items() if value.const is None)
        for source, target in zip(branch.output, node.outputs):
            if target:
                nodes.append(
                    Node(f"{node.name}/output:{target}", "Identity", (rename.get(source.name, source.name),), (target,))
                )
        graph.insert_nodes(node, nodes)
        graph.remove_node(node)
        return True
