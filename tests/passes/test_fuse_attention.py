"""Dot-product attention spelled out by the ONNX exporters (MatMul, Softmax, MatMul, with the scale
split over the queries and the transposed keys, masks added) fuses into one Attention op that
computes what the pieces computed; look-alikes stay as they were.

Truth: the torch function itself, run in float64 on the same inputs, never lipaudit's executor
alone; and the figure on a box, where the fused op's per-head rule is checked against the Jacobian
norms torch finds inside it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lipaudit import audit
from lipaudit.execute.executor import GraphInterpreter
from lipaudit.load import load_model
from lipaudit.passes import run_passes
from tests.passes._export import export, jacobian_norms

SHAPE = (1, 2, 5, 4)  # batch, heads, tokens, dim: the three of Q, K, V side by side on the last axis


def _qkv(x):
    return x[..., :4] * 0.5, x[..., 4:8] - 0.25, x[..., 8:] * 2.0


def scaled(x):
    q, k, v = _qkv(x)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def causal(x):
    q, k, v = _qkv(x)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def additive_mask(x):
    q, k, v = _qkv(x)
    bias = torch.linspace(-1.0, 1.0, 25).reshape(5, 5)
    return torch.softmax((q @ k.transpose(-1, -2)) / 3.0 + bias, dim=-1) @ v


def keys_given_transposed(x):
    q, k, v = _qkv(x)
    keys_t = k.permute(0, 1, 3, 2) * 1.5  # a Transpose whose output is read by the Mul, not the MatMul
    return torch.softmax(q @ keys_t, dim=-1) @ v


def softmax_over_queries(x):
    q, k, v = _qkv(x)
    return torch.softmax(q @ k.transpose(-1, -2), dim=-2) @ v


def scores_read_twice(x):
    q, k, v = _qkv(x)
    scores = q @ k.transpose(-1, -2)
    return torch.softmax(scores, dim=-1) @ v + scores[..., :4]


def large_mask_before_the_scale(x):
    """(q·kᵀ + M)/3 with |M| ≈ 10⁴: the fused mask M/3 must not be rounded to float32."""
    q, k, v = _qkv(x)
    bias = 1e4 + torch.linspace(0.0, 0.75, 25).reshape(5, 5)
    return torch.softmax((q @ k.transpose(-1, -2) + bias) / 3.0, dim=-1) @ v


def one_scaled_value_on_both_sides(x):  # the red team's crash: one Mul on the query and key walks
    y = x[..., :5] * 0.7
    return torch.softmax(y @ y, dim=-1) @ x[..., 5:9]


def softmax_as_its_own_values(x):  # P·P: V is the softmax the fusion would remove
    q, k, _ = _qkv(x)
    p = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    return p @ p


def one_transpose_on_both_sides(x):  # Q = Kᵀ = one Transpose, which the fusion would remove
    t = x[..., :5].transpose(-1, -2)
    return torch.softmax(t @ t, dim=-1) @ x[..., 5:9]


def three_dimensional(x):  # (batch, tokens, dim): one head, no heads axis
    q, k, v = _qkv(x.reshape(2, 5, 12))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).reshape(1, 2, 5, 4)


def three_dimensional_masked(x):
    q, k, v = _qkv(x.reshape(2, 5, 12))
    bias = torch.linspace(-1.0, 1.0, 50).reshape(2, 5, 5)
    return (torch.softmax((q @ k.transpose(-1, -2)) * 0.4 + bias, dim=-1) @ v).reshape(1, 2, 5, 4)


def boolean_mask(x):  # the legacy exporter guards the softmax: Where(IsNaN(p), 0, p)
    q, k, v = _qkv(x)
    keep = torch.tensor([[True, False, True, True, False]] * 4 + [[False, False, False, False, True]])
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)


FUSED = [
    boolean_mask,
    three_dimensional,
    three_dimensional_masked,
    scaled,
    causal,
    additive_mask,
    keys_given_transposed,
    large_mask_before_the_scale,
    one_scaled_value_on_both_sides,
]
KEPT = [softmax_over_queries, scores_read_twice, softmax_as_its_own_values, one_transpose_on_both_sides]


def _analysed(fn, tmp_path: Path):
    path, _ = export(fn, SHAPE[:-1] + (12,), tmp_path)
    return path, run_passes(load_model(path).graph)


def _runs_as_torch(path: Path, graph, fn) -> None:
    """The rewritten graph computes what torch computes (to the file's float32 constants), and what
    the graph as loaded computes, to float64 rounding."""
    x = torch.randn(SHAPE[:-1] + (12,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    found = GraphInterpreter(graph, dtype=torch.float64).run({graph.inputs[0]: x})[graph.outputs[0]]
    loaded = load_model(path).graph
    before = GraphInterpreter(loaded, dtype=torch.float64).run({loaded.inputs[0]: x})[loaded.outputs[0]]
    assert torch.allclose(found, fn(x), rtol=1e-6, atol=1e-6)
    assert torch.allclose(found, before, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", FUSED, ids=lambda f: f.__name__)
def test_the_fused_op_computes_what_torch_computes(fn, tmp_path: Path) -> None:
    path, graph = _analysed(fn, tmp_path)
    ops = [node.op_type for node in graph.nodes]
    assert "Attention" in ops and "Softmax" not in ops, ops
    _runs_as_torch(path, graph, fn)


@pytest.mark.parametrize("fn", KEPT, ids=lambda f: f.__name__)
def test_look_alikes_are_left_alone(fn, tmp_path: Path) -> None:
    path, graph = _analysed(fn, tmp_path)
    assert "Attention" not in [node.op_type for node in graph.nodes]
    _runs_as_torch(path, graph, fn)


@pytest.mark.parametrize("fn", FUSED, ids=lambda f: f.__name__)
def test_the_figure_on_a_box_bounds_torchs_jacobians(fn, tmp_path: Path) -> None:
    path, _ = _analysed(fn, tmp_path)
    report = audit(str(path), input_range=["-1:1"])
    generator = np.random.default_rng(2)
    points = [torch.as_tensor(generator.uniform(-1, 1, size=SHAPE[:-1] + (12,))) for _ in range(24)]
    seen = jacobian_norms(fn, points)
    assert report.upper_bound is not None and math.isfinite(report.upper_bound)
    assert report.upper_bound >= seen
