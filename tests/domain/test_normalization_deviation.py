"""The LayerNorm / RMSNorm interval-Jacobian rule against independent truth, on single-op models and
short chains built here with various γ, ε, normalised axes and box widths (boxes where the smallest
variance reaches 0 included): the figure is at least ‖J(x)‖₂ (autograd, float64) at corners and
random points of the box, ‖J(x) − C‖₂ stays within the enclosure's deviation there (the rule bounds
it by max|γ|/√(σ²_min + ε) times the incoming deviation, plus what the box adds to the centre), and
the enclosure holds finite-difference Jacobians."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lipaudit.domain import prepare_domain
from lipaudit.domain.jacobian import interval_jacobian_bound
from lipaudit.domain.local import tightest_jacobian_bound
from lipaudit.intervals.interval import Interval
from lipaudit.intervals.jacobian import Jac, JacobianContext
from lipaudit.intervals.normalize import grouped, mean_square_bounds, variance_lower_bound
from lipaudit.ops import RuleContext, resolve

from ._errors import errored_jacobians
from ._models import analysed, export
from .test_interval_jacobian import _enclosure_misses, _points


class _LayerNorm(nn.Module):
    def __init__(self, shape, epsilon: float, gamma_scale: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(shape, eps=epsilon)
        with torch.no_grad():
            self.norm.weight.copy_(gamma_scale * torch.randn(self.norm.weight.shape))
            self.norm.bias.copy_(torch.randn(self.norm.bias.shape))

    def forward(self, x):
        return self.norm(x)


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, epsilon: float, gamma_scale: float) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.weight = nn.Parameter(gamma_scale * torch.randn(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.epsilon) * self.weight


class _Chain(nn.Module):
    """Linear → GELU → norm → Linear → norm: the second norm meets an incoming deviation."""

    def __init__(self, dim: int, rms: bool) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(dim, dim), nn.Linear(dim, dim)
        make = (lambda: _RMSNorm(dim, 1e-5, 1.5)) if rms else (lambda: _LayerNorm(dim, 1e-5, 1.5))
        self.norm1, self.norm2 = make(), make()

    def forward(self, x):
        return self.norm2(self.second(self.norm1(F.gelu(self.first(x)))))


def _flat_row(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A centre whose first row is constant: on any box around it that row's variance reaches 0."""
    centre = np.random.default_rng(seed).normal(size=shape)
    centre[..., 0, :] = 0.3
    return centre


CASES = {
    # name: (model, input shape, radius, centre maker)
    "layernorm_small_box": (lambda: _LayerNorm(6, 1e-5, 1.0), (1, 3, 6), 1e-3, None),
    "layernorm_wide_box_large_gamma": (lambda: _LayerNorm(6, 1e-5, 4.0), (1, 3, 6), 0.3, None),
    "layernorm_two_axes_large_epsilon": (lambda: _LayerNorm((3, 6), 0.1, 1.0), (1, 3, 6), 0.05, None),
    "layernorm_variance_reaches_zero": (lambda: _LayerNorm(6, 1e-3, 1.0), (1, 3, 6), 0.05, _flat_row),
    "rmsnorm_small_box": (lambda: _RMSNorm(6, 1e-5, 1.0), (1, 3, 6), 1e-3, None),
    "rmsnorm_wide_box": (lambda: _RMSNorm(6, 1e-6, 2.0), (1, 3, 6), 0.5, None),
    "layernorm_chain": (lambda: _Chain(6, rms=False), (1, 3, 6), 0.02, None),
    "layernorm_chain_tiny_box": (lambda: _Chain(6, rms=False), (1, 3, 6), 1e-4, None),
    "rmsnorm_chain": (lambda: _Chain(6, rms=True), (1, 3, 6), 0.02, None),
}


