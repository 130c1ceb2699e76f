"""Dot-product attention on a box: ranges of its output and a Lipschitz bound from its inputs' ranges.

For one head, O = P·V with P = softmax(c·QKᵀ + M) (M a constant mask), so for two inputs
ΔO = ΔP·V + P'·ΔV and ΔS = c(ΔQ·Kᵀ + Q'·ΔKᵀ), whence

    ‖ΔO‖_F ≤ J·|c|·sup‖V‖₂·(sup‖K‖₂‖ΔQ‖_F + sup‖Q‖₂‖ΔK‖_F) + sup‖P‖₂‖ΔV‖_F

with J = sup over the score ranges of each row's softmax Jacobian norm (≤ min(1/2, max p_i,
max 2p_i(1 − p_i))), and the sups of the spectral norms bounded from the entries' ranges. This is
the product rule of Kim et al. (2021) made local, in the spirit of Castin et al. (2024): it holds
on the box only, and only because the ranges bound the queries, keys and values. The weights of ΔQ
and ΔK are also bounded through the softmax Jacobian's covariance form (``_covariance_weights``):
c·ρ_K·ρ_V and c·ρ_V·√(max_j Σ_i p_ij‖q_i‖²), ρ the spread of the keys or values of a head around
their centre, which does not grow with the tokens' distance from the origin; each weight is the
smaller of the two. Heads and batch
items are disjoint blocks: each weight is the largest over blocks, times √(heads sharing a key
and value head) for grouped-query attention. The output is a convex combination of the value
rows, so each entry lies between the smallest and largest value of its column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .interval import Interval, from_center_radius, stand_in
from .norms import nonnegative_norm_bound
from .softmax import softmax_range

NOTE = (
    "on the input domain: product rule for attention, ‖ΔO‖ ≤ J·|c|·‖V‖₂(‖K‖₂‖ΔQ‖ + ‖Q‖₂‖ΔK‖) + ‖P‖₂‖ΔV‖ "
    "with every norm and the softmax slope J bounded from the value ranges (Kim et al. 2021, local form), "
    "or the covariance form c·ρ_K·ρ_V‖ΔQ‖ + c·ρ_V·√(max_j Σ_i p_ij‖q_i‖²)‖ΔK‖ where smaller "
    "(ρ the spread of each head's keys or values); assumes the mask is constant"
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


def _spread(interval: Interval) -> np.ndarray:
    """ρ per (B, H): max_j ‖x_j − m‖ over the rows j of each head, for m the centre of the rows'
    joint range; so E_P‖x − E_P x‖² ≤ E_P‖x − m‖² ≤ ρ² for every distribution P over the rows."""
    width = interval.hi.max(axis=-2) - interval.lo.min(axis=-2)  # (B, H, D)
    return np.sqrt(np.sum((width / 2) ** 2, axis=-1)) * (1 + 1e-9)


def _covariance_weights(q: Interval, k: Interval, v: Interval, p_hi: np.ndarray, c: float) -> tuple[float, float]:
    """Weights of ΔQ and ΔK from the covariance form of the softmax's Jacobian.

    With p = P_i, Σ_j (J_p s)_j v_j = Σ_j p_j (s_j − s̄) v_j = Cov_p(s, v), so by Cauchy–Schwarz
    ‖ΔO_i‖ ≤ √Var_p(s)·ρ_V. For ΔQ, s_j = c·Δq_i·k_j and Var_p(s) ≤ c²‖Δq_i‖²ρ_K²; row i reads q_i
    only, so ‖ΔO‖ ≤ c·ρ_K·ρ_V·‖ΔQ‖. For ΔK, s_j = c·q_i·Δk_j and Var_p(s) ≤ c²‖q_i‖²Σ_j p_ij‖Δk_j‖²;
    summed over rows i (and over the query heads sharing the key head), ‖ΔO‖² ≤ c²ρ_V²·
    max_j Σ_i p_ij‖q_i‖²·‖ΔK‖². Masked entries have p_ij = 0 and only shrink both sums.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    group = heads // kv_heads
    rho_k = np.repeat(_spread(k), group, axis=1)  # (B, H)
    rho_v_kv = _spread(v)  # (B, Hk)
    rho_v = np.repeat(rho_v_kv, group, axis=1)
    query = float(np.max(c * rho_k * rho_v, initial=0.0))
    q_square = np.sum(q.magnitude**2, axis=-1)  # (B, H, S): ‖q_i‖² at most
    column = np.einsum("bhsl,bhs->bhl", p_hi, q_square)  # Σ_i p_ij ‖q_i‖², per query head
    b, _, length = column.shape
    per_key_head = column.reshape(b, kv_heads, group, length).sum(axis=2).max(axis=-1)  # (B, Hk)
    key = float(np.max(c * rho_v_kv * np.sqrt(per_key_head), initial=0.0)) * (1 + 1e-9)
    return query, key


