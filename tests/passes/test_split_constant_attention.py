"""Attention with constant keys and values (cross-attention to a fixed memory) is written out as
MatMul, Softmax, MatMul: globally Lipschitz, bounded without a box, and the same graph as the ONNX
export of the same model.  Truth: torch itself (its output, and Jacobian norms at random points)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from lipaudit import audit
from lipaudit.execute.executor import GraphInterpreter
from lipaudit.load import load_model
from lipaudit.passes import run_passes
from tests.passes._export import export, jacobian_norms

SHAPE = (1, 2, 4, 3)  # batch, heads, queries, dim
torch.manual_seed(0)
KEYS, VALUES = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 5)
BOOL_MASK = torch.tensor([[True, False, True, True]] * 4)
FLOAT_MASK = torch.linspace(-1.0, 1.0, 16).reshape(4, 4)


def _memory(x):
    return KEYS.to(x.dtype), VALUES.to(x.dtype)


def plain(x):
    return F.scaled_dot_product_attention(x, *_memory(x))


def causal_scaled(x):
    return F.scaled_dot_product_attention(x * 2.0, *_memory(x), is_causal=True, scale=0.3)


def boolean_mask(x):
    return F.scaled_dot_product_attention(x, *_memory(x), attn_mask=BOOL_MASK)


def float_mask(x):
    return F.scaled_dot_product_attention(torch.tanh(x), *_memory(x), attn_mask=FLOAT_MASK.to(x.dtype))


CASES = [plain, causal_scaled, boolean_mask, float_mask]


@pytest.mark.parametrize("fn", CASES, ids=lambda f: f.__name__)
def test_written_out_and_bounded_without_a_box(fn, tmp_path: Path) -> None:
    path, shape = export(fn, SHAPE, tmp_path, kind="torchscript")
    report = audit(str(path), input_shape=shape)
    assert report.exit_code() == 0, report.network.unbounded
    assert report.upper_bound is not None and math.isfinite(report.upper_bound)
    generator = torch.Generator().manual_seed(3)
    points = [3 * torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(40)]
    assert report.upper_bound >= jacobian_norms(fn, points)


@pytest.mark.parametrize("fn", CASES, ids=lambda f: f.__name__)
def test_computes_what_torch_computes_and_matches_the_onnx_export(fn, tmp_path: Path) -> None:
    traced, shape = export(fn, SHAPE, tmp_path, "torchscript")
    onnx_path, _ = export(fn, SHAPE, tmp_path)
    graph = run_passes(load_model(traced, input_shapes={"x": SHAPE}).graph)
    assert "Attention" not in [node.op_type for node in graph.nodes]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    found = GraphInterpreter(graph, dtype=torch.float64).run({graph.inputs[0]: x})[graph.outputs[0]]
    assert torch.allclose(found, fn(x), rtol=1e-6, atol=1e-6)
    from_torch = audit(str(traced), input_shape=shape).upper_bound
    from_onnx = audit(str(onnx_path)).upper_bound
    assert math.isclose(from_torch, from_onnx, rel_tol=1e-5), (from_torch, from_onnx)
