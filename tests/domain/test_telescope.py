"""The chain of segments' centres (lipaudit.domain.telescope) against independent truth: on random
matrices every product of links C_i + E_i with ‖E_i‖₂ ≤ δ_i (random and aligned errors) has norm at
most the chain's figure, which is never above the product of the links' figures; and on one- and
two-block transformers the network figure is at least ‖J(x)‖₂ (autograd) at corners and random
points of the box (on two blocks and a small box the chain is the figure, 4× below the whole pass's);
a segment bounded on the image of the box (the whole pass's ranges, no centred form) holds its
Jacobians and values at images of points of the box."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit.domain import prepare_domain, telescope
from lipaudit.domain.local import tightest_jacobian_bound
from lipaudit.domain.propagate import value_ranges
from lipaudit.domain.segments import fork_cuts, subgraph
from lipaudit.domain.telescope import chain_figures
from lipaudit.execute.executor import GraphInterpreter

from ._models import analysed
from .test_interval_jacobian import _jacobian_norm, _points, _pt2
from .test_segments_affine import _Block, _BlockStack


def _links(sizes: list[int], seed: int) -> tuple[list[torch.Tensor], list[float]]:
    generator = torch.Generator().manual_seed(seed)
    centres = [torch.randn(a, b, generator=generator, dtype=torch.float64) for a, b in zip(sizes, sizes[1:])]
    deviations = [float(0.3 * torch.rand(1, generator=generator)) for _ in centres]
    return centres, deviations


def _error(shape, size: float, generator, aligned: torch.Tensor | None = None) -> torch.Tensor:
    """A matrix of norm ``size``: random, or rank one along the top singular vectors of ``aligned``."""
    if aligned is not None:
        u, _, vh = torch.linalg.svd(aligned)
        return size * torch.outer(u[:, 0], vh[0])
    random = torch.randn(shape, generator=generator, dtype=torch.float64)
    return size * random / torch.linalg.matrix_norm(random, ord=2)


@pytest.mark.parametrize("seed", range(4))
def test_every_product_of_links_in_their_balls_is_within_the_chain_figure(seed: int) -> None:
    sizes = [5, 7, 6, 4, 3]
    centres, deviations = _links(sizes, seed)
    figures = chain_figures(centres, deviations)
    generator = torch.Generator().manual_seed(100 + seed)
    for trial in range(40):
        links = []
        for c, d in zip(centres, deviations):
            aligned = c if trial % 2 else None  # errors along each centre's own top direction
            links.append(c + _error(c.shape, d, generator, aligned))
        product = links[0]
        for j, link in enumerate(links[1:], start=1):
            product = product @ link
            assert float(torch.linalg.matrix_norm(product, ord=2)) <= figures[j]
    naive = math.prod(float(torch.linalg.matrix_norm(c, ord=2)) + d for c, d in zip(centres, deviations))
    assert figures[-1] <= naive * (1 + 1e-9)
    assert figures[0] >= float(torch.linalg.matrix_norm(centres[0], ord=2)) + deviations[0]


def test_a_known_prefix_figure_is_used_and_exact_links_give_the_product_of_centres() -> None:
    centres, deviations = _links([4, 5, 3], 7)
    plain = chain_figures(centres, deviations)
    known = chain_figures(centres, deviations, [plain[0] / 2, math.inf])
    assert known[0] == plain[0] / 2 and known[1] < plain[1]
    exact = chain_figures(centres, [0.0, 0.0])[-1]
    assert exact == pytest.approx(float(torch.linalg.matrix_norm(centres[0] @ centres[1], ord=2)), rel=1e-8)


def test_a_deep_chain_tries_few_splits_and_holds_its_products(monkeypatch) -> None:
    """40 pieces with links of up to 4 pieces: trying every split would mean ~10¹¹ ways; past
    MAX_SPLITS each link extends its prefix's best split, and the figures still hold every product
    of links in their balls."""
    pieces, sizes = 40, [3] * 41
    centres, deviations = _links(sizes, 11)
    links = {}
    for a in range(pieces):
        for b in range(a + 1, min(pieces, a + 4) + 1):
            product = centres[a]
            for c in centres[a + 1 : b]:
                product = product @ c
            # ‖Π(C + E) − ΠC‖ ≤ Π(‖C‖ + δ) − Π‖C‖
            norms = [float(torch.linalg.matrix_norm(c, ord=2)) for c in centres[a:b]]
            spread = math.prod(n + d for n, d in zip(norms, deviations[a:b])) - math.prod(norms)
            links[(a, b)] = (product, spread * (1 + 1e-9))
    calls = []
    real = telescope._chained
    monkeypatch.setattr(telescope, "_chained", lambda *args: calls.append(1) or real(*args))
    figures, _ = telescope.best_chains(links, pieces)
    assert len(calls) < 10_000
    generator = torch.Generator().manual_seed(5)
    for _ in range(10):
        product = torch.eye(3, dtype=torch.float64)
        for j, (c, d) in enumerate(zip(centres, deviations)):
            product = product @ (c + _error(c.shape, d, generator))
            assert float(torch.linalg.matrix_norm(product, ord=2)) <= figures[j]


class _OneBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.block = nn.Linear(4, 8), _Block()
        self.norm, self.head = nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.norm(self.block(self.embed(x))).mean(dim=1))


def _figures(module: nn.Module, radius: float, folder: Path) -> tuple[float, float, float, bool]:
    """(the largest ‖J(x)‖₂ seen in the box, the network figure, the whole pass's, whether it is the chain)."""
    graph = analysed(_pt2(module, (1, 4, 4), folder))
    centre = np.random.default_rng(2).normal(size=(1, 4, 4))
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    found = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
    whole = tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    seen = max(_jacobian_norm(module, x) for x in _points(centre, radius, 16, 3))
    return seen, found.upper_bound, whole.upper_bound, bool(found.chain and not found.segments)


@pytest.mark.parametrize("radius", [1e-3, 0.03])
def test_the_network_figure_of_a_one_block_transformer_holds_the_jacobians_in_the_box(
    radius: float, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    seen, found, whole, _ = _figures(_OneBlock().eval(), radius, tmp_path)
    assert seen <= found <= whole


@pytest.mark.slow
def test_on_two_blocks_the_chain_of_centres_wins_on_a_small_box_and_holds_the_jacobians(tmp_path: Path) -> None:
    torch.manual_seed(1)
    seen, found, whole, chained = _figures(_BlockStack().eval(), 1e-3, tmp_path)
    assert chained
    assert seen <= found < whole / 4
    assert found < 2.5 * seen


def test_a_segment_bounded_on_the_image_of_the_box_holds_its_jacobians_there(tmp_path: Path) -> None:
    """A piece after the first reads the whole pass's ranges (they hold on the image of B only) and
    no centred form: at images f₁(x) of points of B its Jacobian is in its enclosure, within δ of
    the centre, and every value inside it is in its range."""
    torch.manual_seed(1)
    module = _OneBlock().eval()
    graph = analysed(_pt2(module, (1, 4, 4), tmp_path))
    centre, radius = np.random.default_rng(2).normal(size=(1, 4, 4)), 0.02
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    whole = tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    cuts = fork_cuts(graph)
    first, last = cuts[1], cuts[2]
    part = subgraph(graph, first, last)
    box = {first: (whole.ranges[first].lo, whole.ranges[first].hi)}
    inside = {name: r for name, r in whole.ranges.items() if name in part.values}
    found = tightest_jacobian_bound(part, box, value_ranges(part, box), segments=False, image=inside)
    enclosure = found.enclosures[last]
    n0 = enclosure.directions
    low = (enclosure.centre - enclosure.radius).reshape(n0, -1)
    high = (enclosure.centre + enclosure.radius).reshape(n0, -1)
    run, part_run = GraphInterpreter(graph, dtype=torch.float64), GraphInterpreter(part, dtype=torch.float64)
    names = [name for name in found.ranges if name in part.values and name != first]
    for x in _points(centre, radius, 12, 4):
        y = run.run({graph.inputs[0]: torch.as_tensor(x)}, keep=[first])[first].detach()
        values = part_run.run({first: y}, keep=names)
        for name in names:
            assert found.ranges[name].contains(values[name].numpy()), name
        jacobian = torch.autograd.functional.jacobian(lambda t: part_run.run({first: t})[last], y)
        jacobian = jacobian.reshape(-1, y.numel()).T
        slack = 1e-9 * (1 + jacobian.abs())
        assert bool(torch.all(jacobian >= low - slack) and torch.all(jacobian <= high + slack))
        distance = float(torch.linalg.matrix_norm(jacobian - enclosure.centre.reshape(n0, -1), ord=2))
        assert distance <= enclosure.deviation
