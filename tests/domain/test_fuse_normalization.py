"""Decomposed LayerNorm and RMSNorm fuse into one exact op; near misses do not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from lipaudit.domain.lower import box_lower_bound
from lipaudit.execute.executor import execute
from tests.builders import session
from tests.domain._models import analysed, domain_bound, export, global_bound


class Norms(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.kind = kind
        self.linear = nn.Linear(4, 6)
        self.layer_norm = nn.LayerNorm(6, eps=1e-4)
        with torch.no_grad():
            self.layer_norm.weight.uniform_(0.5, 2.0)

    def forward(self, x):
        h = self.linear(x)
        if self.kind == "layer":
            return self.layer_norm(h)
        if self.kind == "rms":
            return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-4) * 1.5
        if self.kind == "rms-rsqrt":
            return h * torch.rsqrt((h * h).mean(-1, keepdim=True) + 1e-4)
        # ε added after the square root: a different function, which must not be fused.
        centred = h - h.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True).sqrt() + 1e-4)


@pytest.mark.parametrize("kind, centered", [("layer", 1), ("rms", 0), ("rms-rsqrt", 0)])
def test_decomposed_normalisations_fuse_into_the_exact_op(tmp_path, kind, centered):
    path = export(Norms(kind), (2, 4), tmp_path, opset=14)  # opset 14: torch spells LayerNorm out
    graph = analysed(path)
    fused = [node for node in graph.nodes if node.op_type == "Normalize"]
    assert len(fused) == 1 and fused[0].domain == "lipaudit"
    assert fused[0].attrs["centered"] == centered and fused[0].attrs["axes"] == [1]
    assert not any(node.op_type in ("Sqrt", "Pow", "ReduceMean", "Reciprocal") for node in graph.nodes)
    x = np.random.default_rng(0).uniform(-2, 2, (2, 4)).astype(np.float32)
    ours = execute(graph, {"x": x})[graph.outputs[0]].numpy()
    theirs = session(onnx.load(str(path))).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    whole = global_bound(graph)
    assert whole.upper_bound is not None  # 1/√ε times the rest: sound, loose, finite
    assert whole.upper_bound >= box_lower_bound(graph, {"x": (-3.0, 3.0)}, samples=2, steps=20).value
    local = domain_bound(graph, (-1.0, 1.0))
    assert local.upper_bound >= box_lower_bound(graph, {"x": (-1.0, 1.0)}, samples=2, steps=20).value


def test_epsilon_outside_the_root_is_not_fused(tmp_path):
    graph = analysed(export(Norms("other"), (2, 4), tmp_path, opset=14))
    assert not any(node.op_type == "Normalize" for node in graph.nodes)


def test_a_box_away_from_constant_vectors_gives_a_smaller_layernorm_factor(tmp_path):
    """Entries pinned apart keep the variance away from 0: the factor drops below 1/√ε."""
    from lipaudit.compose import compose
    from lipaudit.domain import value_ranges
    from lipaudit.ops import RuleContext

    class Spread(nn.Module):
        def forward(self, x):
            return nn.functional.layer_norm(
                x * torch.tensor([1.0, 1.0, 1.0, 1.0]) + torch.tensor([0.0, 3.0, 6.0, 9.0]), (4,), eps=1e-5
            )

    graph = analysed(export(Spread(), (1, 4), tmp_path, opset=14))
    ranges = value_ranges(graph, {"x": (0.0, 1.0)})
    local = compose(graph, RuleContext(graph, ranges=ranges))
    layer = next(r for r in local.layers if r.node.op_type == "Normalize")
    # The smallest variance over the box: entries in [0,1], [3,4], [6,7], [9,10]; c = 5 → gaps 4, 1, 1, 4.
    assert layer.factor.method == "domain"
    # (rounding margins on the ranges and the float32 margin move it by a few ppm)
    assert layer.factor.value == pytest.approx(1 / np.sqrt((16 + 1 + 1 + 16) / 4 + 1e-5), rel=1e-5)
    lower = box_lower_bound(graph, {"x": (0.0, 1.0)}, samples=3, steps=30)
    assert local.upper_bound >= lower.value
