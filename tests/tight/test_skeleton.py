"""Composite convolutions on grids smaller than their kernels (the crop to reachable taps), and the
skeletons a dry run builds (conv_maps.ConvMap.skeleton): the same terms as the maps with values."""

import math

import pytest
import torch

from lipaudit.tight import Network, network_bound, recursion
from lipaudit.tight.blank import Blank
from lipaudit.tight.chain import ChainBuilder
from lipaudit.tight.conv_maps import ConvMap
from lipaudit.tight.recursion import targets
from lipaudit.tight.region import window_region
from tests.tight._tight_helpers import sigma, window_jacobians
from tests.tight.test_maps import _conv_net


def _small_grid_net(seed: int) -> Network:
    """7×7 and 5×5 kernels on 3×3, 2×2 and 1×1 grids, depthwise and strided, a residual Add and a
    concat: most taps of every composite kernel read only the zeros around a grid."""
    g = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) / math.sqrt(math.prod(s[1:]))  # noqa: E731
    net = Network()
    x = net.input((1, 4, 3, 3))
    a = net.conv(x, w(4, 1, 7, 7), pads=(3, 3, 3, 3), groups=4)
    a = net.activation(a, "gelu")
    b = net.conv(a, w(8, 4, 1, 1))
    b = net.activation(b, "relu")
    c = net.conv(b, w(4, 8, 1, 1))
    s = net.add([x, c], (1.0, 0.5))
    d = net.conv(s, w(6, 4, 5, 5), strides=(2, 2), pads=(2, 2, 2, 2))  # 3×3 → 2×2
    d = net.activation(d, "tanh")
    e = net.conv(d, w(6, 1, 7, 7), pads=(3, 3, 3, 3), groups=6)
    e = net.activation(e, "relu")
    f = net.conv(e, w(5, 6, 5, 5), strides=(2, 2), pads=(2, 2, 2, 2))  # 2×2 → 1×1
    f = net.activation(f, "gelu")
    h = net.conv(f, w(5, 5, 3, 3), pads=(1, 1, 1, 1))
    k = net.conv(f, w(3, 5, 7, 7), pads=(3, 3, 3, 3))
    cat = net.concat([h, k], axis=1)
    cat = net.activation(cat, "relu")
    out = net.conv(cat, w(2, 8, 3, 3), pads=(1, 1, 1, 1))
    net.output(out)
    return net


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("window", [2, None])
def test_cropped_kernels_are_the_materialised_map(seed, window):
    """Every composite convolution on the small grids is the autograd Jacobian, entry by entry; its
    kernel has no more taps than the grids let it read; its norm bounds σ_max."""
    net = _small_grid_net(seed)
    conv = ChainBuilder(net, dense_limit=0)
    exact_maps = 0
    for u in sorted(targets(net)):
        jacobians, region = window_jacobians(net, u, window)
        for s, matrix in jacobians.items():
            truth = sigma(matrix)
            terms = conv.propagate(s, u, region.inside)
            assert conv.bound(terms) >= truth * (1 - 1e-9)
            if len(terms) == 1 and terms[0].anchor == s and isinstance(terms[0].map, ConvMap):
                m = terms[0].map
                columns = m.as_dense().reshape(matrix.shape[1], -1).T
                assert torch.allclose(columns, matrix, atol=1e-12)
                assert m.exact_norm() >= truth * (1 - 1e-12)
                for part in m.parts:
                    if part.core is not None:  # reach: S_anchor + σ·(S_out − 1) taps at most
                        for axis, taps in enumerate(part.core.shape[2:]):
                            reach = m.anchor_shape[2 + axis] + m.stride[axis] * (m.shape[2 + axis] - 1)
                            assert taps <= reach
                exact_maps += 1
    assert exact_maps > 5
    assert conv.refused == 0


def _skeleton_matches(net: Network, window: int | None) -> int:
    real = ChainBuilder(net, dense_limit=0)
    blank = ChainBuilder(net, dense_limit=0)
    blank.shape_only = True
    real.measure = blank.measure = False  # as in a dry run: collapses take the product figure
    compared = 0
    for u in sorted(targets(net)):
        region = window_region(net, u, window)
        for s in region.sources:
            made = real.propagate(s, u, region.inside)
            skeleton = blank.propagate(s, u, region.inside)
            assert [t.anchor for t in made] == [t.anchor for t in skeleton]
            assert [t.weight for t in made] == pytest.approx([t.weight for t in skeleton], rel=1e-12)
            for a, b in zip(made, skeleton):
                assert type(a.map) is type(b.map)
                assert a.map.cheap == pytest.approx(b.map.cheap, rel=1e-12)
                assert a.map.improvable == b.map.improvable
                if isinstance(a.map, ConvMap):
                    assert isinstance(b.map, ConvMap) and b.map.skeleton and not a.map.skeleton
                    assert b.map.norm() == b.map.cheap  # never measured
                    assert a.map.cost() == b.map.cost()
                    assert a.map.stride == b.map.stride and a.map.shape == b.map.shape
                    for p, q in zip(a.map.parts, b.map.parts, strict=True):
                        assert p.offset == q.offset and p.box(a.map.dims) == q.box(a.map.dims)
                        for x, y in ((p.core, q.core), (p.left, q.left), (p.right, q.right)):
                            assert (x is None) == (y is None)
                            if x is not None:
                                assert isinstance(y, Blank) and tuple(x.shape) == tuple(y.shape)
                    compared += 1
    return compared


