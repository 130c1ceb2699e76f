"""Per-neuron slope ranges on intervals: every difference quotient inside an entry's interval lies in
its [α_i, β_i] (checked against the op's own run on sampled pairs), and the ranges are narrow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipaudit.intervals.interval import Interval
from lipaudit.ir import Graph
from lipaudit.ops import RuleContext
from lipaudit.tight.activations import preset_node
from lipaudit.tight.neuron_slopes import entry_slopes

NAMES = ["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "softsign", "gelu", "gelu_tanh", "silu", "mish", "elu"]
NAMES += ["selu", "hardswish", "hardsigmoid"]


def _intervals(generator: np.random.Generator) -> Interval:
    centre = generator.uniform(-6, 6, size=400)
    width = 10.0 ** generator.uniform(-6, 0.5, size=400)
    return Interval(centre - width, centre + width)


@pytest.mark.parametrize("name", NAMES)
def test_every_quotient_inside_the_interval_lies_in_the_entry_range(name: str) -> None:
    op, node = preset_node(name)
    x = _intervals(np.random.default_rng(0))
    found = entry_slopes(op, node, _ctx(), x)
    assert found is not None
    alpha, beta = found
    low, high = op.slope_range(node)
    assert np.all(low <= alpha) and np.all(alpha <= beta) and np.all(beta <= high)
    f = lambda t: op.run(_env(), node, [t])  # noqa: E731
    generator = torch.Generator().manual_seed(1)
    lo, hi = torch.from_numpy(x.lo), torch.from_numpy(x.hi)
    for _ in range(20):
        s = lo + (hi - lo) * torch.rand(lo.shape, generator=generator, dtype=torch.float64)
        t = lo + (hi - lo) * torch.rand(lo.shape, generator=generator, dtype=torch.float64)
        apart = (s - t).abs() > 1e-9 * (1 + s.abs())
        quotient = ((f(s) - f(t)) / (s - t))[apart].numpy()
        slack = 1e-6 * (1 + np.abs(quotient))
        assert np.all(quotient >= alpha[apart.numpy()] - slack) and np.all(quotient <= beta[apart.numpy()] + slack)


def test_a_relu_on_one_side_is_linear() -> None:
    op, node = preset_node("relu")
    alpha, beta = entry_slopes(op, node, _ctx(), Interval(np.array([0.0, -2.0, -1.0]), np.array([1.0, -0.5, 1.0])))
    assert alpha.tolist() == [1.0, 0.0, 0.0] and beta.tolist() == [1.0, 0.0, 1.0]


def test_smooth_ranges_shrink_with_the_interval() -> None:
    op, node = preset_node("tanh")
    alpha, beta = entry_slopes(op, node, _ctx(), Interval(np.array([0.3]), np.array([0.3 + 1e-6])))
    assert beta[0] - alpha[0] < 1e-5 and abs(beta[0] - 1 / np.cosh(0.3) ** 2) < 1e-5


def _ctx() -> RuleContext:
    return RuleContext(Graph([], {}, [], [], opset=21))


def _env():
    from lipaudit.ops.runtime import Env

    return Env(21, torch.float64, torch.device("cpu"))
