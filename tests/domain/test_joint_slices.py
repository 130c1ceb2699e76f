"""The query, key and value slices of one fused projection carry one deviation into attention
(lipaudit.domain.selections), checked against autograd: at corners, random points and points found
by gradient ascent on ‖J(x) − C‖₂ inside the box, the attention output's Jacobian stays within the
deviation of its enclosure, and the whole block's within its figure."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit.domain import deviation, prepare_domain
from lipaudit.domain.deviation import OpFactorDeviation
from lipaudit.domain.jacobian import interval_jacobian_bound
from lipaudit.domain.local import tightest_jacobian_bound
from lipaudit.domain.selections import Selection, shared_deviation
from lipaudit.load import load_model
from lipaudit.passes import run_passes


class FusedAttention(nn.Module):
    """x ↦ LayerNorm → one QKV projection → 2 heads of attention (→ projection + residual)."""

    def __init__(self, dim: int = 8, heads: int = 2, residual: bool = True) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.heads, self.residual = heads, residual
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attended = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), -1) @ v
        merged = attended.transpose(1, 2).reshape(b, n, d)
        return x + self.proj(merged) if self.residual else merged


class Inner(nn.Module):
    """The same function with scaled_dot_product_attention, so that the export keeps one Attention op."""

    def __init__(self, outer: FusedAttention) -> None:
        super().__init__()
        self.outer = outer

    def forward(self, x):
        o = self.outer
        b, n, d = x.shape
        qkv = o.qkv(o.norm(x)).reshape(b, n, 3, o.heads, d // o.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        merged = attended.transpose(1, 2).reshape(b, n, d)
        return x + o.proj(merged) if o.residual else merged


SHAPE = (1, 4, 8)


def _graph(module: FusedAttention, folder: Path):
    path = folder / "model.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(Inner(module).eval(), (torch.zeros(SHAPE),)), str(path))
    return run_passes(load_model(str(path)).graph)


def _centre() -> np.ndarray:
    return np.random.default_rng(5).normal(size=SHAPE)


def _points(module: nn.Module, centre: np.ndarray, radius: float, target, seed: int = 0):
    """Corners, random points, and the ends of gradient ascent on ``target(J(x))`` inside the box."""
    fn = module.double().eval()
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(centre, dtype=torch.float64)
    for k in range(10):
        if k < 3:
            yield c + radius * torch.as_tensor(rng.choice([-1.0, 1.0], size=SHAPE))
        else:
            yield c + radius * (2 * torch.rand(SHAPE, generator=generator, dtype=torch.float64) - 1)
    for start in range(3):
        step = radius * (2 * torch.rand(SHAPE, generator=generator, dtype=torch.float64) - 1)
        step = step.sign() * radius if start == 0 else step
        step.requires_grad_(True)
        for _ in range(12):
            jacobian = torch.autograd.functional.jacobian(fn, c + step, create_graph=True).reshape(-1, c.numel())
            value = target(jacobian)
            (grad,) = torch.autograd.grad(value, step)
            with torch.no_grad():
                step += 0.25 * radius * grad.sign()
                step.clamp_(-radius, radius)
            yield (c + step).detach()


def _jacobian(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(module.double().eval(), x).reshape(-1, x.numel())


@pytest.mark.slow
def test_the_three_slices_are_found_and_the_attention_deviation_holds_inside_the_box(
    tmp_path: Path, monkeypatch
) -> None:
    module = FusedAttention(residual=False)
    graph = _graph(module, tmp_path)
    centre, radius = _centre(), 0.02
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    hook = OpFactorDeviation()
    found = interval_jacobian_bound(graph, domain.bounds, domain.ranges, hooks=hook)
    attention = next(node for node in graph.nodes if node.op_type == "Attention")
    names = list(dict.fromkeys(graph.variable_inputs(attention)))
    assert len(names) == 3
    assert math.isfinite(shared_deviation(names, hook.selections))
    jac = found.enclosures[graph.outputs[0]]
    monkeypatch.setattr(deviation, "shared_deviation", lambda *args: math.inf)
    apart = interval_jacobian_bound(graph, domain.bounds, domain.ranges, hooks=OpFactorDeviation())
    assert jac.deviation < apart.enclosures[graph.outputs[0]].deviation  # the shared deviation is what gave it
    centre_matrix = jac.centre.reshape(jac.directions, -1)
    x0 = torch.as_tensor(centre, dtype=torch.float64)
    reference = _jacobian(module, x0)
    worst = 0.0
    for x in _points(module, centre, radius, lambda j: torch.linalg.matrix_norm(j - reference, 2)):
        error = _jacobian(module, x).T - centre_matrix  # (inputs, outputs), as the enclosure
        worst = max(worst, float(torch.linalg.matrix_norm(error, 2)))
    assert worst <= jac.deviation
    assert worst > 0.0


@pytest.mark.slow
def test_the_block_figure_holds_every_jacobian_found_in_the_box(tmp_path: Path) -> None:
    module = FusedAttention(residual=True)
    graph = _graph(module, tmp_path)
    centre = _centre()
    for radius, gap in ((0.01, 3.0), (0.05, 30.0)):
        domain = prepare_domain(graph, None, around=[centre], radius=radius)
        assert domain is not None
        figure = tightest_jacobian_bound(graph, domain.bounds, domain.ranges).upper_bound
        seen = max(
            float(torch.linalg.matrix_norm(_jacobian(module, x), 2))
            for x in _points(module, centre, radius, lambda j: torch.linalg.matrix_norm(j, 2), seed=1)
        )
        assert seen <= figure
        assert figure < gap * seen  # not vacuous


def test_slices_that_overlap_or_come_from_two_values_share_no_deviation() -> None:
    take = lambda parent, d, *idx: Selection(parent, d, torch.tensor(idx))  # noqa: E731
    disjoint = {"q": take("u", 2.0, 0, 1), "k": take("u", 2.0, 2, 3), "v": take("u", 2.0, 4, 5)}
    assert shared_deviation(["q", "k", "v"], disjoint) == 2.0
    overlapping = {"q": take("u", 2.0, 0, 1), "k": take("u", 2.0, 1, 2)}
    assert shared_deviation(["q", "k"], overlapping) == math.inf
    two_parents = {"q": take("u", 2.0, 0, 1), "k": take("w", 2.0, 2, 3)}
    assert shared_deviation(["q", "k"], two_parents) == math.inf
    assert shared_deviation(["q", "x"], disjoint) == math.inf  # x takes no entries of u