@pytest.mark.parametrize("window", [1, 2, None])
def test_a_skeleton_has_the_terms_of_the_map(window):
    """A dry run's skeletons have the same terms, parts, shapes, boxes and costs as the maps made
    with values, so the plan it ranks is the plan the measuring sweep finds."""
    compared = _skeleton_matches(_conv_net(0), window) + _skeleton_matches(_small_grid_net(0), window)
    assert compared > 20


def test_budgets_stay_monotone_and_sound_on_small_grids(monkeypatch):
    """With nothing free (so that the plan chooses), a larger allowance never gives a larger
    figure, some allowance gives a figure strictly between the product and the full recursion,
    and the full recursion is above the largest Jacobian σ_max at a few inputs (below Lip)."""
    monkeypatch.setattr(recursion, "FREE_COST", 0.0)
    net = _small_grid_net(3)
    runs = [network_bound(net, budget=None, work=w) for w in (0.0, 1e3, 3e4, 1e5, 3e5)]
    runs.append(network_bound(net, budget=None))
    figures = [r.bound for r in runs]
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(figures, figures[1:]))
    assert figures[0] == runs[0].product  # nothing measured
    assert sum(figures[-1] < f < figures[0] for f in figures) >= 2
    assert figures[-2] == pytest.approx(figures[-1], rel=1e-12)  # 3e5 operations measure all
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        x = torch.randn(1, *net.shape(0), generator=g, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: net.evaluate(v)[0], x)
        assert sigma(jac.reshape(math.prod(net.shape(net.outputs[0])), -1)) <= figures[-1]


def _refused_net(seed: int) -> Network:
    """1×1 → 3×3 (pad 1) → 3×3 (pad 1): the second 3×3 cannot compose (a mask in the way), so the
    chain collapses there over a composite map of two factors, which a collapse may measure."""
    g = torch.Generator().manual_seed(seed)
    net = Network()
    x = net.input((1, 3, 5, 5))
    a = net.conv(x, torch.randn(4, 3, 1, 1, generator=g, dtype=torch.float64))
    a = net.conv(a, torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64), pads=(1, 1, 1, 1))
    a = net.conv(a, torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64), pads=(1, 1, 1, 1))
    a = net.activation(a, "relu")
    net.output(net.conv(a, torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)))
    return net


@pytest.mark.parametrize("make", [_conv_net, _small_grid_net, _refused_net])
def test_unplanned_chains_on_skeletons_give_the_figures_of_chains_with_values(make, monkeypatch):
    """A sweep whose plan measures nothing builds every chain as a skeleton, rebuilt with values
    where a collapse measures what is cheap (here everything is): its figures are those of the same
    sweep with every chain built with values, and below those of collapses that measure nothing."""
    monkeypatch.setattr(recursion, "FREE_COST", 1e12)
    net = make(0)
    chosen = recursion.targets(net)

    def sweep(all_with_values: bool, measure_collapses: bool = True) -> list[float]:
        run = recursion._Sweep(net, chosen, 2, recursion.REFINE_TOL, 0, 2**24, plan=set())
        if all_with_values:
            run._planned_pairs = None  # no pair is unplanned: each is built with values
        if not measure_collapses:
            run.builder.collapse_cost = 0.0
        return run.run()

    found = sweep(False)
    assert found == pytest.approx(sweep(True), rel=1e-12)
    unmeasured = sweep(False, measure_collapses=False)
    assert all(f <= u * (1 + 1e-12) for f, u in zip(found, unmeasured))
    if make is _refused_net:
        assert found[-1] < unmeasured[-1] * (1 - 1e-3)


def test_the_plan_ranks_a_collapse_and_measures_it_once_chosen(monkeypatch):
    """A collapse's measurement is a candidate of the plan like a chain norm: with nothing free,
    an allowance that buys just its maps measures it (the figure drops below the unmeasured one),
    a larger allowance never gives more, and every figure bounds the Jacobians."""
    monkeypatch.setattr(recursion, "FREE_COST", 0.0)
    net = _refused_net(0)
    dry = recursion._Sweep(net, targets(net), 2, recursion.REFINE_TOL, 0, 2**24, plan="collect")
    candidates = dry.candidates(dry.run())
    collapses = [(key, maps) for key, _, maps in candidates if key[2] < 0]
    assert collapses
    price = min(math.fsum(cost for _, cost in maps.values()) for _, maps in collapses)
    runs = [network_bound(net, budget=None, work=w, dense_limit=0) for w in (0.0, price, 10 * price, 1e12)]
    figures = [r.bound for r in runs]
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(figures, figures[1:]))
    assert figures[1] < figures[0] * (1 - 1e-3)
    assert figures[-1] == pytest.approx(network_bound(net, budget=None, dense_limit=0).bound, rel=1e-12)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(1, *net.shape(0), generator=g, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: net.evaluate(v)[0], x)
        assert sigma(jac.reshape(math.prod(net.shape(net.outputs[0])), -1)) <= figures[1]


def test_a_map_shared_by_collapses_is_paid_for_once():
    """_ranked counts a map that an earlier candidate measures as free: two collapses over the same
    map cost one measurement, so an allowance of one buys both."""
    shared, other = object(), object()
    candidates = [
        ((5, 0, -2), 4.0, {id(shared): (shared, 1e12)}),
        ((7, 0, -2), 3.0, {id(shared): (shared, 1e12)}),
        ((7, 0, 0), 2.5, {id(other): (other, 1e12)}),
    ]
    chosen, spent = recursion._select(candidates, 1.5e12)
    assert chosen == {(5, 0, -2), (7, 0, -2)} and spent == 1e12
    assert [key for key, _ in recursion._ranked(candidates)] == [(5, 0, -2), (7, 0, -2), (7, 0, 0)]
