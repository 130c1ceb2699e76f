"""Sorting and selecting the largest entries: TopK.

Sorting is 1-Lipschitz in ℓ2 (the rearrangement inequality: ‖sort x − sort y‖ ≤ ‖x − y‖), and
keeping the k first entries of each sorted group only drops coordinates, so TopK's values are
1-Lipschitz; its indices jump.
"""

from __future__ import annotations

from typing import Any

import torch

from ..ir import Node
from .context import RuleContext, RuleInputError
from .factor import Factor
from .registry import Op, register
from .runtime import Env, ints, positive_axis

FAMILY = "sorting"


@register
class TopK(Op):
    family = FAMILY
    summary = "values: 1 (sorting is 1-Lipschitz); indices: unbounded (they jump)"
    exact_in_float = True

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        if ctx.is_variable(node, 1):
            raise RuleInputError(f"the k of TopK '{node.name}' is computed from the network input")
        indices = Factor.unbounded("TopK's indices are a step function of the input (they jump)")
        return [Factor.constant(1.0, "closed-form"), indices][: max(1, len(node.outputs))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        k = ints(args[1])[0] if len(args) > 1 and args[1] is not None else node.attr_int("k")
        axis = positive_axis(node.attr_int("axis"), x.dim())
        values, indices = torch.topk(x, k, dim=axis, largest=bool(node.attr_int("largest", 1)), sorted=True)
        return [values, indices]
