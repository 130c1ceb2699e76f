"""Comparisons and boolean logic (step functions of their inputs), and Where (a selection).

A comparison jumps from false to true, so an output that depends on the network input through one
has no Lipschitz constant. Where with a constant condition only picks, entry by entry, from one of
its two branches: |Δy_i| ≤ max(|Δa_i|, |Δb_i|).

On a domain, a comparison whose result is the same at both corners of the box (it is monotone in
each input) is constant there: factor 0; and a Where whose condition is then constant is a
selection again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval, hull
from ..ir import Node
from ..linear_maps import Barrier, Linear
from .activation_steep import Jumps
from .context import RuleContext, domain_factor
from .factor import Factor
from .interval_rules import monotone_interval
from .linear_part import entry_map
from .registry import Op, register
from .runtime import Env, same_kind

FAMILY = "logical"


class Comparison(Jumps):
    family = FAMILY
    data_inputs = None
    fn: ClassVar[Any]

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        if self.monotone:
            return super().interval(node, ctx)
        return [Interval.full().intersect(0.0, 1.0)]  # a boolean

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        present = [a for a in args if a is not None]
        if len(present) == 1:
            return type(self).fn(present[0])
        return type(self).fn(*same_kind(present[0], present[1]))


# (function, monotone, the inputs it decreases in): a > b rises with a and falls with b.
_COMPARISONS: dict[str, tuple[Callable[..., Tensor], bool, tuple[int, ...]]] = {
    "Equal": (torch.eq, False, ()),
    "Greater": (torch.gt, True, (1,)),
    "Less": (torch.lt, True, (0,)),
    "GreaterOrEqual": (torch.ge, True, (1,)),
    "LessOrEqual": (torch.le, True, (0,)),
    "Not": (torch.logical_not, True, ()),
    "And": (torch.logical_and, True, ()),
    "Or": (torch.logical_or, True, ()),
    "Xor": (torch.logical_xor, False, ()),
    "IsNaN": (torch.isnan, False, ()),
}
for _name, (_fn, _monotone, _decreasing) in _COMPARISONS.items():
    register(
        type(
            _name,
            (Comparison,),
            {"fn": staticmethod(_fn), "monotone": _monotone, "decreasing": _decreasing, "__module__": __name__},
        )
    )


@register
class IsInf(Comparison):
    monotone = False

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
        positions = [i for i in (1, 2) if ctx.is_variable(node, i)]
        if ctx.is_variable(node, 0):
            condition = ctx.range_of(node.inputs[0])
            if ctx.on_domain and condition.is_point():
                # The condition is the same all over the domain: a selection (its own weight is 0).
                return domain_factor(
                    1.0,
                    "the condition is constant over the input's range",
                    combine="rss",
                    input_weights=[0.0] + _branch_weights(node, ctx, condition.lo, positions),
                )
            return Factor.unbounded("Where with a condition computed from the network input jumps between its branches")
        weights = _branch_weights(node, ctx, ctx.graph.const(node.inputs[0]), positions)
        return Factor.constant(1.0, "closed-form", combine="rss", input_weights=weights)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        if not ctx.is_variable(node, 0):
            return monotone_interval(self, node, ctx, positions=(1, 2))
        a, b = ctx.range_of(node.inputs[1]), ctx.range_of(node.inputs[2])
        shape = ctx.graph.shape(node.outputs[0])
        if shape is None:
            return [None]
        a, b = a.broadcast_to(shape), b.broadcast_to(shape)
        condition = ctx.range_of(node.inputs[0])
        if condition.is_point():  # the same branch for each entry all over the domain
            chosen = _first_branch(condition.lo, shape)
            return [Interval(np.where(chosen, a.lo, b.lo), np.where(chosen, a.hi, b.hi))]
        return [hull(a, b)]  # either branch, whatever the condition

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        a, b = same_kind(args[1], args[2])
        return torch.where(args[0].bool(), a, b)

    def linear_part(self, node: Node, ctx: RuleContext) -> tuple[Linear | None, ...] | Barrier:
        """With a constant condition and one variable branch, the entries it keeps: a Pick or a
        Permutation with structural zeros (dynamo's adaptive pooling masks its window indices so)."""
        variables = [i for i in (0, 1, 2) if ctx.is_variable(node, i)]
        if len(variables) != 1 or variables[0] == 0:
            return Barrier("its condition, or both its branches, are computed from the input")
        return entry_map(self, node, ctx, variables[0])


def _branch_weights(node: Node, ctx: RuleContext, condition, positions: list[int]) -> list[float]:
    """1 for each variable branch the condition (constant, or constant on the domain) takes
    somewhere, 0 for one it never takes: that branch cannot move the output."""
    shape = ctx.graph.shape(node.outputs[0])
    if condition is None or shape is None:
        return [1.0] * len(positions)
    chosen = _first_branch(condition, shape)
    taken = {1: bool(chosen.any()), 2: bool((~chosen).any())}
    return [1.0 if taken[p] else 0.0 for p in positions]


def _first_branch(condition, shape) -> np.ndarray:
    """Per output entry, whether the condition takes the first branch."""
    return np.broadcast_to(np.asarray(condition) != 0, tuple(shape))
