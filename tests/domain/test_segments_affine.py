"""The affine-form ranges and the per-segment interval-Jacobian bound against independent truth:
the ranges hold every value seen inside the box (random points, corners, gradient ascent on single
entries), the centre enclosures hold the float64 run at the centre, the segmented figure is at
least ‖J(x)‖₂ (autograd, float64) at corners and random points of the box, never above the
un-segmented one, and the same on every run; the cut finder cuts residual stacks at their stream
and a plain chain nowhere; a segment's subgraph computes what the whole graph computes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lipaudit import audit
from lipaudit.domain import prepare_domain
from lipaudit.domain.affine import affine_ranges, intersected
from lipaudit.domain.jacobian import interval_jacobian_bound
from lipaudit.domain.local import segment_bounds, tightest_jacobian_bound
from lipaudit.domain.segments import fork_cuts, segmented_bound, subgraph
from lipaudit.execute.executor import GraphInterpreter

from ._containment import assert_ranges_contain_seen
from ._models import TinyViT, analysed, export
from .test_interval_jacobian import _jacobian_norm, _points, _pt2


class _ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.inner = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(2))
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        h = self.stem(x)
        for conv in self.inner:
            h = h + F.gelu(conv(h))
        return self.head(h.flatten(1))


class _Encoders(nn.Module):
    def __init__(self, depth: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True) for _ in range(depth)
        )

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _Block(nn.Module):
    """A pre-norm ViT block (as bench/transformers.py)."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


class _BlockStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(_Block() for _ in range(2))
        self.norm, self.head = nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))


CASES = {
    "mlp": (_mlp, (1, 6), 0.05, "onnx"),
    "residual_cnn": (_ResidualCNN, (1, 2, 5, 5), 0.05, "onnx"),
    "encoder_stack": (_Encoders, (1, 4, 8), 0.01, "pt2"),
    "vit_block_stack": (_BlockStack, (1, 4, 4), 0.01, "pt2"),
}
SLOW = pytest.mark.slow  # tens of seconds on a shared machine: the stacks' segment passes
STACKS = [pytest.param("encoder_stack", marks=SLOW), pytest.param("vit_block_stack", marks=SLOW)]


def _built(case: str, folder: Path):
    build, shape, radius, kind = CASES[case]
    torch.manual_seed(1)
    module = build().eval()
    path = _pt2(module, shape, folder) if kind == "pt2" else export(module, shape, folder)
    return module, analysed(path), shape, radius


