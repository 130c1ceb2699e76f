"""Comparisons and boolean logic (step functions of their inputs), and Where (a selection).

A comparison jumps from false to true, so an output that depends on the network input through one
has no Lipschitz constant. Where with a constant condition only picks, entry by entry, from one of
its two branches: |Δy_i| ≤ max(|Δa_i|, |Δb_i|).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..ir import Node
from .activation import Jumps
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, same_kind

FAMILY = "logical"


class Comparison(Jumps):
    family = FAMILY
    data_inputs = None
    fn: ClassVar[Any]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        present = [a for a in args if a is not None]
        if len(present) == 1:
            return type(self).fn(present[0])
        return type(self).fn(*same_kind(present[0], present[1]))


for _name, _fn in {"Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
                   "LessOrEqual": torch.le, "Not": torch.logical_not, "And": torch.logical_and,
                   "Or": torch.logical_or, "Xor": torch.logical_xor, "IsNaN": torch.isnan}.items():
    register(type(_name, (Comparison,), {"fn": staticmethod(_fn), "__module__": __name__}))


@register
class IsInf(Comparison):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        positive, negative = node.attr_int("detect_positive", 1), node.attr_int("detect_negative", 1)
        return (torch.isposinf(x) & bool(positive)) | (torch.isneginf(x) & bool(negative))


@register
class Where(Op):
    family = FAMILY
    summary = "constant condition: √(Σ L²) of the branches (a selection); variable condition: unbounded"
    data_inputs = None
    elementwise = True
    exact_in_float = True

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        if ctx.is_variable(node, 0):
            return Factor.unbounded("Where with a condition computed from the network input jumps between "
                                    "its branches")
        positions = [i for i in (1, 2) if ctx.is_variable(node, i)]
        return Factor.constant(1.0, "closed-form", combine="rss", input_weights=[1.0] * len(positions))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        a, b = same_kind(args[1], args[2])
        return torch.where(args[0].bool(), a, b)
