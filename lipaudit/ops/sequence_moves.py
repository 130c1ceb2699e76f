"""Ops that move entries to positions their constant inputs fix: ReverseSequence reverses each batch
entry's first ``sequence_lens[b]`` steps (a permutation). It describes itself by where its run
sends each entry (lipaudit.ops.linear_part.entry_map), so the recursion sees the same map; lengths
computed from the network input make the node unbounded through ``data_inputs``. (Trilu with a
constant offset is its 0/1 mask: lipaudit.passes.trilu_mask.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import register
from .runtime import Env, positive_axis
from .structural import Permutation


@register
class ReverseSequence(Permutation):
    summary = "1 at constant sequence_lens (reverses each batch entry's first steps)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        lengths = ctx.graph.const(node.inputs[1])
        if lengths is not None:
            shape = ctx.input_shape(node)
            _check_lengths(np.asarray(lengths), shape[positive_axis(node.attr_int("time_axis"), len(shape))])
        return super().bound(node, ctx)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, lengths = args[0], args[1]
        batch_axis = positive_axis(node.attr_int("batch_axis"), x.dim())
        time_axis = positive_axis(node.attr_int("time_axis"), x.dim())
        _check_lengths(lengths.cpu().numpy(), x.shape[time_axis])
        inner_time = time_axis if time_axis < batch_axis else time_axis - 1  # after selecting a batch entry
        out = x.clone()
        for entry, length in enumerate(lengths.reshape(-1).tolist()):
            steps = out.select(batch_axis, entry).narrow(inner_time, 0, int(length))
            steps.copy_(x.select(batch_axis, entry).narrow(inner_time, 0, int(length)).flip(inner_time))
        return out


def _check_lengths(lengths: np.ndarray, steps: int) -> None:
    """onnxruntime refuses a sequence length outside [0, steps]: the model does not run."""
    if lengths.size and (lengths.min() < 0 or lengths.max() > steps):
        raise ValueError(f"ReverseSequence has a sequence length outside [0, {steps}], which onnxruntime refuses")
