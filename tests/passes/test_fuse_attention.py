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


FUSED = [scaled, causal, additive_mask, keys_given_transposed]
KEPT = [softmax_over_queries, scores_read_twice]


def _analysed(fn, tmp_path: Path):
    path, _ = export(fn, SHAPE[:-1] + (12,), tmp_path)
    return path, run_passes(load_model(path).graph)


@pytest.mark.parametrize("fn", FUSED, ids=lambda f: f.__name__)
def test_the_fused_op_computes_what_torch_computes(fn, tmp_path: Path) -> None:
    _, graph = _analysed(fn, tmp_path)
    ops = [node.op_type for node in graph.nodes]
    assert "Attention" in ops and "Softmax" not in ops, ops
    x = torch.randn(SHAPE[:-1] + (12,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    found = GraphInterpreter(graph, dtype=torch.float64).run({graph.inputs[0]: x})[graph.outputs[0]]
    assert torch.allclose(found, fn(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn", KEPT, ids=lambda f: f.__name__)
def test_look_alikes_are_left_alone(fn, tmp_path: Path) -> None:
    _, graph = _analysed(fn, tmp_path)
    assert "Attention" not in [node.op_type for node in graph.nodes]


@pytest.mark.parametrize("fn", FUSED, ids=lambda f: f.__name__)
def test_the_figure_on_a_box_bounds_torchs_jacobians(fn, tmp_path: Path) -> None:
    path, _ = _analysed(fn, tmp_path)
    report = audit(str(path), input_range=["-1:1"])
    generator = np.random.default_rng(2)
    points = [torch.as_tensor(generator.uniform(-1, 1, size=SHAPE[:-1] + (12,))) for _ in range(24)]
    seen = jacobian_norms(fn, points)
    assert report.upper_bound is not None and math.isfinite(report.upper_bound)
    assert report.upper_bound >= seen
