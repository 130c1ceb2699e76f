"""Sorting and selecting the largest entries: TopK, and the pair sorts exporters spell out in pieces.

Sorting is 1-Lipschitz in ℓ2 (the rearrangement inequality: ‖sort x − sort y‖ ≤ ‖x − y‖), and
keeping the k first entries of each sorted group only drops coordinates, so TopK's values are
1-Lipschitz; its indices jump.

MaxMin and CRelu are not ONNX ops: the sorting-pattern pass (passes/fuse_sorting.py) makes them
out of the pieces an exporter writes, because measured piece by piece the pair costs √2 (two
1-Lipschitz halves side by side), while as one map it is 1-Lipschitz.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from ..ir import Node
from ..spectral.scaling import sqrt_up
from .context import RuleContext, RuleInputError
from .factor import Factor
from .registry import FUSED_DOMAIN, Op, register
from .runtime import Env, cannot_run, ints, positive_axis

FAMILY = "sorting"
# Ops that only lipaudit's fusion passes create: a domain of their own, so no model's op is taken for one.


@register
class TopK(Op):
    family = FAMILY
    summary = (
        "values: 1 (sorting is 1-Lipschitz, largest or smallest first, along any axis); with sorted=0 and "
        "k > 1 unbounded (the runtime picks the order); indices: unbounded (they jump)"
    )
    exact_in_float = True

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        if ctx.is_variable(node, 1):
            jumps = Factor.unbounded("TopK's k is computed from the network input: its output size jumps")
            return [jumps] * max(1, len(node.outputs))
        indices = Factor.unbounded("TopK's indices are a step function of the input (they jump)")
        values = Factor.constant(1.0, "closed-form")
        if not node.attr_int("sorted", 1) and _k(node, ctx.const_input(node, 1)) > 1:
            # The spec leaves the order of the k values to the runtime: onnxruntime returns them in heap
            # order, so an entry that enters the k largest lands in another place than the one leaving.
            values = Factor.unbounded(
                "TopK with sorted=0 returns its values in an order the runtime chooses: it jumps as entries "
                "enter and leave the k selected"
            )
        return [values, indices][: max(1, len(node.outputs))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        k = _k(node, args[1] if len(args) > 1 else None)
        if not node.attr_int("sorted", 1) and k > 1:
            raise cannot_run(node, "with sorted=0: the order of its values is the runtime's choice")
        axis = positive_axis(node.attr_int("axis"), x.dim())
        values, indices = torch.topk(x, k, dim=axis, largest=bool(node.attr_int("largest", 1)), sorted=True)
        return [values, indices]


def _k(node: Node, k_input: Any) -> int:
    """TopK's k: its second input from opset 10, an attribute before."""
    return ints(k_input)[0] if k_input is not None else node.attr_int("k")


def _joined(parts: list[torch.Tensor], node: Node) -> torch.Tensor:
    """The two halves concatenated along ``concat_axis``, or stacked on a new axis there."""
    axis = node.attr_int("concat_axis")
    if node.attr_int("stack", 0):
        return torch.stack(parts, dim=positive_axis(axis, parts[0].dim() + 1))
    return torch.cat(parts, dim=positive_axis(axis, parts[0].dim()))


@register
class MaxMin(Op):
    """y = join(max(a, b), min(a, b)) with a = x[first], b = x[second] along ``axis``.

    GroupSort with groups of two (MaxMin, Anil et al. 2019). Attributes: ``axis``; ``first`` and
    ``second``, the indices along it that a and b take (as many each); ``max_first`` (1: the maxima
    come first); ``concat_axis`` and ``stack`` (1: the halves are stacked on a new axis there, as
    torch.stack does; 0: concatenated along it).

    Rule: x ↦ (a, b) copies entry i of x as often as i appears in first and second together, so its
    norm is √(most appearances); each pair (a_j, b_j) ↦ (max, min) sorts two numbers, 1-Lipschitz;
    joining is an isometry. Disjoint selections (every exported GroupSort-2): exactly 1.
    """

    domain = FUSED_DOMAIN
    family = FAMILY
    exact_in_float = True  # selects and compares entries
    resizes = True  # overlapping selections are counted by the rule
    summary = "1 for two disjoint selections (sorting pairs is 1-Lipschitz); √(most copies of an entry) if they overlap"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        shape = ctx.input_shape(node)
        axis = positive_axis(node.attr_int("axis"), len(shape))
        first, second = node.attr_ints("first"), node.attr_ints("second")
        if not 0 <= axis < len(shape):
            raise RuleInputError(f"MaxMin '{node.name}': axis {node.attr_int('axis')} is outside rank {len(shape)}")
        if not first or len(first) != len(second):
            raise RuleInputError(f"MaxMin '{node.name}' pairs {len(first)} entries with {len(second)}")
        if not all(0 <= i < shape[axis] for i in first + second):
            raise RuleInputError(f"MaxMin '{node.name}' selects indices outside 0..{shape[axis] - 1}")
        copies = max(Counter(first + second).values())
        if copies == 1:
            return Factor.constant(1.0, "closed-form", note="disjoint pairs, each sorted")
        return Factor.constant(
            sqrt_up(copies), "closed-form", note=f"the two selections overlap: an entry appears {copies} times"
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = positive_axis(node.attr_int("axis"), x.dim())
        a = x.index_select(axis, torch.tensor(node.attr_ints("first"), dtype=torch.long, device=x.device))
        b = x.index_select(axis, torch.tensor(node.attr_ints("second"), dtype=torch.long, device=x.device))
        high, low = torch.maximum(a, b), torch.minimum(a, b)
        return _joined([high, low] if node.attr_int("max_first") else [low, high], node)


@register
class CRelu(Op):
    """y = concat(relu(x), relu(−x)) along ``axis`` (``negative_first``: relu(−x) first).

    The concatenated ReLU (Shang et al. 2016; deel-torchlip calls it MaxMin). Rule 1: per entry,
    (relu(x), relu(−x)) is (|x|, 0) or (0, |x|); between two inputs of the same sign the change is
    |Δx| in one coordinate, and for x > 0 > x' it is (x, −x'), of norm² x² + x'² ≤ (x − x')².
    """

    domain = FUSED_DOMAIN
    family = FAMILY
    exact_in_float = True  # selects and negates entries
    resizes = True  # the output holds two entries per input entry, and the rule accounts for both
    summary = "1 (per entry one of relu(x), relu(−x) is 0: the pair moves no more than x)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        rank = len(ctx.input_shape(node))
        if not 0 <= positive_axis(node.attr_int("axis"), rank) < rank:
            raise RuleInputError(f"CRelu '{node.name}': axis {node.attr_int('axis')} is outside rank {rank}")
        return Factor.constant(1.0, "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        parts = [torch.relu(x), torch.relu(-x)]
        if node.attr_int("negative_first", 0):
            parts.reverse()
        return torch.cat(parts, dim=positive_axis(node.attr_int("axis"), x.dim()))
