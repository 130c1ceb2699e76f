"""Control flow: If, Loop and Scan run subgraphs. They are unsupported, with the reason.

An If whose condition folds to a constant at the given input shapes (torch.onnx.export of scripted
code that tests a shape) is inlined by a pass before analysis, so the taken branch is analysed like
any other nodes. What is left never counts as a constant or as 1: the node depends on every
outer-scope value its bodies read (its implicit inputs).
"""

from __future__ import annotations

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register

FAMILY = "control flow"


class ControlFlow(Op):
    family = FAMILY
    certified = False
    data_inputs = None
    why = ""

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        return [Factor.unknown(self.why)] * max(1, len(node.outputs))


@register
class If(ControlFlow):
    summary = "unsupported unless the condition is constant (then the taken branch is inlined)"
    why = (
        "If chooses a subgraph by a condition computed from the network input; only an If whose "
        "condition is constant at the given input shapes is analysed (its branch is inlined)"
    )


@register
class Loop(ControlFlow):
    summary = "unsupported: a loop body runs a variable number of times"
    why = "Loop runs its body a number of times lipaudit does not unroll; loops are not analysed"


@register
class Scan(ControlFlow):
    summary = "unsupported: a scan body runs once per slice"
    why = "Scan runs its body over slices of its inputs; scans are not analysed"
