"""Attention: dot-product self-attention is not globally Lipschitz (Kim et al., 2021).

Runs: ONNX Attention (opset 23) and the com.microsoft Attention / MultiHeadAttention, no KV cache.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..ir import Node
from .context import RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, cannot_run

FAMILY = "attention"
REASON = "dot-product attention is not globally Lipschitz (Kim et al. 2021): its scores multiply two variable values"


def _attention_core(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, mask: Tensor | None = None,
                    softcap: float = 0.0) -> Tensor:
    """q (B, H, S, D), k (B, H, L, D), v (B, H, L, Dv) → (B, H, S, Dv)."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    if causal:
        s, length = scores.shape[-2:]
        allowed = torch.ones(s, length, dtype=torch.bool, device=q.device).tril(diagonal=length - s)
        scores = scores.masked_fill(~allowed, -math.inf)
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    return torch.softmax(scores, dim=-1) @ v


def _no_extra(node: Node, first_optional_output: int, inputs: dict[int, str], args: list[Any]) -> None:
    for index, what in inputs.items():
        if index < len(args) and args[index] is not None:
            raise cannot_run(node, f"with {what}")
    if any(node.outputs[first_optional_output:]):
        raise cannot_run(node, ": only its first output is supported")


def _scale(node: Node, head_dim: int) -> float:
    return node.attr_float("scale", 0.0) or 1.0 / math.sqrt(head_dim)


def _split_heads(t: Tensor, heads: int) -> Tensor:
    b, s, hidden = t.shape
    return t.reshape(b, s, heads, hidden // heads).transpose(1, 2)


def _merge_heads(t: Tensor) -> Tensor:
    b, h, s, d = t.shape
    return t.transpose(1, 2).reshape(b, s, h * d)


class DotProductAttention(Op):
    family = FAMILY
    certified = False
    summary = "unbounded (Kim et al. 2021)"
    data_inputs = None

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.unbounded(REASON)


@register
class Attention(DotProductAttention):
    """ONNX Attention (opset 23): 4-D (B, H, S, D) or 3-D (B, S, H·D) inputs, no KV cache."""

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        _no_extra(node, 1, {4: "a past key", 5: "a past value", 6: "nonpad_kv_seqlen"}, args)
        q, k, v = args[:3]
        mask = args[3] if len(args) > 3 else None
        three_d = q.dim() == 3
        if three_d:
            q_heads, kv_heads = node.attr_int("q_num_heads"), node.attr_int("kv_num_heads")
            b, s, _ = q.shape
            q = q.reshape(b, s, q_heads, -1).transpose(1, 2)
            k = k.reshape(b, k.shape[1], kv_heads, -1).transpose(1, 2)
            v = v.reshape(b, v.shape[1], kv_heads, -1).transpose(1, 2)
        if k.shape[1] != q.shape[1]:  # grouped-query attention
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        if mask is not None and mask.is_floating_point():
            mask = mask.to(q.dtype)
        out = _attention_core(q, k, v, _scale(node, q.shape[-1]), bool(node.attr_int("is_causal", 0)), mask,
                              node.attr_float("softcap", 0.0))
        if three_d:
            out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        return out


@register
class MsAttention(DotProductAttention):
    """com.microsoft Attention: packed QKV projection of one (B, S, hidden) input, no mask or cache."""

    op_type = "Attention"
    domain = "com.microsoft"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        _no_extra(node, 1, {3: "a mask", 4: "a past state", 5: "an attention bias", 6: "past_sequence_length"},
                  args)
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        heads = node.attr_int("num_heads")
        projected = x @ weight + (bias if bias is not None else 0)
        sizes = list(node.attr_ints("qkv_hidden_sizes", ()) or [weight.shape[1] // 3] * 3)
        q, k, v = torch.split(projected, sizes, dim=-1)
        q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
        return _merge_heads(_attention_core(q, k, v, _scale(node, q.shape[-1]),
                                            bool(node.attr_int("unidirectional", 0))))


@register
class MsMultiHeadAttention(DotProductAttention):
    """com.microsoft MultiHeadAttention with separate 3-D query, key and value, no mask or cache."""

    op_type = "MultiHeadAttention"
    domain = "com.microsoft"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        _no_extra(node, 1, {4: "a key padding mask", 5: "an attention bias", 6: "a past key", 7: "a past value"},
                  args)
        q, k, v = args[:3]
        if k is None or v is None or k.dim() != 3 or v.dim() != 3:
            raise cannot_run(node, "with packed or 4-D key/value")
        bias = args[3] if len(args) > 3 else None
        if bias is not None:
            bq, bk, bv = torch.split(bias, [q.shape[-1], k.shape[-1], v.shape[-1]])
            q, k, v = q + bq, k + bk, v + bv
        heads = node.attr_int("num_heads")
        q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
        return _merge_heads(_attention_core(q, k, v, _scale(node, q.shape[-1]),
                                            bool(node.attr_int("unidirectional", 0))))
