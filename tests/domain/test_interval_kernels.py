"""The numerical kernels of the domain mode against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipaudit.intervals.interval import Interval, product, quotient, reciprocal, square
from lipaudit.intervals.normalize import normalized_range, variance_lower_bound, variance_upper_bound
from lipaudit.intervals.norms import nonnegative_norm_bound
from lipaudit.intervals.slopes import hardswish_slope_sup
from lipaudit.intervals.softmax import log_softmax_range, softmax_range
from lipaudit.ops.activation import GELU, GELU_TANH, MISH, SILU

RNG = np.random.default_rng(0)


def _random_boxes(groups: int, n: int, spread: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    lo = RNG.uniform(-spread, spread, (groups, n))
    return lo, lo + RNG.uniform(0, 2, (groups, n))


def _samples(lo: np.ndarray, hi: np.ndarray, count: int) -> np.ndarray:
    """Random points and random corners of each box, (count, *shape)."""
    u = RNG.uniform(size=(count,) + lo.shape)
    u[: count // 2] = np.round(u[: count // 2])
    return lo + (hi - lo) * u


def test_interval_products_and_quotients_contain_every_sample():
    a = Interval(*_random_boxes(4, 5))
    b = Interval(*_random_boxes(4, 5))
    positive = Interval(np.abs(b.lo) + 0.5, np.abs(b.lo) + 0.5 + (b.hi - b.lo))
    xs, ys, ps = _samples(a.lo, a.hi, 400), _samples(b.lo, b.hi, 400), _samples(positive.lo, positive.hi, 400)
    assert product(a, b).contains(xs * ys)
    assert square(a).contains(xs * xs)
    assert quotient(a, positive).contains(xs / ps)
    assert reciprocal(positive).contains(1 / ps)
    assert not reciprocal(Interval(np.array([-1.0]), np.array([1.0]))).is_finite()


def test_the_smallest_variance_over_a_box_is_exact_and_never_above_what_a_point_reaches():
    lo, hi = _random_boxes(30, 4)
    bound = variance_lower_bound(lo, hi)
    assert np.all(bound <= _samples(lo, hi, 3000).var(axis=-1).min(axis=0) + 1e-12)
    # The minimiser: each entry as close as it can get to the best common value c.
    grid = np.linspace(lo.min(), hi.max(), 20001)
    for row in range(len(lo)):
        gaps = np.maximum(grid[:, None] - hi[row], 0) + np.maximum(lo[row] - grid[:, None], 0)
        reachable = (gaps**2).mean(axis=1).min()
        assert bound[row] == pytest.approx(reachable, rel=1e-6, abs=1e-12)
    assert np.all(variance_upper_bound(lo, hi) >= _samples(lo, hi, 3000).var(axis=-1).max(axis=0))


def test_overlapping_boxes_have_smallest_variance_zero():
    lo = np.array([[0.0, 0.5, -1.0]])
    hi = np.array([[1.0, 2.0, 0.7]])
    assert variance_lower_bound(lo, hi)[0] == 0.0


@pytest.mark.parametrize("centered", [True, False])
def test_normalised_ranges_contain_every_sample(centered):
    lo, hi = _random_boxes(20, 5)
    z_lo, z_hi = normalized_range(lo, hi, 1e-3, centered)
    x = _samples(lo, hi, 2000)
    if centered:
        z = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)
    else:
        z = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-3)
    assert np.all(z >= z_lo - 1e-12) and np.all(z <= z_hi + 1e-12)


def test_softmax_ranges_contain_every_sample_and_are_reached_at_the_worst_corners():
    lo, hi = _random_boxes(10, 6)
    p_lo, p_hi = softmax_range(lo, hi)
    x = _samples(lo, hi, 2000)
    p = torch.softmax(torch.as_tensor(x), -1).numpy()
    assert np.all(p >= p_lo) and np.all(p <= p_hi)
    log_lo, log_hi = log_softmax_range(lo, hi)
    assert np.all(np.log(p) >= log_lo) and np.all(np.log(p) <= log_hi)
    # Entry 0 at its low end with the others high reaches the lower bound (to the margin).
    worst = hi.copy()
    worst[:, 0] = lo[:, 0]
    reached = torch.softmax(torch.as_tensor(worst), -1).numpy()[:, 0]
    np.testing.assert_allclose(p_lo[:, 0], reached, rtol=1e-5)


def test_softmax_ranges_survive_unbounded_and_masked_scores():
    lo = np.array([[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, 0.0]])
    hi = np.array([[np.inf, 0.5, 1.0], [-np.inf, -np.inf, 0.0]])
    p_lo, p_hi = softmax_range(lo, hi)
    assert np.all((p_lo >= 0) & (p_hi <= 1) & (p_lo <= p_hi))
    assert p_hi[1, 0] == 0.0 and p_lo[1, 2] == pytest.approx(1.0)


def test_the_norm_bound_of_a_matrix_known_entrywise_is_certified_and_tight():
    for shape in [(5, 7), (3, 4, 6), (1, 1), (8, 2)]:
        m = RNG.uniform(0, 2, shape)
        bound = nonnegative_norm_bound(m)
        signs = RNG.choice([-1.0, 1.0], size=(50,) + shape)
        worst = np.linalg.norm(signs * m, ord=2, axis=(-2, -1)).max(axis=0)
        exact = np.linalg.norm(m, ord=2, axis=(-2, -1))
        assert np.all(bound >= exact) and np.all(bound >= worst)
        assert np.all(bound <= exact * (1 + 1e-6))
    assert nonnegative_norm_bound(np.zeros((3, 3))) == 0.0
    assert np.isinf(nonnegative_norm_bound(np.array([[np.inf, 1.0]])))


@pytest.mark.parametrize("profile", [GELU, GELU_TANH, SILU, MISH], ids=["gelu", "gelu-tanh", "silu", "mish"])
def test_the_slope_sup_and_the_range_on_an_interval_bound_a_dense_scan_and_are_tight(profile):
    lo = RNG.uniform(-8, 6, 300)
    hi = lo + RNG.exponential(1.5, 300)
    sup = profile.slope_sup(lo, hi)
    value = profile.value_range(Interval(lo, hi))
    for i in range(len(lo)):
        x = torch.linspace(lo[i], hi[i], 4001, dtype=torch.float64, requires_grad=True)
        y = profile.f(x)
        (slope,) = torch.autograd.grad(y.sum(), x)
        seen = float(slope.abs().max())
        assert seen <= sup[i] and sup[i] <= seen + 1e-5, (lo[i], hi[i], seen, sup[i])
        assert value.lo[i] <= float(y.detach().min()) and float(y.detach().max()) <= value.hi[i]
    assert profile.slope_sup(np.array([-np.inf]), np.array([np.inf]))[0] < 1.13


def test_hardswish_slope_sup_matches_a_dense_scan():
    lo = RNG.uniform(-6, 5, 200)
    hi = lo + RNG.exponential(1.5, 200)
    sup = hardswish_slope_sup(lo, hi)
    for i in range(len(lo)):
        x = np.linspace(lo[i], hi[i], 2001)
        slope = np.where(x < -3, 0.0, np.where(x > 3, 1.0, (2 * x + 3) / 6))
        assert np.abs(slope).max() <= sup[i] + 1e-12
