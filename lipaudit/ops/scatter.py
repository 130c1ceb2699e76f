"""Ops that write entries of one value into another at constant indices (ScatterElements, ScatterND).

With constant indices each output entry is its data entry, or its data entry combined with the
updates aimed at it. Every input entry reaches at most one output entry, so with ``reduction``
none, max or min the map of (data, updates) together has norm ≤ 1 (a max of several entries moves
by at most the largest of their moves); with ``add`` an output takes its data entry plus up to c
updates, so the updates weigh √c. ``mul`` multiplies entries computed from the input unless the
updates are constants, and then scales each data entry by the product aimed at it. Indices
computed from the input choose which entry goes where: a jump, not a Lipschitz map.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..intervals.interval import Interval
from ..ir import Node
from ..linear_maps import Barrier, Linear
from ..spectral.scaling import sqrt_up
from .context import RuleContext
from .factor import Factor
from .linear_part import entry_map, run_node
from .registry import Op, register
from .runtime import Env, cannot_run, positive_axis

FAMILY = "structural"

_TORCH_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


class Scattering(Op):
    family = FAMILY
    summary = (
        "constant indices: 1 (√(most updates into one entry) for the updates with reduction=add); "
        "variable indices: unbounded"
    )
    data_inputs = (0, 2)
    resizes = True  # an update lands on one entry; the data keeps its own entries

    def write(self, data: Tensor, indices: Tensor, updates: Tensor, node: Node, reduction: str) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def reduction(node: Node) -> str:
        return node.attr_str("reduction", "none")  # no such attribute before opset 16: a plain write

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        data, indices, updates = args[:3]
        reduction = self.reduction(node)
        if reduction != "none" and reduction not in _TORCH_REDUCE:
            raise cannot_run(node, f"reduction '{reduction}' is not one ONNX defines")
        return self.write(data, indices.long(), updates.to(data.dtype), node, reduction)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        data, indices, updates = node.inputs[:3]
        if ctx.graph.const(indices) is None:
            return Factor.unbounded(f"{node.op_type} with variable indices moves entries by their values")
        reduction = self.reduction(node)
        data_varies, updates_vary = not ctx.graph.is_const(data), not ctx.graph.is_const(updates)
        if reduction in ("none", "max", "min"):
            note = "each input entry reaches at most one output entry"
            return Factor.constant(1.0, "closed-form", note=note, combine="rss", exact=True)
        if reduction == "add":
            most = self._most_updates_per_entry(node, ctx)
            weights = [1.0] * data_varies + [sqrt_up(most)] * updates_vary
            return Factor.constant(max(weights, default=1.0), "closed-form", input_weights=weights)
        if reduction == "mul":
            return self._product_factor(node, ctx, data_varies, updates_vary)
        return Factor.unknown(f"{node.op_type} with reduction '{reduction}' has no rule")

    def _product_factor(self, node: Node, ctx: RuleContext, data_varies: bool, updates_vary: bool) -> Factor:
        """Each output is its data entry times the updates aimed at it: linear in whichever side is
        computed from the input only while the other is constant and no entry takes two variable
        factors."""
        product = f"{node.op_type} with reduction=mul multiplies entries computed from the input"
        if data_varies and updates_vary:
            return Factor.unbounded(product)
        if data_varies:
            scales = run_node(ctx.graph, self, node, {node.inputs[0]: torch.ones(ctx.input_shape(node))}, torch.float64)
            scale = float(scales[0].abs().max()) if scales[0].numel() else 0.0
            return Factor.constant(scale, "closed-form", note="each data entry times the constants aimed at it")
        counts = self._evaluate(node, ctx, data=0.0, updates=1.0, reduction="add")
        if counts.numel() and float(counts.max()) > 1:
            return Factor.unbounded(product)
        data = torch.as_tensor(np.array(ctx.graph.const(node.inputs[0]), dtype=np.float64))
        scale = float(data.abs()[counts > 0].max()) if bool((counts > 0).any()) else 0.0
        return Factor.constant(scale, "closed-form", note="each update times the constant entry it lands on")

    def _most_updates_per_entry(self, node: Node, ctx: RuleContext) -> int:
        counts = self._evaluate(node, ctx, data=0.0, updates=1.0, reduction="add")
        return int(torch.round(counts.max()).item()) if counts.numel() else 0

    def _evaluate(self, node: Node, ctx: RuleContext, *, data: float, updates: float, reduction: str) -> Tensor:
        index_values = torch.from_numpy(np.array(ctx.graph.const(node.inputs[1]))).long()
        filled_data = torch.full(ctx.input_shape(node), data, dtype=torch.float64)
        filled_updates = torch.full(ctx.input_shape(node, 2), updates, dtype=torch.float64)
        return self.write(filled_data, index_values, filled_updates, node, reduction)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        """Monotone in data and updates, entry by entry, except a product (signs flip it)."""
        if self.reduction(node) == "mul":
            return [None]
        from .interval_rules import monotone_interval

        return monotone_interval(self, node, ctx, sums=self.reduction(node) == "add", positions=self.data_inputs)

    def linear_part(self, node: Node, ctx: RuleContext) -> tuple[Linear | None, ...] | Barrier:
        """With one of data and updates computed from the input and a plain write: where its run
        sends each entry (the constant side is an offset)."""
        if self.reduction(node) != "none":
            return Barrier(f"{node.op_type} with reduction={self.reduction(node)} combines entries")
        for position in (0, 2):
            if ctx.graph.variable_inputs(node) == [node.inputs[position]]:
                return entry_map(self, node, ctx, position)
        return Barrier(f"{node.op_type} joins two values computed from the input")


@register
class ScatterElements(Scattering):
    """out[…, idx[…, i, …], …] ⟵ updates[…, i, …] along ``axis``."""

    since = 11

    def write(self, data: Tensor, indices: Tensor, updates: Tensor, node: Node, reduction: str) -> Tensor:
        axis = positive_axis(node.attr_int("axis", 0), data.dim())
        indices = torch.where(indices < 0, indices + data.shape[axis], indices)
        if reduction == "none":
            return data.scatter(axis, indices, updates)
        return data.scatter_reduce(axis, indices, updates, _TORCH_REDUCE[reduction], include_self=True)


@register
class Scatter(ScatterElements):
    """Scatter-9/10, the earlier name of ScatterElements (no reduction)."""

    since = 9


@register
class ScatterND(Scattering):
    """out[idx[i…, 0], …, idx[i…, k−1], …] ⟵ updates[i…, …]: each index row names an entry or a
    slice of the data's first k axes."""

    since = 11

    def write(self, data: Tensor, indices: Tensor, updates: Tensor, node: Node, reduction: str) -> Tensor:
        k = indices.shape[-1]
        leading = tuple(data.shape[:k])
        rows = indices.reshape(-1, k)
        rows = torch.where(rows < 0, rows + torch.tensor(leading, dtype=torch.int64), rows)
        strides = torch.tensor([math.prod(leading[j + 1 :]) for j in range(k)], dtype=torch.int64)
        flat_index = (rows * strides).sum(dim=1)
        flat_data = data.reshape(math.prod(leading), -1)
        flat_updates = updates.reshape(rows.shape[0], -1)
        spread = flat_index.unsqueeze(1).expand_as(flat_updates)
        if reduction == "none":
            written = flat_data.scatter(0, spread, flat_updates)
        else:
            written = flat_data.scatter_reduce(0, spread, flat_updates, _TORCH_REDUCE[reduction], include_self=True)
        return written.reshape(data.shape)
