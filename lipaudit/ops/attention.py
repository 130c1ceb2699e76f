"""Attention: dot-product self-attention is not globally Lipschitz (Kim et al., 2021).

Runs: ONNX Attention (opset 23) and the com.microsoft Attention / MultiHeadAttention, no KV cache.
On a domain, the product rule on the ranges of the queries, keys and values bounds it
(lipaudit.intervals.attention), with its assumptions in the factor's notes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..intervals.attention import NOTE, AttentionBound, attention_on_box, causal_allowed
from ..intervals.interval import Interval, from_center_radius
from ..intervals.jacobian import Jac, JacobianContext
from ..intervals.jacobian_rules import attention as attention_jacobian
from ..ir import Node
from ..spectral.dense import dense_norm
from .context import DOMAIN_HINT, DOMAIN_METHOD, RuleContext
from .factor import Factor
from .registry import Op, register
from .runtime import Env, cannot_run

FAMILY = "attention"
REASON = (
    "dot-product attention is not globally Lipschitz (Kim et al. 2021): its scores multiply two variable values; "
    + DOMAIN_HINT
)


def _heads(interval: Interval, heads: int) -> Interval:
    """(B, S, H·D) → (B, H, S, D)."""
    b, s, hidden = interval.shape

    def split(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, (b, s, hidden)).reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)

    return Interval(split(interval.lo), split(interval.hi))


def _repeat_heads(interval: Interval, repeats: int) -> Interval:
    return Interval(np.repeat(interval.lo, repeats, axis=1), np.repeat(interval.hi, repeats, axis=1))


def _merged(interval: Interval) -> Interval:
    """(B, H, S, D) → (B, S, H·D)."""
    b, h, s, d = interval.shape

    def merge(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, (b, h, s, d)).transpose(0, 2, 1, 3).reshape(b, s, h * d)

    return Interval(merge(interval.lo), merge(interval.hi))


def _domain_factor(value: float, weights: list[float], note: str = NOTE) -> Factor:
    return Factor("bounded", value, DOMAIN_METHOD, True, notes=[note], input_weights=weights)


def _attention_core(
    q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, mask: Tensor | None = None, softcap: float = 0.0
) -> Tensor:
    """q (B, H, S, D), k (B, H, L, D), v (B, H, L, Dv) → (B, H, S, Dv)."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    if causal:
        allowed = torch.from_numpy(causal_allowed(*scores.shape[-2:])).to(q.device)
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


def attention_scale(node: Node, head_dim: int) -> float:
    """The scores' scale: the ``scale`` attribute, 1/√head_dim where it is absent or 0."""
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
    summary = "unbounded (Kim et al. 2021); on a domain: the product rule on the ranges of Q, K, V"
    data_inputs = None
    resizes = True  # the domain rule bounds ‖ΔO‖ directly, shared key/value heads included

    def on_box(self, node: Node, ctx: RuleContext) -> tuple[AttentionBound, list[float]] | None:
        """The bound on the box and each variable input's weight (None: this form has no domain rule)."""
        return None

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        if not ctx.on_domain:
            return Factor.unbounded(REASON)
        found = self.on_box(node, ctx)
        if found is None:
            return Factor.unbounded(REASON)
        _, weights = found
        if not all(np.isfinite(weights)):
            return Factor.unbounded(
                "attention on the input domain: the ranges of its queries, keys or values are "
                "unbounded, so the product rule gives no finite bound"
            )
        return _domain_factor(max(weights, default=0.0), weights)

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        found = self.on_box(node, ctx)
        if found is None:
            return [None] * len(node.outputs)
        return [self.output_layout(node, ctx, found[0].output)] + [None] * (len(node.outputs) - 1)

    def output_layout(self, node: Node, ctx: RuleContext, output: Interval) -> Interval:
        return _merged(output)