def causal_allowed(queries: int, keys: int) -> np.ndarray:
    """(queries, keys) booleans: query i attends key j iff j ≤ i.  The causal mask of ONNX Attention
    without a cache is aligned top-left (the ONNX reference's offset 0, onnxruntime), as torch's
    scaled_dot_product_attention aligns its own; with fewer keys than queries the later queries
    see every key, with more they never see the last ones."""
    return np.tri(queries, keys, dtype=bool)


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
    mid = scale * np.einsum("bhsd,bhld->bhsl", q.center, k_full.center)  # the scores at the ranges' centre
    if mask is not None:
        if mask.dtype == np.bool_:
            lo, hi, mid = (np.where(mask, a, -np.inf) for a in (lo, hi, mid))
        else:
            lo, hi, mid = lo + mask, hi + mask, mid + mask
    if causal:
        allowed = causal_allowed(*lo.shape[-2:])
        lo, hi, mid = (np.where(allowed, a, -np.inf) for a in (lo, hi, mid))
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
    product_query = float(np.max(slope * c * v_norm * k_norm, initial=0.0))
    product_key = float(np.max(slope * c * v_norm * q_norm, initial=0.0)) * np.sqrt(group)
    spread_query, spread_key = _covariance_weights(q, k, v, p_hi.reshape(lo.shape), c)
    # A soft cap scales each score's change by its own tanh' ∈ [0, 1]: the key weight's bound
    # (E_p s² with |s_j| no larger) still holds, the query weight's centring does not.
    query = product_query if softcap else min(product_query, spread_query)
    key = min(product_key, spread_key)
    value = float(np.max(p_norm, initial=0.0)) * np.sqrt(group)
    # Each output is a convex combination of its head's value rows.
    out_shape = q.shape[:-1] + (v.shape[-1],)
    low = np.broadcast_to(v_full.lo.min(axis=-2, keepdims=True), out_shape)
    high = np.broadcast_to(v_full.hi.max(axis=-2, keepdims=True), out_shape)
    product_lo, product_hi = _weighted_values(p_lo.reshape(lo.shape), p_hi.reshape(lo.shape), v_full)
    low, high = np.fmax(low, product_lo), np.fmin(high, product_hi)
    if not softcap:
        near_lo, near_hi = _around_centre(q, k_full, v_full, scale, mid)
        low, high = np.fmax(low, near_lo), np.fmin(high, near_hi)  # fmax: a NaN (unbounded) end keeps the hull
    return AttentionBound(Interval(low, high).widened(np.maximum(np.abs(low), np.abs(high))), query, key, value)


def _weighted_values(p_lo: np.ndarray, p_hi: np.ndarray, v: Interval) -> tuple[np.ndarray, np.ndarray]:
    """P·V by midpoint-radius arithmetic on the ranges of P (from the softmax) and of V: narrow
    where both are, as interval arithmetic through a decomposed MatMul/Softmax/MatMul is."""
    pc, pr = _t((p_lo + p_hi) / 2), _t((p_hi - p_lo) / 2)
    vc, vr, vm = _t(v.center), _t(v.radius), _t(v.magnitude)
    radius = pc.abs() @ vr + pr @ vc.abs() + pr @ vr
    slack = 1e-12 * (_t(p_hi) @ vm) + 1e-300
    centre, reach = (pc @ vc).numpy(), (radius * (1 + 1e-12) + slack).numpy()
    return centre - reach, centre + reach


def _around_centre(
    q: Interval, k: Interval, v: Interval, scale: float, centre_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """O at the centre of the ranges, ± a bound on how far row i can move inside them.

    Along the segment from the centre to any point of the box (which stays in the box), row i's
    derivative is bounded as in ``_covariance_weights``, row by row: ‖ΔO_i‖ ≤ c·ρ_K·ρ_V·‖Δq_i‖ +
    c·ρ_V·‖q_i‖·max_j‖Δk_j‖ + max_j‖Δv_j‖, the Δ at most the ranges' radii. Each entry of O_i then
    lies within that distance of its value at the centre (``centre_scores``: the masked scores there).
    """
    c = abs(scale)
    centre_scores = np.where(np.isneginf(centre_scores), -np.inf, stand_in(centre_scores))  # −inf: masked
    shifted = centre_scores - centre_scores.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    centre = np.einsum("bhsl,bhld->bhsd", weights, v.center)
    rho_k, rho_v = _spread(k)[..., None], _spread(v)[..., None]  # (B, H, 1)
    with np.errstate(over="ignore"):  # an input with no range has infinite radii: ∞ is the answer
        dq = np.sqrt(np.sum(q.radius**2, axis=-1))  # (B, H, S)
        dk = np.sqrt(np.sum(k.radius**2, axis=-1)).max(axis=-1, keepdims=True)  # (B, H, 1)
        dv = np.sqrt(np.sum(v.radius**2, axis=-1)).max(axis=-1, keepdims=True)
        q_norm = np.sqrt(np.sum(q.magnitude**2, axis=-1))
    with np.errstate(invalid="ignore"):  # 0·∞ where a spread is 0 and a radius infinite
        reach = (c * rho_k * rho_v * dq + c * rho_v * q_norm * dk + dv) * (1 + 1e-9)
    reach = np.where(np.isnan(reach), np.inf, reach)
    slack = 1e-12 * (1 + np.abs(centre)) + 1e-9 * np.abs(v.magnitude).max(axis=-2, keepdims=True)
    return centre - reach[..., None] - slack, centre + reach[..., None] + slack
