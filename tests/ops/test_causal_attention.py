"""ONNX Attention's causal mask is aligned top-left (query i sees keys j ≤ i) without a cache, as
onnxruntime and the ONNX reference align it, also with unequal query and key lengths (redteam5
finding 3): the run, the box rule and the constant-key rewrite all read it so."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lipaudit.intervals.attention import attention_on_box, causal_allowed
from lipaudit.intervals.interval import Interval
from lipaudit.ops.attention import _attention_core
from tests.builders import session
from tests.execute.test_executor import assert_matches_onnxruntime, build

LENGTHS = [(3, 2), (2, 3), (3, 3)]


def test_the_mask_is_the_lower_triangle_from_the_top_left_corner():
    assert causal_allowed(3, 2).tolist() == [[True, False], [True, True], [True, True]]
    assert causal_allowed(2, 3).tolist() == [[True, False, False], [True, True, False]]


@pytest.mark.parametrize("queries, keys", LENGTHS)
def test_causal_attention_matches_onnxruntime(queries, keys):
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)
    model = build([node], {"q": [1, 2, queries, 4], "k": [1, 2, keys, 4], "v": [1, 2, keys, 3]}, opset=23)
    assert_matches_onnxruntime(model)
    assert_matches_onnxruntime(model, passes=True)


@pytest.mark.parametrize("queries, keys", LENGTHS)
def test_constant_keys_written_out_match_onnxruntime(queries, keys):
    rng = np.random.default_rng(1)
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)
    consts = {"k": rng.normal(size=(1, 1, keys, 4)).astype(np.float32), "v": rng.normal(size=(1, 1, keys, 4))}
    model = build([node], {"q": [1, 1, queries, 4]}, {n: a.astype(np.float32) for n, a in consts.items()}, opset=23)
    assert_matches_onnxruntime(model, passes=True)


@pytest.mark.parametrize("queries, keys", LENGTHS)
def test_the_box_rule_encloses_the_op_at_points_of_the_box(queries, keys):
    rng = np.random.default_rng(2)
    centres = [rng.normal(size=(1, 1, n, 4)) for n in (queries, keys, keys)]
    boxes = [Interval(c - 0.1, c + 0.1) for c in centres]
    bound = attention_on_box(*boxes, 0.5, causal=True)
    lo, hi = bound.output.lo, bound.output.hi
    for _ in range(20):
        points = [torch.from_numpy(c + rng.uniform(-0.1, 0.1, c.shape)) for c in centres]
        out = _attention_core(*points, 0.5, True).numpy()
        assert (out >= lo - 1e-12).all() and (out <= hi + 1e-12).all()


def _red_team_model(path):
    """x·Wq → Attention(q, K, V) with 3 queries and 2 constant keys (redteam5 attn/make_causal.py)."""
    rng = np.random.default_rng(0)
    wq = rng.normal(size=(4, 4)).astype(np.float32)
    keys, values = (rng.normal(size=(1, 1, 2, 4)).astype(np.float32) * 2 for _ in range(2))
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"]),
        helper.make_node("Attention", ["q", "K", "V"], ["y"], is_causal=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 4])],
        [numpy_helper.from_array(a, n) for n, a in (("Wq", wq), ("K", keys), ("V", values))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    proto.ir_version = 10
    onnx.save(proto, str(path))
    return proto


def test_the_red_team_model_is_verified_and_its_figure_is_above_input_pairs(tmp_path):
    from lipaudit import audit

    path = tmp_path / "causal.onnx"
    run = session(_red_team_model(path))
    rng = np.random.default_rng(3)
    lower = 0.0
    for _ in range(300):
        x = (rng.normal(size=(1, 1, 3, 4)) * 2).astype(np.float32)
        y = (x + rng.normal(size=x.shape) * 1e-2).astype(np.float32)
        outs = [run.run(None, {"x": a})[0].astype(np.float64) for a in (x, y)]
        lower = max(lower, np.linalg.norm(outs[0] - outs[1]) / np.linalg.norm(x.astype(np.float64) - y))
    for verify in (True, False):
        network = audit(str(path), verify=verify).to_dict()["network"]
        assert network["certified"] and network["upper_bound"] >= lower * (1 - 1e-4), (verify, network, lower)


_MEMORY = torch.linspace(-1.5, 1.5, 16).reshape(1, 1, 4, 4)


class _CausalCross(torch.nn.Module):
    """torch's causal SDPA with unequal lengths (its mask is tril(ones(L, S)): top-left)."""

    def __init__(self, keys: int) -> None:
        super().__init__()
        self.keys = keys

    def forward(self, x):
        memory = _MEMORY[:, :, : self.keys] * x.sum()
        return torch.nn.functional.scaled_dot_product_attention(x, memory, memory + 1.0, is_causal=True)


@pytest.mark.parametrize("kind", ["traced", "export"])
@pytest.mark.parametrize("queries, keys", LENGTHS)
def test_torch_causal_attention_with_unequal_lengths_loads_and_runs_like_torch(kind, queries, keys, tmp_path):
    from tests.load.test_aten_converters import _check_runs_like_torch

    _check_runs_like_torch(_CausalCross(keys), (1, 1, queries, 4), kind, tmp_path)
