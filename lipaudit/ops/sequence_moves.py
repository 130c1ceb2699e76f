"""Ops that move entries to positions their constant inputs fix: ReverseSequence reverses each batch
entry's first ``sequence_lens[b]`` steps (a permutation). It describes itself by where its run
sends each entry (lipaudit.ops.linear_part.entry_map), so the recursion sees the same map; lengths
computed from the network input make the node unbounded through ``data_inputs``. (Trilu with a
constant offset is its 0/1 mask: lipaudit.passes.trilu_mask.)"""

from __future__ import annotations

from typing import Any

from ..ir import Node
from .registry import register
from .runtime import Env, positive_axis
from .structural import Permutation


@register
class ReverseSequence(Permutation):
    summary = "1 at constant sequence_lens (reverses each batch entry's first steps)"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, lengths = args[0], args[1]
        batch_axis = positive_axis(node.attr_int("batch_axis"), x.dim())
        time_axis = positive_axis(node.attr_int("time_axis"), x.dim())
        inner_time = time_axis if time_axis < batch_axis else time_axis - 1  # after selecting a batch entry
        out = x.clone()
        for entry, length in enumerate(lengths.reshape(-1).tolist()):
            steps = out.select(batch_axis, entry).narrow(inner_time, 0, int(length))
            steps.copy_(x.select(batch_axis, entry).narrow(inner_time, 0, int(length)).flip(inner_time))
        return out
