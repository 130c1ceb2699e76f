"""Local response normalisation (LRN, AlexNet's and GoogLeNet's): each entry divided by a power of
the squares summed over its neighbouring channels.

y_i = x_i·s_i^(−β), s_i = k + (α/n)·Σ_{j ∈ w(i)} x_j², with w(i) the n channels around i (ONNX:
from i − ⌊(n−1)/2⌋ to i + ⌈(n−1)/2⌉). Its Jacobian is J = D − A with D = diag(s_i^(−β)) and
A_ij = 2β(α/n)·x_i·x_j·s_i^(−β−1) for j ∈ w(i). With α, β ≥ 0 and k > 0: s_i ≥ k, and
(α/n)·|x_i||x_j| ≤ (α/n)·‖x_w(i)‖² = s_i − k, so each entry of A is at most 2β·g(s_i) with
g(s) = (s − k)·s^(−β−1) ≤ h·k^(−β), h = β^β/(β+1)^(β+1) (its maximum, at s = (β+1)k/β). A row of
|J| then sums to at most k^(−β)·(1 + 2β√n·h) (‖x_w‖₁ ≤ √n‖x_w‖₂) and a column, whose entry lies
in at most n windows, to k^(−β)·(1 + 2βn·h); by the Schur test ‖J‖₂ ≤ the geometric mean of the
two, and on a convex set the Lipschitz constant is the sup of ‖J‖₂.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env

FAMILY = "normalization"


@register
class LRN(Op):
    family = FAMILY
    summary = "bias^(−β)·√((1 + 2β√n·h)(1 + 2βn·h)), h = β^β/(β+1)^(β+1), for α, β ≥ 0 and bias > 0"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        alpha, beta, bias = node.attr_float("alpha"), node.attr_float("beta"), node.attr_float("bias")
        size = node.attr_int("size")
        if alpha < 0 or beta < 0 or bias <= 0 or size < 1:
            return Factor.unknown(f"LRN with alpha={alpha:g}, beta={beta:g}, bias={bias:g} has no rule")
        peak = beta**beta / (beta + 1) ** (beta + 1)  # max of (s − k)·s^(−β−1), times k^β
        rows, columns = 1 + 2 * beta * math.sqrt(size) * peak, 1 + 2 * beta * size * peak
        value = bias ** (-beta) * math.sqrt(rows * columns)
        return Factor.constant(value * (1 + 1e-9), "closed-form", note="sup of ‖J‖₂ by the Schur test")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        size = node.attr_int("size")
        below, above = (size - 1) // 2, size // 2  # ⌊(n−1)/2⌋ channels before, ⌈(n−1)/2⌉ after
        squares = F.pad((x * x).movedim(1, -1), (below, above)).movedim(-1, 1)
        sums = squares.unfold(1, size, 1).sum(dim=-1)
        scale = node.attr_float("bias") + node.attr_float("alpha") / size * sums
        return x * torch.pow(scale, -node.attr_float("beta"))
