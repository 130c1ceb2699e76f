"""Ops that keep or reverse entries at positions their constant inputs fix: Trilu keeps a triangle
(a selection, norm 1 unless it keeps nothing), ReverseSequence reverses each batch entry's first
``sequence_lens[b]`` steps (a permutation). Both describe themselves by where their run sends each
entry (lipaudit.ops.linear_part.entry_map), so the recursion sees the same map; a position input
computed from the network input makes the node unbounded through ``data_inputs``."""

from __future__ import annotations

from typing import Any

import torch

from ..ir import Node
from .registry import register
from .runtime import Env, positive_axis
from .structural import Permutation, Selection


@register
class Trilu(Selection):
    summary = "≤ 1 (keeps the upper or lower triangle of the last two axes, from diagonal k)"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        k = int(args[1].reshape(-1)[0]) if len(args) > 1 and args[1] is not None else 0
        return torch.triu(x, k) if node.attr_int("upper") else torch.tril(x, k)


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
