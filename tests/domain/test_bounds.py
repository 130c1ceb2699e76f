"""Domain bounds: finite where the global bound is not, never below what gradient ascent inside the box
achieves, labelled as local, and without a box nothing changes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lipaudit.domain.lower import box_lower_bound
from tests.domain._models import SqueezeExcitation, TinyViT, analysed, domain_bound, export, global_bound


class OneOp(nn.Module):
    """fn applied to two affine maps u, v of the input (so that ranges are not trivial)."""

    def __init__(self, fn, width: int = 5) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fn = fn
        self.u = nn.Linear(4, width)
        self.v = nn.Linear(4, width)

    def forward(self, x):
        return self.fn(self.u(x), self.v(x))


def _attention(u, v):
    q = u.reshape(1, 5, 1)
    k = v.reshape(1, 5, 1)
    return torch.softmax(q @ k.transpose(-1, -2), -1) @ (u + v).reshape(1, 5, 1)


def _rmsnorm(u, v):
    return u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-3)


OPS = {
    "mul": lambda u, v: u * v,
    "square": lambda u, v: u * u,
    "div": lambda u, v: u / (2 + torch.tanh(v)),
    "reciprocal": lambda u, v: 1 / (1.2 + torch.sigmoid(u)),
    "pow3": lambda u, v: u**3,
    "sqrt": lambda u, v: torch.sqrt(1.5 + torch.tanh(u)),
    "log": lambda u, v: torch.log(2 + torch.sin(u)),
    "exp": lambda u, v: torch.exp(u),
    "gate": lambda u, v: u * torch.sigmoid(v),
    "hard-gate": lambda u, v: u * F.hardsigmoid(v),
    "relu-off": lambda u, v: F.relu(u - 10.0) + v,
    "sigmoid": lambda u, v: torch.sigmoid(3 * u + 2),
    "layernorm": lambda u, v: F.layer_norm(u, (5,), eps=1e-3),
    "rmsnorm": _rmsnorm,
    "softmax": lambda u, v: torch.softmax(u, -1),
    "matmul": lambda u, v: u.reshape(5, 1) @ v.reshape(1, 5),
    "attention": _attention,
}


@pytest.mark.parametrize("op", OPS)
def test_a_domain_bound_is_finite_and_above_the_ascent_inside_the_box(tmp_path, op):
    graph = analysed(export(OneOp(OPS[op]), (1, 4), tmp_path, opset=14 if op == "layernorm" else 17))
    local = domain_bound(graph, (-1.0, 1.0))
    assert local.upper_bound is not None and math.isfinite(local.upper_bound), (local.unbounded, local.unsupported)
    lower = box_lower_bound(graph, {"x": (-1.0, 1.0)}, samples=2, steps=25)
    assert lower.value > 0
    assert local.upper_bound >= lower.value, (op, local.upper_bound, lower.value)
    assert local.upper_bound <= 200 * lower.value, "sound, but uselessly loose"
    if op in ("mul", "div", "pow3", "exp", "gate", "matmul", "attention"):
        assert global_bound(graph).upper_bound is None  # not globally Lipschitz: the box is what bounds it


def test_a_relu_that_is_always_off_contributes_nothing(tmp_path):
    graph = analysed(export(OneOp(lambda u, v: F.relu(u - 10.0)), (1, 4), tmp_path))
    local = domain_bound(graph, (-1.0, 1.0))
    relu = next(layer for layer in local.layers if layer.node.op_type == "Relu")
    assert relu.factor.value == 0.0 and relu.factor.method == "domain"
    assert local.upper_bound == 0.0


def _model_bounds(tmp_path, module, shape, opset=17):
    torch.manual_seed(0)
    graph = analysed(export(module, shape, tmp_path, opset=opset))
    return graph, domain_bound(graph, (0.0, 1.0)), global_bound(graph)


@pytest.mark.parametrize("opset", [17, 14])
def test_a_small_vit_gets_a_finite_sound_local_bound(tmp_path, opset):
    graph, local, whole = _model_bounds(tmp_path, TinyViT(), (1, 3, 6, 6), opset)
    assert whole.upper_bound is None and {b.op for b in whole.unbounded} == {
        "Attention"
    }  # fused from MatMul, Softmax, MatMul
    assert local.upper_bound is not None and local.certified and local.complete
    assert any(layer.factor.method == "domain" for layer in local.layers)
    lower = box_lower_bound(graph, {"x": (0.0, 1.0)}, samples=2, steps=20)
    assert local.upper_bound >= lower.value > 0


def test_a_squeeze_excitation_cnn_gets_a_finite_sound_local_bound(tmp_path):
    graph, local, whole = _model_bounds(tmp_path, SqueezeExcitation(), (1, 3, 5, 5))
    assert whole.upper_bound is None and {b.op for b in whole.unbounded} == {"Mul"}
    assert all("--input-range" in b.reason for b in whole.unbounded)  # the hint
    assert local.upper_bound is not None and local.certified and local.complete
    lower = box_lower_bound(graph, {"x": (0.0, 1.0)}, samples=3, steps=30)
    assert local.upper_bound >= lower.value > 0


def test_an_rmsnorm_vit_gets_a_finite_local_bound(tmp_path):
    graph, local, _ = _model_bounds(tmp_path, TinyViT(rms=True), (1, 3, 6, 6))
    assert any(node.op_type == "Normalize" for node in graph.nodes)
    assert local.upper_bound is not None


def test_without_a_box_the_factors_are_the_global_ones(tmp_path):
    """ranges=None is the global analysis: the same factors as a context that never heard of domains."""
    from lipaudit.compose import node_factors
    from lipaudit.ops import RuleContext

    torch.manual_seed(0)
    graph = analysed(export(TinyViT(), (1, 3, 6, 6), tmp_path))
    for node in graph.nodes:
        if graph.variable_inputs(node):
            for factor in node_factors(node, RuleContext(graph, method="gram")):
                assert factor.method != "domain"


class ThresholdBranch(nn.Module):
    """h = Wx; where(h > 5, h, 0.5·tanh(h)): on [−1, 1]⁴ with |W| ≤ 1 every entry takes the tanh
    branch, so the Where is that branch alone (the identity branch, never taken, adds nothing)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 6)
        with torch.no_grad():
            self.linear.weight.clamp_(-0.2, 0.2)
            self.linear.bias.zero_()

    def forward(self, x):
        h = self.linear(x)
        return torch.where(h > 5, h, 0.5 * torch.tanh(h))


class TanhBranch(ThresholdBranch):
    def forward(self, x):
        return 0.5 * torch.tanh(self.linear(x))


def test_a_condition_constant_on_the_box_weighs_only_the_branch_it_takes(tmp_path) -> None:
    threshold = domain_bound(analysed(export(ThresholdBranch(), (1, 4), tmp_path, "where.onnx")))
    alone = domain_bound(analysed(export(TanhBranch(), (1, 4), tmp_path, "tanh.onnx")))
    assert threshold.certified and alone.certified
    assert threshold.upper_bound == pytest.approx(alone.upper_bound, rel=1e-6)
