"""Ops that move entries are permutations in every form of the recursion, never the identity.

``x − P(x)`` for a permutation P that keeps the shape has norm up to 2; a recursion that took P for
the identity would certify about 0.  The values here have more than DENSE_LIMIT entries, so the
recursion works in its convolution form.  The truth is independent of lipaudit: ‖I − P‖ from the
cycles of P read off onnxruntime (I − P is normal: its norm is the largest |1 − ω| over the
eigenvalues ω of P), or a power iteration on the torch module's own Jacobian.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from lipaudit.compose import compose
from lipaudit.ir import Graph, Node, Value
from lipaudit.linear_maps import Barrier, Linear, Permutation, Scale
from lipaudit.load import load_model
from lipaudit.ops import Factor, Op, RuleContext, register, unregister
from lipaudit.passes import run_passes
from lipaudit.pipeline import audit
from lipaudit.tight import Network, network_bound, residual_branches
from lipaudit.tight.chain import DENSE_LIMIT
from lipaudit.tight.from_graph import network_from_graph
from tests.builders import graph_model, save, session

SHAPE = (1, 1, 64, 64)  # 4096 entries > DENSE_LIMIT: the convolution form
SHUFFLE = torch.randperm(64, generator=torch.Generator().manual_seed(3))


class Lambda(nn.Module):
    def __init__(self, fn, *modules: nn.Module):
        super().__init__()
        self.fn, self.parts = fn, nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(self.parts, x)


def _export(module: nn.Module, shape, tmp_path, opset: int = 17):
    path = tmp_path / "model.onnx"
    torch.onnx.export(module.eval(), (torch.randn(shape),), str(path), dynamo=False, opset_version=opset)
    return path


def _power_lower_bound(module: nn.Module, shape, steps: int = 60) -> float:
    """‖J v‖ for the unit v a power iteration on JᵀJ settles on (the module is linear): a lower bound."""
    module = copy.deepcopy(module).double()
    v = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(shape, dtype=torch.float64)
    value = 0.0
    for _ in range(steps):
        v = v / v.norm()
        _, jv = torch.autograd.functional.jvp(module, zero, v)
        value = float(jv.norm())
        _, v = torch.autograd.functional.vjp(module, zero, jv)
    return value


def _cycle_norm(permutation: np.ndarray) -> float:
    """‖I − P‖ for the permutation y[j] = x[permutation[j]]: max over its cycles of length k of
    max_j |1 − e^{2πij/k}| (2 for an even cycle, 2cos(π/2k) for an odd one, 0 for a fixed point)."""
    seen = np.zeros(len(permutation), dtype=bool)
    best = 0.0
    for start in range(len(permutation)):
        length, j = 0, start
        while not seen[j]:
            seen[j], j, length = True, permutation[j], length + 1
        if length > 1:
            best = max(best, max(abs(1 - np.exp(2j * math.pi * m / length)) for m in range(length)))
    return best


@pytest.mark.parametrize(
    "name, fn",
    [
        ("transpose", lambda parts, x: x - x.transpose(-1, -2)),
        ("roll", lambda parts, x: x - torch.roll(x, shifts=1, dims=-1)),
        ("reverse", lambda parts, x: x - torch.flip(x, dims=[-1])),
        ("gather", lambda parts, x: x - x[..., SHUFFLE]),
        ("conv-transpose", lambda parts, x: parts[0](x) - parts[0](x).transpose(-1, -2)),
    ],
)
def test_a_permutation_is_never_the_identity(tmp_path, name, fn):
    torch.manual_seed(0)
    module = Lambda(fn, nn.Conv2d(1, 1, 3, padding=1, bias=False))
    assert math.prod(SHAPE) > DENSE_LIMIT
    truth = _power_lower_bound(module, SHAPE)
    assert truth > 1.0  # the maps here all reach about 2·(their first factor)
    network = audit(str(_export(module, SHAPE, tmp_path))).network
    assert network.upper_bound >= truth * (1 - 1e-6), (name, network.upper_bound, truth)


def test_depth_to_space_round_trip_is_a_permutation(tmp_path):
    """DepthToSpace in CRD order, then SpaceToDepth (the DCR inverse): a channel permutation."""
    shape = (1, 8, 32, 32)
    nodes = [
        helper.make_node("DepthToSpace", ["x"], ["d"], blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["d"], ["p"], blocksize=2),
        helper.make_node("Sub", ["x", "p"], ["y"]),
    ]
    model = graph_model(nodes, shape, {}, opset=17)
    n = math.prod(shape)
    moved = session(model).run(None, {"x": np.arange(n, dtype=np.float32).reshape(shape)})[0]
    # y = x − P x, so P x = x − y, and P x at x = 0, 1, … names each entry's source
    permutation = (np.arange(n, dtype=np.float32).reshape(shape) - moved).reshape(-1).round().astype(np.int64)
    truth = _cycle_norm(permutation)
    assert truth > 1.5
    network = audit(str(save(model, tmp_path))).network
    assert network.upper_bound >= truth * (1 - 1e-6)


def test_a_permutation_in_a_residual_branch_is_not_invertible():
    """x + 0.6·(x − xᵀ): the branch has Lip 1.2, so the gate must not call it invertible."""
    net = Network()
    x = net.input(SHAPE)
    g = net.scale(net.add([x, net.transpose(x, (0, 1, 3, 2))], (1.0, -1.0)), 0.6)
    net.output(net.add([x, g]))
    branch = residual_branches(net, window=None)[-1]
    assert branch.nodes == 3  # transpose, the difference and the scale
    assert branch.bound >= 1.2 * (1 - 1e-9) and not branch.invertible


@pytest.mark.parametrize("index", ["reverse", "roll"])
def test_permutation_maps_in_the_convolution_form(index):
    """A hand-built Network: x − P·x through the recursion's own forms, against the cycle norm."""
    n = math.prod(SHAPE)
    grid = np.arange(n).reshape(SHAPE)
    source = np.flip(grid, -1) if index == "reverse" else np.roll(grid, 1, -1)
    net = Network()
    x = net.input(SHAPE)
    p = net.permute(x, torch.as_tensor(source.reshape(-1).copy()), SHAPE)
    net.output(net.add([x, p], (1.0, -1.0)))
    assert isinstance(net[p].op, Permutation) and not net[p].op.is_identity
    bound = network_bound(net, window=None, budget=None)
    assert bound.bound >= _cycle_norm(source.reshape(-1)) * (1 - 1e-9)


