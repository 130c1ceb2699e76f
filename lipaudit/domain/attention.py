"""Dot-product attention on a box: ranges of its output and a Lipschitz bound from its inputs' ranges.

For one head, O = P·V with P = softmax(c·QKᵀ + M) (M a constant mask), so for two inputs
ΔO = ΔP·V + P'·ΔV and ΔS = c(ΔQ·Kᵀ + Q'·ΔKᵀ), whence

    ‖ΔO‖_F ≤ J·|c|·sup‖V‖₂·(sup‖K‖₂‖ΔQ‖_F + sup‖Q‖₂‖ΔK‖_F) + sup‖P‖₂‖ΔV‖_F

with J = sup over the score ranges of each row's softmax Jacobian norm (≤ min(1/2, max p_i,
max 2p_i(1 − p_i))), and the sups of the spectral norms bounded from the entries' ranges. This is
the product rule of Kim et al. (2021) made local, in the spirit of Castin et al. (2024): it holds
on the box only, and only because the ranges bound the queries, keys and values. Heads and batch
items are disjoint blocks: each weight is the largest over blocks, times √(heads sharing a key
and value head) for grouped-query attention. The output is a convex combination of the value
rows, so each entry lies between the smallest and largest value of its column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..intervals.interval import Interval, from_center_radius
from ..intervals.norms import nonnegative_norm_bound
from .softmax import softmax_range

NOTE = (
    "on the input domain: product rule for attention, ‖ΔO‖ ≤ J·|c|·‖V‖₂(‖K‖₂‖ΔQ‖ + ‖Q‖₂‖ΔK‖) + ‖P‖₂‖ΔV‖ "
    "with every norm and the softmax slope J bounded from the value ranges (Kim et al. 2021, local form); "
    "assumes the mask is constant"
)


@dataclass
class AttentionBound:
    output: Interval  # (B, H, S, Dv)
    query_weight: float
    key_weight: float
    value_weight: float


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64)


def _repeat_heads(interval_part: np.ndarray, heads: int) -> np.ndarray:
    """(B, Hk, …) → (B, H, …) for grouped-query attention (each key/value head serves H/Hk heads)."""
    return np.repeat(interval_part, heads // interval_part.shape[1], axis=1)


def _scores(q: Interval, k: Interval, scale: float) -> Interval:
    """c·QKᵀ by midpoint-radius arithmetic."""
    qc, qr, qm = _t(q.center), _t(q.radius), _t(q.magnitude)
    kc, kr, km = _t(k.center), _t(k.radius), _t(k.magnitude)
    t = lambda m: m.transpose(-1, -2)  # noqa: E731
    center = scale * (qc @ t(kc))
    radius = abs(scale) * (qc.abs() @ t(kr) + qr @ t(kc.abs()) + qr @ t(kr))
    magnitude = abs(scale) * (qm @ t(km))
    return from_center_radius(center.numpy(), radius.numpy(), magnitude.numpy())


def attention_on_box(
    q: Interval,
    k: Interval,
    v: Interval,
    scale: float,
    *,
    mask: np.ndarray | None = None,
    causal: bool = False,
    softcap: float = 0.0,
) -> AttentionBound:
    """q (B, H, S, D), k (B, Hk, L, D), v (B, Hk, L, Dv) ranges; ``mask`` boolean (False: masked) or
    additive, broadcastable to (B, H, S, L)."""
    heads, group = q.shape[1], q.shape[1] // k.shape[1]
    k_full = Interval(_repeat_heads(k.lo, heads), _repeat_heads(k.hi, heads))
    v_full = Interval(_repeat_heads(v.lo, heads), _repeat_heads(v.hi, heads))
    scores = _scores(q, k_full, scale)
    lo, hi = scores.lo, scores.hi
    if mask is not None:
        if mask.dtype == np.bool_:
            lo, hi = np.where(mask, lo, -np.inf), np.where(mask, hi, -np.inf)
        else:
            lo, hi = lo + mask, hi + mask
    if causal:
        s, length = lo.shape[-2:]
        allowed = np.tril(np.ones((s, length), dtype=bool), k=length - s)
        lo, hi = np.where(allowed, lo, -np.inf), np.where(allowed, hi, -np.inf)
    if softcap:
        lo, hi = softcap * np.tanh(lo / softcap), softcap * np.tanh(hi / softcap)
    rows = lo.shape[-1]
    p_lo, p_hi = softmax_range(lo.reshape(-1, rows), hi.reshape(-1, rows))
    nearest_half = np.clip(0.5, p_lo, p_hi)
    slope = np.minimum(np.minimum(p_hi.max(axis=1), (2 * nearest_half * (1 - nearest_half)).max(axis=1)), 0.5)
    slope = slope.reshape(lo.shape[:-1]).max(axis=-1)  # per (B, H)
    p_norm = nonnegative_norm_bound(p_hi.reshape(lo.shape))
    q_norm = nonnegative_norm_bound(q.magnitude)
    k_norm = nonnegative_norm_bound(k_full.magnitude)
    v_norm = nonnegative_norm_bound(v_full.magnitude)
    c = abs(scale)
    query = float(np.max(slope * c * v_norm * k_norm, initial=0.0))
    key = float(np.max(slope * c * v_norm * q_norm, initial=0.0)) * np.sqrt(group)
    value = float(np.max(p_norm, initial=0.0)) * np.sqrt(group)
    # Each output is a convex combination of its head's value rows.
    out_shape = q.shape[:-1] + (v.shape[-1],)
    low = np.broadcast_to(v_full.lo.min(axis=-2, keepdims=True), out_shape)
    high = np.broadcast_to(v_full.hi.max(axis=-2, keepdims=True), out_shape)
    return AttentionBound(Interval(low, high).widened(np.maximum(np.abs(low), np.abs(high))), query, key, value)
