"""The softmax family: Softmax, LogSoftmax, and their step-function relatives Hardmax, ArgMax, ArgMin.

Before opset 13 Softmax, LogSoftmax and Hardmax coerce the input to 2-D at ``axis`` (everything
after it is one group); from opset 13 they work on one axis.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..ir import Node
from .activation import Jumps
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, positive_axis

FAMILY = "softmax"


def _normalised_group(node: Node, shape: tuple[int, ...], coerced: bool) -> int:
    axis = positive_axis(node.attr_int("axis"), len(shape))
    return int(np.prod(shape[axis:])) if coerced else shape[axis]


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
        return Factor.constant(0.5, "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, axis = _grouped(node, args[0], self.coerced)
        return torch.softmax(x, dim=axis).reshape(args[0].shape)


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
        return Factor.constant(float(np.sqrt(n)) * (1 + 1e-12), "closed-form", note=f"normalised over {n} entries")

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