def _jacobian(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    """(n0, n_out), n0-first like the enclosures."""
    point = torch.as_tensor(x, dtype=torch.float64)
    return torch.autograd.functional.jacobian(model, point).reshape(-1, point.numel()).T


def _case(name: str, tmp_path: Path):
    build, shape, radius, make_centre = CASES[name]
    torch.manual_seed(3)
    module = build().eval()
    graph = analysed(export(module, shape, tmp_path))
    centre = (make_centre or (lambda s, seed: np.random.default_rng(seed).normal(size=s)))(shape, 4)
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    return module.double(), graph, centre, radius, domain


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_figure_and_the_deviation_hold_the_jacobians_sampled_in_the_box(name: str, tmp_path: Path) -> None:
    module, graph, centre, radius, domain = _case(name, tmp_path)
    found = interval_jacobian_bound(graph, domain.bounds, domain.ranges)
    tightest = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
    enclosures = [found.enclosures[graph.outputs[0]], tightest.enclosures[graph.outputs[0]]]
    assert math.isfinite(found.upper_bound) and all(math.isfinite(e.deviation) for e in enclosures)
    for x in _points(centre, radius, 16, 7):
        jacobian = _jacobian(module, x)
        norm = float(torch.linalg.matrix_norm(jacobian, ord=2))
        assert norm <= found.upper_bound
        assert norm <= tightest.upper_bound
        for enclosure in enclosures:  # the rules' own deviation, and the second run's (lipaudit.domain.deviation)
            distance = jacobian - enclosure.centre.reshape(centre.size, -1)
            assert float(torch.linalg.matrix_norm(distance, ord=2)) <= enclosure.deviation


@pytest.mark.parametrize("name", ["layernorm_wide_box_large_gamma", "layernorm_variance_reaches_zero", "rmsnorm_chain"])
def test_the_enclosure_holds_finite_differences(name: str, tmp_path: Path) -> None:
    _, graph, centre, radius, domain = _case(name, tmp_path)
    found = interval_jacobian_bound(graph, domain.bounds, domain.ranges)
    assert _enclosure_misses(found.enclosures[graph.outputs[0]], graph, centre, radius) == 0


def _core(module: nn.Module, node_type: str):
    """The function the graph's normalisation node computes, in float64."""
    if node_type == "LayerNormalization":
        return module.norm
    return lambda u: u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + module.epsilon)


def _smallest_statistic(node_type: str, box: Interval, shape, axes) -> np.ndarray:
    lo, hi = grouped(box.broadcast_to(shape), shape, axes)
    return variance_lower_bound(lo, hi) if node_type == "LayerNormalization" else mean_square_bounds(lo, hi)[0]


@pytest.mark.parametrize("with_centre", [False, True])
@pytest.mark.parametrize(
    "name",
    ["layernorm_small_box", "layernorm_two_axes_large_epsilon", "layernorm_variance_reaches_zero", "rmsnorm_wide_box"],
)
def test_the_rule_carries_an_incoming_deviation_by_the_ops_norm(name: str, with_centre: bool, tmp_path: Path) -> None:
    """The rule alone, on an input Jacobian C ± R with ‖J − C‖₂ ≤ d: at points u of the box and J
    chosen to meet D(u)'s largest singular direction (and at random), D(u)J stays in the enclosure
    and within its deviation; with C = 0 the deviation is max|γ|/√(σ²_min + ε)·d and no more."""
    module, graph, centre, _, domain = _case(name, tmp_path)
    node = next(n for n in graph.nodes if n.op_type in ("LayerNormalization", "Normalize"))
    name_in = node.inputs[0]
    assert name_in == graph.inputs[0]
    shape, n0, d = centre.shape, 4, 0.5
    generator = torch.Generator().manual_seed(5)
    c = 0.3 * torch.randn((n0, *shape), generator=generator, dtype=torch.float64) if with_centre else None
    c = c if c is not None else torch.zeros((n0, *shape), dtype=torch.float64)
    box = domain.ranges[name_in]
    jctx = JacobianContext(
        RuleContext(graph, ranges={name_in: box}),
        {name_in: Interval(centre, centre)},
        {name_in: Jac(c, torch.ones_like(c), d)},
        torch.full((n0,), 1e6, dtype=torch.float64),  # no centred-form narrowing: u is anywhere in the box
    )
    out = resolve(node, graph.opset_of(node)).jacobian(node, jctx)[0]
    core = _core(module, node.op_type)
    c_flat, out_centre = c.reshape(n0, -1), out.centre.reshape(n0, -1)
    low, high = (out.centre - out.radius).reshape(n0, -1), (out.centre + out.radius).reshape(n0, -1)
    worst = 0.0
    points = _points(centre, float(np.max(box.hi - centre)), 12, 9)
    for jacobian in errored_jacobians(core, points, box, c_flat, d, generator):
        distance = float(torch.linalg.matrix_norm(jacobian - out_centre, ord=2))
        worst = max(worst, distance)
        assert distance <= out.deviation
        slack = 1e-9 * (1 + jacobian.abs())
        assert bool(torch.all(jacobian >= low - slack) and torch.all(jacobian <= high + slack))
    if not with_centre:
        assert worst > 0.5 * out.deviation  # the sampled errors come near the bound: the check has teeth
        _, axes = (shape, tuple(range(len(shape) - (2 if "two_axes" in name else 1), len(shape))))
        smallest = _smallest_statistic(node.op_type, box, shape, axes)
        gamma = module.norm.weight.abs().max().item() if node.op_type == "LayerNormalization" else 1.0
        assert out.deviation <= gamma * d / math.sqrt(float(smallest.min()) + module_epsilon(module)) * (1 + 1e-6)


def module_epsilon(module: nn.Module) -> float:
    return module.norm.eps if isinstance(module, _LayerNorm) else module.epsilon