@register
class Attention(DotProductAttention):
    """ONNX Attention (opset 23): 4-D (B, H, S, D) or 3-D (B, S, H·D) inputs, no KV cache."""

    def on_box(self, node: Node, ctx: RuleContext) -> tuple[AttentionBound, list[float]] | None:
        if any(len(node.inputs) > i and node.inputs[i] for i in (4, 5, 6)) or any(node.outputs[1:]):
            return None
        mask = None
        if len(node.inputs) > 3 and node.inputs[3]:
            mask = ctx.const_input(node, 3)
            if mask is None:
                return None  # a mask computed from the input
        q, k, v = (ctx.range_of(name).broadcast_to(ctx.input_shape(node, i)) for i, name in enumerate(node.inputs[:3]))
        if len(q.shape) == 3:
            q = _heads(q, node.attr_int("q_num_heads"))
            k, v = _heads(k, node.attr_int("kv_num_heads")), _heads(v, node.attr_int("kv_num_heads"))
        result = attention_on_box(
            q,
            k,
            v,
            attention_scale(node, q.shape[-1]),
            mask=mask,
            causal=bool(node.attr_int("is_causal", 0)),
            softcap=node.attr_float("softcap", 0.0),
        )
        per_input = [result.query_weight, result.key_weight, result.value_weight]
        weights = [
            per_input[i] if i < 3 else 0.0
            for i, name in enumerate(node.inputs)
            if name and not ctx.graph.is_const(name)
        ]
        return result, weights

    def output_layout(self, node: Node, ctx: RuleContext, output: Interval) -> Interval:
        return _merged(output) if len(ctx.input_shape(node, 0)) == 3 else output

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """∂ of softmax(scale·QKᵀ)V from the primitives (lipaudit.intervals.jacobian_rules.attention);
        no rule with a mask, a cache, causal attention or a softcap."""
        if any(len(node.inputs) > i and node.inputs[i] for i in (3, 4, 5, 6)) or any(node.outputs[1:]):
            return None
        if node.attr_int("is_causal", 0) or node.attr_float("softcap", 0.0):
            return None
        ctx = jctx.rules
        three_d = len(ctx.input_shape(node, 0)) == 3
        jacs: list[Jac | None] = []
        boxes: list[Interval] = []
        points: list[Interval] = []
        for index, name in enumerate(node.inputs[:3]):
            shape = ctx.input_shape(node, index)
            jac = jctx.jac(name)
            box, point = jctx.box(name).broadcast_to(shape), jctx.point(name).broadcast_to(shape)
            if three_d:
                heads = node.attr_int("q_num_heads" if index == 0 else "kv_num_heads")
                box, point = _heads(box, heads), _heads(point, heads)
                if jac is not None:
                    jac = jac.map(lambda t, h=heads: t.reshape(t.shape[:3] + (h, -1)).transpose(2, 3))
            jacs.append(jac)
            boxes.append(box)
            points.append(point)
        for index in (1, 2):
            repeats = boxes[0].shape[1] // boxes[index].shape[1]
            if repeats == 1:
                continue
            # grouped-query attention: each key/value head serves several query heads
            boxes[index], points[index] = _repeat_heads(boxes[index], repeats), _repeat_heads(points[index], repeats)
            found = jacs[index]
            if found is not None:
                jacs[index] = found.map(lambda t, r=repeats: t.repeat_interleave(r, dim=2), math.sqrt(repeats))
        q, k, v = ((jacs[i], boxes[i], points[i]) for i in range(3))
        out = attention_jacobian(jctx, q, k, v, attention_scale(node, boxes[0].shape[-1]))
        if three_d:
            out = out.map(lambda t: t.transpose(2, 3).reshape(t.shape[0], t.shape[1], t.shape[3], -1))
        return [out]

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
        out = _attention_core(
            q,
            k,
            v,
            attention_scale(node, q.shape[-1]),
            bool(node.attr_int("is_causal", 0)),
            mask,
            node.attr_float("softcap", 0.0),
        )
        if three_d:
            out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        return out


