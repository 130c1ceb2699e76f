"""Ops whose output shape depends on the values of their input, and the ops that read a shape.

A value whose shape is a count of data (the entries NonZero finds, the ones Compress keeps, the
length of a Range up to a computed limit) changes size, not just value, as the input moves: a step
function. Reading that shape (Shape, Size) gives a count, an integer that jumps. None of these is
Lipschitz in the network input, and the rules say so with the reason. Shape and Size of a value
whose shape is fixed by the input shapes and constants were folded away at load; what is left
reads a shape that depends on the data (or one nobody could tell).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, cannot_run, ints, positive_axis

FAMILY = "data-dependent shape"


def _why_data_shaped(node: Node, ctx: RuleContext) -> str:
    from ..ir.data_shapes import data_shaped_values

    reason = data_shaped_values(ctx.graph).get(node.inputs[0]) if node.inputs else None
    return reason or f"the shape of '{node.inputs[0]}' is not fixed by the input shapes and constants"


class DataShaped(Op):
    family = FAMILY
    certified = False
    data_inputs = None
    why = ""

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(self.why)


@register
class NonZero(DataShaped):
    why = "NonZero's output lists the entries that are not 0: its size and values jump as entries cross 0"
    summary = f"unbounded: {why}"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.stack(torch.nonzero(args[0], as_tuple=True)).to(torch.int64)


@register
class Unique(DataShaped):
    why = "Unique's output size is the number of distinct entries, a count of the data"
    summary = f"unbounded: {why}"

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        return [Factor.unbounded(self.why)] * max(1, len(node.outputs))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0].detach().cpu().numpy()
        axis = node.attr("axis", None)
        if axis is None:
            x = x.reshape(-1)
        found = np.unique(x, return_index=True, return_inverse=True, return_counts=True, axis=axis)
        values, first, inverse, counts = found
        if not node.attr_int("sorted", 1):  # in order of first occurrence
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            values = np.take(values, order, axis=0 if axis is None else axis)
            first, counts, inverse = first[order], counts[order], rank[inverse.reshape(-1)]
        device = args[0].device
        return [
            torch.from_numpy(np.ascontiguousarray(values)).to(device),
            *(torch.from_numpy(np.asarray(a, np.int64).reshape(-1)).to(device) for a in (first, inverse, counts)),
        ]


class ShapeReader(DataShaped):
    summary = "unbounded: reads a shape that depends on the data (a count); static shapes are folded at load"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(
            f"{node.op_type} reads a shape that depends on the values of the network input "
            f"({_why_data_shaped(node, ctx)}): a count of data is a step function"
        )


@register
class Shape(ShapeReader):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        dims = list(args[0].shape)
        start, end = node.attr_int("start", 0), node.attr("end", None)
        return torch.tensor(dims[start:end], dtype=torch.int64, device=env.device)


@register
class Size(ShapeReader):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return torch.tensor(args[0].numel(), dtype=torch.int64, device=env.device)


@register
class Compress(Op):
    family = FAMILY
    summary = "constant condition: ≤ 1 (keeps a subset of entries); variable condition: unbounded"
    exact_in_float = True
    monotone = True  # in the data, with a constant condition

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        if ctx.is_variable(node, 1):
            return Factor.unbounded(
                "Compress keeps the entries a condition computed from the network input selects: its output size jumps"
            )
        return Factor.constant(1.0, "closed-form", note="keeps a subset of entries")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, condition = args[0], args[1].bool().reshape(-1)
        if not node.has_attr("axis"):
            x, axis = x.reshape(-1), 0
        else:
            axis = positive_axis(node.attr_int("axis"), x.dim())
        if condition.numel() > x.shape[axis]:
            raise cannot_run(node, "with a condition longer than the axis")
        kept = torch.nonzero(condition, as_tuple=True)[0]
        return x.index_select(axis, kept)


@register
class Range(DataShaped):
    summary = "unbounded when a bound is computed from the network input (its length is a count)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(
            "Range with a start, limit or step computed from the network input has a length that jumps"
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        start, limit, delta = (a.reshape(()) for a in args[:3])
        dtype = start.dtype
        return torch.arange(start.item(), limit.item(), delta.item(), dtype=dtype, device=env.device)


@register
class ConstantOfShape(DataShaped):
    summary = "unbounded when its shape is computed from the network input"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(
            f"ConstantOfShape's output shape '{node.inputs[0]}' is computed from the network input: its size jumps"
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        fill = node.attr("value", None)
        fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill)
        value = torch.from_numpy(fill.reshape(-1)[:1].copy()).to(env.device)
        if value.is_floating_point():
            value = value.to(env.dtype)
        return value.reshape(()).expand(ints(args[0])).clone()
