"""The softmax family: Softmax, LogSoftmax, and their step-function relatives Hardmax, ArgMax, ArgMin.

Before opset 13 Softmax, LogSoftmax and Hardmax coerce the input to 2-D at ``axis`` (everything
after it is one group); from opset 13 they work on one axis.

On a domain each p_i has a range (every other score at its worst), and the Jacobian
diag(p) − ppᵀ ⪯ diag(p) has norm ≤ max_i p_i, and by Gershgorin ≤ max_i 2p_i(1 − p_i): a softmax
that stays spread out is much flatter than 1/2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval
from ..intervals.jacobian import Jac, JacobianContext
from ..intervals.jacobian import log_softmax as log_softmax_jacobian
from ..intervals.jacobian import softmax as softmax_jacobian
from ..intervals.jacobian_rules import grouped_jac
from ..intervals.normalize import grouped, ungrouped
from ..intervals.softmax import log_softmax_range, softmax_range
from ..ir import Node
from .activation_steep import Jumps
from .context import RuleContext, tighter_on_domain
from .factor import Factor
from .registry import Op, register
from .runtime import Env, positive_axis

FAMILY = "softmax"


def _normalised_group(node: Node, shape: tuple[int, ...], coerced: bool) -> int:
    axis = positive_axis(node.attr_int("axis"), len(shape))
    return int(np.prod(shape[axis:])) if coerced else shape[axis]


def _group_axes(node: Node, shape: tuple[int, ...], coerced: bool) -> tuple[int, ...]:
    axis = positive_axis(node.attr_int("axis"), len(shape))
    return tuple(range(axis, len(shape))) if coerced else (axis,)


def _rows(
    node: Node, ctx: RuleContext, coerced: bool
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray, np.ndarray]:
    """The input's range as (groups, n) rows normalised together, with the shape and the axes."""
    shape = ctx.input_shape(node)
    axes = _group_axes(node, shape, coerced)
    lo, hi = grouped(ctx.range_of(node.inputs[0]), shape, axes)
    return shape, axes, lo, hi


def _grouped(node: Node, x: Tensor, coerced: bool) -> tuple[Tensor, int]:
    axis = positive_axis(node.attr_int("axis"), x.dim())
    if not coerced:
        return x, axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1), 1


@register
class Softmax(Op):
    family = FAMILY
    summary = "1/2 (Jacobian diag(p) − ppᵀ, Gershgorin)"
    coerced = True

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        factor = Factor.constant(0.5, "closed-form")
        if not ctx.on_domain:
            return factor
        _, _, lo, hi = _rows(node, ctx, self.coerced)
        p_lo, p_hi = softmax_range(lo, hi)
        nearest_half = np.clip(0.5, p_lo, p_hi)
        value = min(float(np.max(p_hi, initial=0.0)), float(np.max(2 * nearest_half * (1 - nearest_half), initial=0.0)))
        return tighter_on_domain(
            factor, value * (1 + 1e-9), "‖diag(p) − ppᵀ‖ ≤ min(max p_i, max 2p_i(1 − p_i)) over the ranges of p"
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        shape, axes, lo, hi = _rows(node, ctx, self.coerced)
        p_lo, p_hi = softmax_range(lo, hi)
        return [Interval(ungrouped(p_lo, shape, axes), ungrouped(p_hi, shape, axes))]

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂p = p ⊙ (∂z − ⟨p, ∂z⟩) per group, p in its range on the box."""
        return _per_group(node, jctx, self.coerced, softmax_jacobian)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, axis = _grouped(node, args[0], self.coerced)
        return torch.softmax(x, dim=axis).reshape(args[0].shape)


def _per_group(
    node: Node, jctx: JacobianContext, coerced: bool, rule: Callable[[Jac, Interval, int], Jac]
) -> list[Jac | None] | None:
    """``rule`` on each group normalised together, with p's range on the box."""
    z = jctx.jac(node.inputs[0])
    if z is None:
        return None
    shape, axes, lo, hi = _rows(node, jctx.rules, coerced)
    rows, back = grouped_jac(z, shape, axes)
    p_lo, p_hi = softmax_range(lo, hi)
    return [back(rule(rows, Interval(p_lo, p_hi), 1))]


@register
class Softmax_13(Softmax):
    coerced = False


@register
class LogSoftmax(Op):
    family = FAMILY
    summary = "√n over the n entries normalised together"
    coerced = True

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        # J = I − 1pᵀ is idempotent (pᵀ1 = 1), and a projection P ∉ {0, I} has ‖P‖ = ‖I − P‖
        # (Szyld 2006), so ‖J‖ = ‖1pᵀ‖ = √n·‖p‖ ≤ √n.
        n = _normalised_group(node, ctx.input_shape(node), self.coerced)
        factor = Factor.constant(float(np.sqrt(n)) * (1 + 1e-12), "closed-form", note=f"normalised over {n} entries")
        if not ctx.on_domain:
            return factor
        _, _, lo, hi = _rows(node, ctx, self.coerced)
        _, p_hi = softmax_range(lo, hi)
        # ‖1pᵀ‖ = √n·‖p‖₂, with ‖p‖₂ ≤ min(1, ‖p_hi‖₂) per group.
        largest = float(np.max(np.minimum(1.0, np.sqrt((p_hi**2).sum(axis=1))), initial=0.0))
        return tighter_on_domain(
            factor, float(np.sqrt(n)) * largest * (1 + 1e-9), "‖I − 1pᵀ‖ = √n·‖p‖₂ with ‖p‖₂ from the ranges of p"
        )

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        shape, axes, lo, hi = _rows(node, ctx, self.coerced)
        low, high = log_softmax_range(lo, hi)
        return [Interval(ungrouped(low, shape, axes), ungrouped(high, shape, axes))]

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂ log p = ∂z − ⟨p, ∂z⟩ per group, p in its range on the box."""
        return _per_group(node, jctx, self.coerced, log_softmax_jacobian)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, axis = _grouped(node, args[0], self.coerced)
        return torch.log_softmax(x, dim=axis).reshape(args[0].shape)


@register
class LogSoftmax_13(LogSoftmax):
    coerced = False


@register
class Hardmax(Jumps):
    family = FAMILY
    coerced = True

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return [Interval.full().intersect(0.0, 1.0)]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, axis = _grouped(node, args[0], self.coerced)
        index = torch.argmax(x, dim=axis, keepdim=True)
        return torch.zeros_like(x).scatter(axis, index, 1.0).reshape(args[0].shape)


@register
class Hardmax_13(Hardmax):
    coerced = False


class ArgExtreme(Jumps):
    family = FAMILY
    pick: Callable[..., Tensor]

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        shape = ctx.input_shape(node)
        return [Interval.full().intersect(0.0, float(shape[positive_axis(node.attr_int("axis"), len(shape))] - 1))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = positive_axis(node.attr_int("axis"), x.dim())
        keep = bool(node.attr_int("keepdims"))
        pick = type(self).pick
        if node.attr_int("select_last_index", 0):
            return x.shape[axis] - 1 - pick(torch.flip(x, dims=(axis,)), dim=axis, keepdim=keep)
        return pick(x, dim=axis, keepdim=keep)


@register
class ArgMax(ArgExtreme):
    pick = staticmethod(torch.argmax)


@register
class ArgMin(ArgExtreme):
    pick = staticmethod(torch.argmin)
