"""attention_on_box against autograd inside the box: each input's weight is at least the spectral
norm of the Jacobian with respect to that input at points of the box (corners and random points),
and the output range holds every output seen there. Narrow boxes around real points (where the
covariance form and the enclosure around the centre bite) and wide ones, with masks, causality
and grouped-query heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipaudit.intervals.attention import attention_on_box
from lipaudit.intervals.interval import Interval


def _attention(q, k, v, scale, mask=None, causal=False):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = scale * q @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask
    if causal:
        s, length = scores.shape[-2:]
        allowed = torch.ones(s, length, dtype=torch.bool).tril(diagonal=length - s)
        scores = scores.masked_fill(~allowed, -torch.inf)
    return torch.softmax(scores, dim=-1) @ v


def _boxes(rng, shapes, radius, spread):
    centres = [rng.normal(scale=spread, size=s) for s in shapes]
    return centres, [Interval(c - radius, c + radius) for c in centres]


def _points(rng, centres, radius, count):
    for k in range(count):
        if k < 4:  # corners: every entry at one end
            yield [c + radius * rng.choice([-1.0, 1.0], size=c.shape) for c in centres]
        else:
            yield [c + rng.uniform(-radius, radius, size=c.shape) for c in centres]


CASES = {
    "narrow": dict(heads=2, kv_heads=2, radius=0.01, spread=1.5),
    "medium": dict(heads=2, kv_heads=2, radius=0.2, spread=1.0),
    "wide": dict(heads=1, kv_heads=1, radius=1.0, spread=0.5),
    "grouped_query": dict(heads=4, kv_heads=2, radius=0.05, spread=1.5),
    "causal": dict(heads=2, kv_heads=2, radius=0.05, spread=1.5, causal=True),
    "bool_mask": dict(heads=2, kv_heads=2, radius=0.05, spread=1.5, mask="bool"),
    "float_mask": dict(heads=2, kv_heads=2, radius=0.05, spread=1.5, mask="float"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_weights_and_range_hold_inside_the_box(case: str) -> None:
    settings = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    batch, tokens, dim = 1, 5, 4
    heads, kv_heads, radius = settings["heads"], settings["kv_heads"], settings["radius"]
    shapes = [(batch, heads, tokens, dim), (batch, kv_heads, tokens, dim), (batch, kv_heads, tokens, dim)]
    centres, (q, k, v) = _boxes(rng, shapes, radius, settings["spread"])
    mask = None
    if settings.get("mask") == "bool":
        mask = rng.uniform(size=(tokens, tokens)) > 0.4
        mask[:, 0] = True
    elif settings.get("mask") == "float":
        mask = rng.normal(size=(tokens, tokens))
    causal = bool(settings.get("causal"))
    scale = 1 / np.sqrt(dim)
    bound = attention_on_box(q, k, v, scale, mask=mask, causal=causal)
    torch_mask = None if mask is None else torch.as_tensor(mask)
    for point in _points(rng, centres, radius, 12):
        tensors = [torch.as_tensor(p, dtype=torch.float64) for p in point]
        out = _attention(*tensors, scale, torch_mask, causal).numpy()
        assert np.all(out >= bound.output.lo - 1e-12) and np.all(out <= bound.output.hi + 1e-12)
        for index, weight in enumerate([bound.query_weight, bound.key_weight, bound.value_weight]):

            def partial(x, index=index, tensors=tensors):
                args = list(tensors)
                args[index] = x
                return _attention(*args, scale, torch_mask, causal)

            jacobian = torch.autograd.functional.jacobian(partial, tensors[index])
            matrix = jacobian.reshape(out.size, -1)
            assert torch.linalg.matrix_norm(matrix, ord=2).item() <= weight * (1 + 1e-9) + 1e-12


def test_covariance_form_is_tighter_than_the_product_rule_on_a_narrow_box() -> None:
    """Tokens far from the origin with a small spread: the magnitudes are large, the spread is not."""
    rng = np.random.default_rng(3)
    shape = (1, 1, 6, 4)
    centres = [5.0 + rng.normal(scale=0.3, size=shape) for _ in range(3)]
    q, k, v = (Interval(c - 0.01, c + 0.01) for c in centres)
    bound = attention_on_box(q, k, v, 0.5)
    assert bound.query_weight < 1.0  # c·ρ_K·ρ_V; the product rule gives ≈ c·‖V‖‖K‖/2 ≈ 150
    output_width = float(np.max(bound.output.hi - bound.output.lo))
    assert output_width < 0.5  # around the centre, not the hull of the value rows (width ≈ 1.5)
