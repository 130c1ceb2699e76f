"""The switching-vertices bound (lipaudit.domain.switching): around an input where a few ReLU
entries may switch, the largest Jacobian norm over their slopes, against brute force over the
activation patterns and autograd Jacobians inside the box."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit import audit
from lipaudit.domain import prepare_domain
from lipaudit.domain.local import tightest_jacobian_bound
from lipaudit.domain.switching import SwitchingBound, switching_bound

from ._models import analysed, export
from .test_interval_jacobian import _jacobian_norm, _points


def _switching(graph, centre: np.ndarray, radius: float) -> tuple[SwitchingBound | None, float]:
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    whole = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
    return switching_bound(graph, domain.bounds, whole.ranges), whole.upper_bound


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


def _residual_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), _Residual(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
    )


def _mlp(activation: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 12), activation, nn.Linear(12, 10), activation, nn.Linear(10, 3))


def test_one_hidden_layer_equals_brute_force_over_patterns(tmp_path):
    """One hidden ReLU layer: the pre-activations' ranges are exact, so the switching entries are
    exactly those whose range holds 0, and the figure is max over their on/off patterns of
    ‖W2 diag(d) W1‖ (every pattern is a vertex: the figure is that maximum, up to rounding)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 4))
    graph = analysed(export(model, (1, 5), tmp_path))
    w1, b1 = model[0].weight.double().detach(), model[0].bias.double().detach()
    w2 = model[2].weight.double().detach()
    pre = w1 @ torch.zeros(5, dtype=torch.float64) + b1
    # a radius that leaves between 2 and 6 entries able to switch
    spread = w1.abs().sum(1)
    radius = float(torch.sort(pre.abs() / spread).values[3]) * 1.01
    centre = np.zeros((1, 5))
    found, _ = _switching(graph, centre, radius)
    assert found is not None
    low, high = pre - radius * spread, pre + radius * spread
    on, switching = (low > 0).double(), torch.nonzero((low < 0) & (high > 0)).flatten().tolist()
    assert found.entries == len(switching)
    truth = 0.0
    for pattern in itertools.product((0.0, 1.0), repeat=len(switching)):
        d = on.clone()
        d[switching] = torch.tensor(pattern, dtype=torch.float64)
        truth = max(truth, float(torch.linalg.matrix_norm(w2 @ torch.diag(d) @ w1, ord=2)))
    assert truth <= found.figure <= truth * (1 + 1e-5)


@pytest.mark.parametrize(
    "build, shape, radius",
    [
        (lambda: _mlp(nn.ReLU()), (1, 6), 0.05),
        (lambda: _mlp(nn.LeakyReLU(0.2)), (1, 6), 0.05),
        (lambda: _mlp(nn.ReLU()), (1, 6), 0.3),
        (_residual_cnn, (1, 1, 5, 5), 0.02),
    ],
    ids=["relu-mlp", "leaky-mlp", "relu-mlp-wide", "residual-cnn"],
)
def test_bounds_autograd_jacobians_in_the_box(tmp_path, build, shape, radius):
    model = build()
    graph = analysed(export(model, shape, tmp_path))
    centre = np.random.default_rng(2).uniform(-0.5, 0.5, size=shape)
    found, interval = _switching(graph, centre, radius)
    assert found is not None and found.entries > 0
    sampled = max(_jacobian_norm(model, x) for x in _points(centre, radius, 400, seed=5))
    assert sampled <= found.figure
    # tighter than the interval-Jacobian bound wherever few entries switch
    if found.entries <= 14:
        assert found.figure <= interval * (1 + 1e-9)
        assert found.figure <= 1.25 * sampled


def test_no_switching_entry_gives_no_figure(tmp_path):
    graph = analysed(export(_mlp(nn.ReLU()), (1, 6), tmp_path))
    found, _ = _switching(graph, np.random.default_rng(2).uniform(-0.5, 0.5, size=(1, 6)), 1e-9)
    assert found is None


def test_audit_reports_the_switching_figure(tmp_path):
    model = _residual_cnn()
    path = export(model, (1, 1, 5, 5), tmp_path)
    centre = np.random.default_rng(2).uniform(-0.5, 0.5, size=(1, 1, 5, 5)).astype(np.float32)
    report = audit(path, around=centre, radius=0.005)
    assert report.network.method == "switching-vertices"
    assert any("may switch on the box" in notice for notice in report.notices)
    sampled = max(_jacobian_norm(model, x) for x in _points(centre.astype(np.float64), 0.005, 200, seed=7))
    assert sampled <= report.network.upper_bound <= 1.25 * sampled


class _Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.head = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x):
        return self.head(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


@pytest.mark.parametrize(
    "constant", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["random-centre", "tied-windows"]
)  # tied windows: 9 s of branch and bound, in the slow suite
def test_maxpool_windows_switch_soundly(tmp_path, constant):
    """MaxPool windows with several candidates on the box are switches too (output = base +
    δ·(candidate − base)); a constant centre ties every window."""
    model = _Pooled()
    graph = analysed(export(model, (1, 1, 6, 6), tmp_path))
    rng = np.random.default_rng(3)
    centre = np.full((1, 1, 6, 6), 0.3) if constant else rng.uniform(-0.5, 0.5, size=(1, 1, 6, 6))
    radius = 0.01
    found, interval = _switching(graph, centre, radius)
    assert found is not None and found.entries > 0
    sampled = max(_jacobian_norm(model, x) for x in _points(centre, radius, 400, seed=9))
    assert sampled <= found.figure
    assert found.figure <= interval * (1 + 1e-9) or found.entries > 14


def test_maxpool_windows_tied_at_zero_do_not_crowd_out_the_others(tmp_path):
    """After a ReLU most windows of a MaxPool may hold several entries that are 0 all over the box:
    whichever is taken changes nothing, so they are no switches, and the windows that do switch
    still fit (there were over 256 tied candidates here, and the whole pool was left to its
    enclosure: the figure was above the interval-Jacobian bound)."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 9, 3)
    )
    with torch.no_grad():
        model[0].bias.sub_(0.3)  # most entries off
    shape = (1, 1, 6, 6)
    graph = analysed(export(model, shape, tmp_path))
    centre = np.random.default_rng(1).uniform(0, 1, size=shape)
    radius = 0.002
    found, interval = _switching(graph, centre, radius)
    assert found is not None
    sampled = max(_jacobian_norm(model, x) for x in _points(centre, radius, 300, seed=2))
    assert sampled <= found.figure <= interval
    assert found.figure <= 1.05 * sampled


def test_a_switch_feeding_a_layer_norm_keeps_the_norms_whole_variance_range(tmp_path):
    """A ReLU at its kink feeds a LayerNorm whose other inputs are 0.05: the variance reaches 0 in
    the box. The switching pass had narrowed the LayerNorm's inner ranges by the centred form from
    Jacobians that pin the switch at slope 0 (certified 0.645 where two inputs show 272.7; redteam6)."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.LayerNorm(3, eps=1e-5), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.05, 0.05]))
        model[3].weight.copy_(torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.4, -1.0]]))
        model[3].bias.zero_()
    centre = np.zeros((1, 2), np.float32)  # the ReLU sits at its kink
    report = audit(export(model, (1, 2), tmp_path), around=centre, radius=0.1)
    below, above = torch.tensor([[0.0495, 0.0]]), torch.tensor([[0.0505, 0.0]])
    with torch.no_grad():
        pair = float(torch.linalg.vector_norm(model(above) - model(below)) / 0.001)
    assert pair > 250  # where relu(x₀) crosses the others, the variance is near 0
    assert report.network.certified and report.network.upper_bound >= pair