@register
class MsAttention(DotProductAttention):
    """com.microsoft Attention: packed QKV projection of one (B, S, hidden) input, no mask or cache."""

    op_type = "Attention"
    domain = "com.microsoft"

    def on_box(self, node: Node, ctx: RuleContext) -> tuple[AttentionBound, list[float]] | None:
        if any(len(node.inputs) > i and node.inputs[i] for i in range(3, 7)) or any(node.outputs[1:]):
            return None
        weight = ctx.const_input(node, 1)
        if weight is None:
            return None
        bias = ctx.const_input(node, 2) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(weight.shape[1])
        if bias is None:
            return None
        weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
        x = ctx.range_of(node.inputs[0]).broadcast_to(ctx.input_shape(node))
        center = x.center @ weight + bias
        projected = from_center_radius(center, x.radius @ np.abs(weight), x.magnitude @ np.abs(weight) + np.abs(bias))
        sizes = list(node.attr_ints("qkv_hidden_sizes", ()) or [weight.shape[1] // 3] * 3)
        edges = np.cumsum([0] + sizes)
        heads = node.attr_int("num_heads")
        q, k, v = (
            _heads(Interval(projected.lo[..., a:b], projected.hi[..., a:b]), heads)
            for a, b in zip(edges[:-1], edges[1:])
        )
        result = attention_on_box(
            q, k, v, attention_scale(node, q.shape[-1]), causal=bool(node.attr_int("unidirectional", 0))
        )
        # ΔQ = ΔX·W_q (and so on), so x's weight sums each projection's norm times its weight.
        norms = [dense_norm(weight[:, a:b], "exact").value * (1 + 1e-9) for a, b in zip(edges[:-1], edges[1:])]
        total = result.query_weight * norms[0] + result.key_weight * norms[1] + result.value_weight * norms[2]
        return result, [total]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        _no_extra(node, 1, {3: "a mask", 4: "a past state", 5: "an attention bias", 6: "past_sequence_length"}, args)
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        heads = node.attr_int("num_heads")
        projected = x @ weight + (bias if bias is not None else 0)
        sizes = list(node.attr_ints("qkv_hidden_sizes", ()) or [weight.shape[1] // 3] * 3)
        q, k, v = torch.split(projected, sizes, dim=-1)
        q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
        return _merge_heads(
            _attention_core(q, k, v, attention_scale(node, q.shape[-1]), bool(node.attr_int("unidirectional", 0)))
        )


def _uneven_causal(node: Node, queries: int, keys: int) -> bool:
    """com.microsoft MultiHeadAttention, unidirectional, with unequal lengths: onnxruntime (1.32 CPU)
    aligns the mask top-left with more queries than keys but follows neither corner with fewer, so
    there is no one reading to check against."""
    return bool(node.attr_int("unidirectional", 0)) and queries != keys


@register
class MsMultiHeadAttention(DotProductAttention):
    """com.microsoft MultiHeadAttention with separate 3-D query, key and value, no mask or cache."""

    op_type = "MultiHeadAttention"
    domain = "com.microsoft"

    def on_box(self, node: Node, ctx: RuleContext) -> tuple[AttentionBound, list[float]] | None:
        if any(len(node.inputs) > i and node.inputs[i] for i in range(4, 8)) or any(node.outputs[1:]):
            return None
        if len(node.inputs) < 3 or not node.inputs[1] or not node.inputs[2] or len(ctx.input_shape(node, 1)) != 3:
            return None
        ranges = [ctx.range_of(name).broadcast_to(ctx.input_shape(node, i)) for i, name in enumerate(node.inputs[:3])]
        if len(node.inputs) > 3 and node.inputs[3]:
            bias = ctx.const_input(node, 3)
            if bias is None:
                return None
            edges = np.cumsum([0] + [r.shape[-1] for r in ranges])
            ranges = [
                Interval(r.lo + bias[a:b], r.hi + bias[a:b]).widened(np.abs(bias[a:b]))
                for r, a, b in zip(ranges, edges[:-1], edges[1:])
            ]
        if _uneven_causal(node, ranges[0].shape[-2], ranges[1].shape[-2]):
            return None
        heads = node.attr_int("num_heads")
        q, k, v = (_heads(r, heads) for r in ranges)
        result = attention_on_box(
            q, k, v, attention_scale(node, q.shape[-1]), causal=bool(node.attr_int("unidirectional", 0))
        )
        per_input = [result.query_weight, result.key_weight, result.value_weight]
        weights = [per_input[i] for i, name in enumerate(node.inputs[:3]) if name and not ctx.graph.is_const(name)]
        return result, weights

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        _no_extra(node, 1, {4: "a key padding mask", 5: "an attention bias", 6: "a past key", 7: "a past value"}, args)
        q, k, v = args[:3]
        if k is None or v is None or k.dim() != 3 or v.dim() != 3:
            raise cannot_run(node, "with packed or 4-D key/value")
        if _uneven_causal(node, q.shape[-2], k.shape[-2]):
            raise cannot_run(node, "unidirectional with unequal query and key lengths")
        bias = args[3] if len(args) > 3 else None
        if bias is not None:
            bq, bk, bv = torch.split(bias, [q.shape[-1], k.shape[-1], v.shape[-1]])
            q, k, v = q + bq, k + bk, v + bv
        heads = node.attr_int("num_heads")
        q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
        return _merge_heads(
            _attention_core(q, k, v, attention_scale(node, q.shape[-1]), bool(node.attr_int("unidirectional", 0)))
        )
