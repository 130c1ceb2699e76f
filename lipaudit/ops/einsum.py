"""Einsum: multilinear in its operands, so linear in its one variable operand when the others are
constants (a weight contracted with the input, as in per-head projections written with einsum).

The factor is the spectral norm of that linear map, materialised at the node's real shapes by
pushing the identity through the op (the equation with one more index for the basis vectors) and
certified like any dense weight. Two variable operands make a product, which has no global bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval
from ..ir import Node
from ..linear_maps import Barrier, Dense, Linear
from ..spectral.dense import dense_norm
from .context import DOMAIN_HINT, RuleContext
from .factor import Factor
from .interval_rules import bilinear_interval
from .registry import Op, register
from .runtime import Env

FAMILY = "linear"
# Entries of the materialised matrix (inputs × outputs) past which the rule declines: 2^24 float64
# numbers are 128 MiB.
MATERIALISE_LIMIT = 2**24


def explicit(equation: str, count: int) -> tuple[list[str], str]:
    """The operands' subscripts and the output's, the implicit output written out (numpy's rule:
    the ellipsis, then the letters met once, in alphabetical order)."""
    equation = equation.replace(" ", "")
    left, arrow, right = equation.partition("->")
    terms = left.split(",")
    if len(terms) != count:
        raise ValueError(f"einsum equation {equation!r} names {len(terms)} operands, the node has {count}")
    if not arrow:
        letters = [c for term in terms for c in term.replace("...", "")]
        right = ("..." if "..." in left else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, right


@register
class Einsum(Op):
    family = FAMILY
    resizes = True
    data_inputs = None
    summary = "one variable operand: ‖the linear map‖₂ at the node's shapes; two: unbounded"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        variable = [i for i, name in enumerate(node.inputs) if not ctx.graph.is_const(name)]
        if len(variable) > 1:
            if ctx.on_domain:
                return Factor.unknown("Einsum of two variable operands has no rule on a domain")
            return Factor.unbounded(
                f"Einsum of two variable operands is a product, not globally Lipschitz; {DOMAIN_HINT}"
            )
        if not variable:
            return Factor.constant(0.0, "closed-form")
        position = variable[0]
        shape = ctx.input_shape(node, position)
        n_in, n_out = math.prod(shape), math.prod(ctx.output_shape(node))
        if n_in * n_out > MATERIALISE_LIMIT:
            return Factor.unknown(f"Einsum's linear map has {n_in}×{n_out} entries, too many to materialise")
        operands: list[Tensor | None] = [
            None if i == position else torch.from_numpy(np.array(ctx.graph.const(name), dtype=np.float64))
            for i, name in enumerate(node.inputs)
        ]
        basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)
        columns = batched(node.attr_str("equation"), operands, position, basis)
        return Factor.from_norm(dense_norm(columns.reshape(n_in, n_out).T.contiguous(), ctx.method, device=ctx.device))

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        """x·W over x's last axis ("…ij,jk->…ik", W constant, either order of the two terms, W
        possibly written "kj"): a dense layer, which the recursion composes like MatMul's."""
        if len(node.inputs) != 2:
            return Barrier("an Einsum of more than two operands")
        terms, out = explicit(node.attr_str("equation"), 2)
        for position in (0, 1):
            weight = ctx.graph.const(node.inputs[1 - position])
            term, other = terms[position], terms[1 - position]
            if weight is None or weight.ndim != 2 or ctx.graph.is_const(node.inputs[position]) or "..." in other:
                continue
            body = term.replace("...", "")
            if not body or len(set(body + other)) != len(body) + 1:
                continue  # a letter repeated, or W shares more than the contracted one
            j = body[-1]
            if not term.endswith(j):
                continue
            if other == j + other[1:] and out == term[:-1] + other[1]:
                return Dense.of(weight)
            if other == other[0] + j and out == term[:-1] + other[0]:
                return Dense.of(weight.T)
        return Barrier("an Einsum that is not x·W over x's last axis with a constant W")

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        """Two operands: bilinear, midpoint-radius arithmetic as for MatMul."""
        return [bilinear_interval(self, node, ctx, 0, 1) if len(node.inputs) == 2 else None]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.einsum(node.attr_str("equation"), *(a.to(env.dtype) for a in args))


def batched(equation: str, operands: list[Tensor | None], position: int, batch: Tensor) -> Tensor:
    """einsum with ``batch`` (B, *shape) at ``position``: one more index on it and on the output."""
    terms, right = explicit(equation, len(operands))
    index = next(c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba" if c not in equation)
    terms[position] = index + terms[position]
    filled = [batch if t is None else t for t in operands]
    return torch.einsum(f"{','.join(terms)}->{index}{right}", *filled)