def test_an_identity_permutation_is_the_identity():
    n = math.prod(SHAPE)
    assert Permutation.of(torch.arange(n), SHAPE, n).is_identity
    assert not Permutation.of_axes(SHAPE, (0, 1, 3, 2)).is_identity
    with pytest.raises(ValueError, match="copy"):
        Permutation.of(torch.zeros(n, dtype=torch.int64), SHAPE, n)


def test_a_wrong_composition_is_refused(monkeypatch):
    """A composite kernel that does not match the composition it stands for is never used: the
    chain falls back to the product there (here a conv map that forgets the second convolution)."""
    from lipaudit.tight.conv_maps import ConvMap

    monkeypatch.setattr(ConvMap, "then_conv", lambda self, *args, **kwargs: self)
    net = Network()
    x = net.input(SHAPE)
    w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    w[0, 0, 1, 1] = 3.0
    y = net.conv(net.conv(x, w, pads=(1, 1, 1, 1)), w, pads=(1, 1, 1, 1))
    net.output(net.add([x, y], (1.0, 1.0)))
    bound = network_bound(net, window=None, budget=None)
    assert bound.bound >= 10.0 * (1 - 1e-9)  # x + 9x


# ---------------------------------------------------------------------------------------------
# A linear op registered in one module: the recursion looks through it


class Twice(Op):
    """A toy linear op, y = 2·x, with everything the recursion needs in one class."""

    family = "toy"
    summary = "2 (the toy op of a test)"
    domain = "lipaudit.test"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(2.0, "closed-form")

    def run(self, env: Any, node: Node, args: list[Any]) -> Any:
        return 2 * args[0]

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return Scale.of(2.0)


@pytest.fixture
def twice():
    register(Twice)
    yield Twice
    unregister(Twice)


def _toy_graph() -> Graph:
    w = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)
    return Graph(
        [
            Node("m1", "MatMul", ("x", "w"), ("a",)),
            Node("t", "Twice", ("a",), ("b",), domain="lipaudit.test"),
            Node("m2", "MatMul", ("b", "w"), ("y",)),
        ],
        {"x": Value("x", (1, 6)), "w": Value("w", (6, 6), w), "a": Value("a", (1, 6)), "b": Value("b", (1, 6))}
        | {"y": Value("y", (1, 6))},
        ["x"],
        ["y"],
        opset=17,
        opset_imports={"": 17, "lipaudit.test": 1},
    )


def test_a_toy_linear_op_is_looked_through(twice):
    graph = _toy_graph()
    composed = compose(graph, RuleContext(graph))
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers})
    assert described.barriers == {} and described.linear == 3
    bound = network_bound(described.network, window=None, budget=None)
    w = graph.const("w").astype(np.float64)
    truth = np.linalg.norm(2 * w @ w, 2)
    assert truth * (1 - 1e-9) <= bound.bound <= truth * (1 + 1e-3) < bound.product


def test_a_toy_op_without_a_linear_part_is_a_barrier(twice, monkeypatch):
    monkeypatch.setattr(Twice, "linear_part", Op.linear_part)
    graph = _toy_graph()
    composed = compose(graph, RuleContext(graph))
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers})
    assert "not a linear map" in described.barriers["t"]


def test_a_linear_part_that_lies_is_a_barrier(twice, monkeypatch):
    """The description is checked against the op's run: a toy op that claims 1·x stays a barrier."""
    monkeypatch.setattr(Twice, "linear_part", lambda self, node, ctx: Scale.of(1.0))
    graph = _toy_graph()
    composed = compose(graph, RuleContext(graph))
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers})
    assert "differs" in described.barriers["t"]


def test_an_onnx_transpose_becomes_a_permutation(tmp_path):
    module = Lambda(lambda parts, x: x - x.transpose(-1, -2))
    graph = run_passes(load_model(str(_export(module, SHAPE, tmp_path))).graph)
    composed = compose(graph, RuleContext(graph))
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers})
    ops = [node.op for node in described.network.nodes]
    assert any(isinstance(op, Permutation) and not op.is_identity for op in ops)