def _centre(shape: tuple[int, ...], seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("case", ["mlp", "residual_cnn", *STACKS])
def test_segmented_figure_bounds_the_jacobian_inside_the_box_and_never_exceeds_the_whole(
    case: str, tmp_path: Path
) -> None:
    module, graph, shape, radius = _built(case, tmp_path)
    centre = _centre(shape)
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    found = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
    whole = tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    again = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
    seen = max(_jacobian_norm(module, x) for x in _points(centre, radius, 12, 3))
    assert math.isfinite(found.upper_bound)
    assert seen <= found.upper_bound <= whole.upper_bound
    assert again.upper_bound == found.upper_bound and again.segments == found.segments
    if found.segments:
        product = math.prod(figure for _, _, figure in found.segments)
        assert found.upper_bound >= product
        assert [s[0] for s in found.segments[1:]] == [s[1] for s in found.segments[:-1]]


@pytest.mark.parametrize("case", STACKS)
def test_each_segment_bounds_its_own_jacobian_on_its_box(case: str, tmp_path: Path) -> None:
    """The segments' figures hold on their own: each chosen segment's figure (a link of the chain
    of centres: ‖C‖ + δ), with a box that large, bounds the Jacobian of the segment sampled at the
    images of points of the box."""
    module, graph, shape, _ = _built(case, tmp_path)
    radius = 0.05  # wide enough that the whole-network figure is far above the segments' product
    centre = _centre(shape)
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    whole = tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    # the best product or chain, whether or not it is below the whole pass's figure
    found = segmented_bound(graph, domain.bounds, whole.ranges, segment_bounds(domain.bounds), math.inf)
    assert found is not None
    chosen = found.segments + [(first, last, norm + deviation) for first, last, norm, deviation in found.chain]
    assert chosen, "the stack is cut at its residual stream"
    run = GraphInterpreter(graph, dtype=torch.float64)
    for first, last, figure in chosen:
        part = subgraph(graph, first, last)
        part_run = GraphInterpreter(part, dtype=torch.float64)
        for x in _points(centre, radius, 6, 9):
            y = run.run({graph.inputs[0]: torch.as_tensor(x)}, keep=[first])[first]

            def segment(t: torch.Tensor, part_run=part_run, first=first, last=last) -> torch.Tensor:
                return part_run.run({first: t})[last]

            jacobian = torch.autograd.functional.jacobian(segment, y.detach()).reshape(-1, y.numel())
            assert float(torch.linalg.matrix_norm(jacobian, ord=2)) <= figure


@pytest.mark.parametrize("case", ["mlp", "residual_cnn", "vit_block_stack"])
def test_affine_ranges_hold_every_value_seen_in_the_box(case: str, tmp_path: Path) -> None:
    _, graph, _, _ = _built(case, tmp_path)
    box = (0.1, 0.3)
    domain = prepare_domain(graph, [f"{box[0]}:{box[1]}"])
    assert domain is not None
    found = affine_ranges(graph, domain.bounds, domain.ranges)
    ranges = intersected(domain.ranges, found.ranges)
    assert_ranges_contain_seen(graph, ranges, box, samples=12, targets=6, steps=10)
    # the centre's enclosures hold the float64 run there
    checker = assert_ranges_contain_seen(graph, found.at_centre, (0.2, 0.2), samples=1, targets=0, steps=0)
    assert checker.points > 0

    # and they are narrower than interval arithmetic's somewhere past the first nonlinearity
    def width(interval) -> float:
        return float(np.sum(interval.hi - interval.lo))

    assert any(width(found.ranges[name]) < 0.9 * width(domain.ranges[name]) for name in found.ranges)


def test_affine_ranges_keep_the_second_block_of_a_stack_near_first_order(tmp_path: Path) -> None:
    """On a small box every range is within a few times its first-order width (the centre's
    enclosure no longer grows through each layer, as interval arithmetic's did)."""
    module, graph, shape, _ = _built("vit_block_stack", tmp_path)
    radius = 1e-4
    centre = _centre(shape)
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    found = affine_ranges(graph, domain.bounds, domain.ranges)
    out = graph.outputs[0]
    width = float(np.max(found.ranges[out].hi - found.ranges[out].lo))
    jacobian = torch.autograd.functional.jacobian(module.double(), torch.as_tensor(centre)).reshape(-1, centre.size)
    first_order = float((jacobian.abs().sum(dim=1) * 2 * radius).max())
    assert first_order <= width <= 3 * first_order


def test_cuts_follow_the_residual_stream_and_leave_a_chain_whole(tmp_path: Path) -> None:
    _, stack, _, _ = _built("vit_block_stack", tmp_path)
    cuts = fork_cuts(stack)
    assert cuts[0] == stack.inputs[0] and cuts[-1] == stack.outputs[0]
    assert len(cuts) == 2 + 4  # after the embedding, after each block's attention, after each block
    for name in cuts[1:-1]:
        assert stack.producer(name).op_type == "Add"
    _, chain, _, _ = _built("mlp", tmp_path)
    assert fork_cuts(chain) == []


def test_a_segment_computes_what_the_whole_graph_computes(tmp_path: Path) -> None:
    _, graph, shape, _ = _built("residual_cnn", tmp_path)
    cuts = fork_cuts(graph)
    run = GraphInterpreter(graph, dtype=torch.float64)
    x = torch.as_tensor(_centre(shape))
    values = run.run({graph.inputs[0]: x}, keep=cuts)
    for first, last in zip(cuts, cuts[1:]):
        part = subgraph(graph, first, last)
        assert part.inputs == [first] and part.outputs == [last]
        got = GraphInterpreter(part, dtype=torch.float64).run({first: values[first]})[last]
        assert torch.allclose(got, values[last], rtol=1e-12, atol=1e-12)


def test_affine_ranges_never_lose_against_the_plain_figure(tmp_path: Path) -> None:
    _, graph, shape, radius = _built("vit_block_stack", tmp_path)
    domain = prepare_domain(graph, None, around=[_centre(shape)], radius=radius)
    assert domain is not None
    plain = interval_jacobian_bound(graph, domain.bounds, domain.ranges)
    tightened = tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    assert tightened.upper_bound <= plain.upper_bound * (1 + 1e-9)


def test_the_report_says_why_there_is_no_interval_jacobian_bound(tmp_path: Path, monkeypatch) -> None:
    path = export(TinyViT(dim=8, heads=2, patch=3).eval(), (1, 3, 6, 6), tmp_path)
    import lipaudit.domain.local as engine

    monkeypatch.setattr(engine, "local_jacobian_bound", lambda *args, **kwargs: (None, "some op has no rule"))
    report = audit(str(path), input_range=["0:0.01"], verify=False)
    assert "no interval-Jacobian bound on the box: some op has no rule" in report.notices


def test_the_deviation_from_the_ops_factors_holds_the_jacobians_sampled_in_the_box(tmp_path: Path) -> None:
    """‖J(x) − C‖₂ ≤ the output's deviation (the op-factor rule of lipaudit.domain.deviation) at
    corners and random points, and the deviation is never above the one the rules alone give."""
    torch.manual_seed(1)
    module = TinyViT(dim=8, heads=2, patch=3).eval()
    graph = analysed(export(module, (1, 3, 6, 6), tmp_path))
    centre, radius = _centre((1, 3, 6, 6), 4), 0.002
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    found = tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    enclosure = found.enclosures[graph.outputs[0]]
    plain = interval_jacobian_bound(graph, domain.bounds, domain.ranges).enclosures[graph.outputs[0]]
    assert enclosure.deviation <= plain.deviation
    centre_matrix = enclosure.centre.reshape(centre.size, -1)
    model = module.double()
    for x in _points(centre, radius, 8, 6):
        point = torch.as_tensor(x, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(model, point).reshape(-1, centre.size).T
        assert float(torch.linalg.matrix_norm(jacobian - centre_matrix, ord=2)) <= enclosure.deviation
