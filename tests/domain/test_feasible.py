"""The switching bound's pruning (lipaudit.domain.feasible): pairs of activation settings that no
input of the box reaches, checked against exact reachability (linear programs on one hidden layer)
and against the patterns that sampled inputs do reach."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

import lipaudit.domain.switching as switching
from lipaudit.domain import prepare_domain
from lipaudit.domain.local import tightest_jacobian_bound
from lipaudit.domain.switching import switching_bound

from ._models import analysed, export


def _bound(graph, centre: np.ndarray, radius: float):
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    whole = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
    return switching_bound(graph, domain.bounds, whole.ranges)


def _reachable(w1: torch.Tensor, b1: torch.Tensor, centre: np.ndarray, radius: float, signs: dict[int, float]) -> bool:
    """Exact: some x of the box has sign·(w1 x + b1)_j ≥ 0 for every j given (a linear program)."""
    rows = [-s * w1[j].numpy() for j, s in signs.items()]
    limits = [s * float(b1[j]) for j, s in signs.items()]
    box = [(c - radius, c + radius) for c in centre.reshape(-1)]
    return (
        linprog(np.zeros(len(box)), A_ub=np.array(rows), b_ub=np.array(limits), bounds=box, method="highs").status == 0
    )


def test_an_unreachable_pattern_no_longer_sets_the_figure(tmp_path):
    """Two hidden entries with the same weights and biases ε apart: the second is on wherever the
    first is, so (first on, second off), the pattern with the largest Jacobian, is out of reach."""
    w = torch.tensor([[1.0, 2.0, -1.0]])
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.cat([w, w, torch.tensor([[0.5, -0.5, 1.0]])]))
        model[0].bias.copy_(torch.tensor([-0.05, 0.05, 5.0]))  # the third is always on
        model[2].weight.copy_(torch.tensor([[1.0, -0.5, 0.1], [0.5, -0.25, 0.2]]))
        model[2].bias.zero_()
    graph = analysed(export(model, (1, 3), tmp_path))
    centre, radius = np.zeros((1, 3)), 0.2
    found = _bound(graph, centre, radius)
    assert found is not None and found.entries == 2
    w1 = model[0].weight.double().detach()
    w2 = model[2].weight.double().detach()
    norms = {}
    for first, second in itertools.product((0.0, 1.0), repeat=2):
        d = torch.diag(torch.tensor([first, second, 1.0], dtype=torch.float64))
        norms[first, second] = float(torch.linalg.matrix_norm(w2 @ d @ w1, ord=2))
    reachable = max(v for k, v in norms.items() if k != (1.0, 0.0))
    assert norms[1.0, 0.0] > 1.2 * reachable  # the pruned pattern would have set the figure
    assert reachable <= found.figure <= reachable * (1 + 1e-5)


def test_one_hidden_layer_equals_brute_force_over_reachable_patterns(tmp_path):
    """On one hidden layer reachability is a linear program: the figure is the largest norm over
    the patterns some input of the box reaches, and never below it."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 3))
    graph = analysed(export(model, (1, 4), tmp_path))
    w1, b1 = model[0].weight.double().detach(), model[0].bias.double().detach()
    w2 = model[2].weight.double().detach()
    centre = np.zeros((1, 4))
    spread = w1.abs().sum(1)
    radius = float(torch.sort(b1.abs() / spread).values[6]) * 1.01  # 7 entries may switch
    found = _bound(graph, centre, radius)
    assert found is not None
    low, high = b1 - radius * spread, b1 + radius * spread
    on, switching_entries = (low > 0).double(), torch.nonzero((low < 0) & (high > 0)).flatten().tolist()
    everywhere, reachable = 0.0, 0.0
    for pattern in itertools.product((0.0, 1.0), repeat=len(switching_entries)):
        d = on.clone()
        d[switching_entries] = torch.tensor(pattern, dtype=torch.float64)
        norm = float(torch.linalg.matrix_norm(w2 @ torch.diag(d) @ w1, ord=2))
        everywhere = max(everywhere, norm)
        signs = {j: 1.0 if p else -1.0 for j, p in zip(switching_entries, pattern)}
        if _reachable(w1, b1, centre, radius, signs):
            reachable = max(reachable, norm)
    assert reachable <= found.figure <= everywhere * (1 + 1e-5)


@pytest.mark.parametrize(
    "activation", [nn.ReLU(), nn.LeakyReLU(-0.3), nn.PReLU(4, 0.4)], ids=["relu", "leaky", "prelu"]
)
def test_flagged_pairs_are_never_reached_by_sampled_inputs(tmp_path, activation, monkeypatch):
    """Two hidden layers: every pair of settings flagged as out of reach must not occur together at
    any of 4000 inputs of the box, read from the pre-activations the network really computes."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), activation, nn.Linear(4, 4), activation, nn.Linear(4, 2))
    graph = analysed(export(model, (1, 3), tmp_path))
    seen = {}

    def recording(*args):
        seen["conflict"] = args[-1]
        return original(*args)

    original = switching._vertex_sup
    monkeypatch.setattr(switching, "_vertex_sup", recording)
    centre = np.array([[0.3, -0.2, 0.1]])
    radius = 0.4
    found = _bound(graph, centre, radius)
    assert found is not None
    conflict = seen["conflict"]
    assert bool(conflict.any())  # the check below has something to check
    rng = np.random.default_rng(0)
    points = torch.as_tensor(centre + rng.uniform(-radius, radius, size=(4000, 3)))
    double = model.double()
    with torch.no_grad():
        first = double[0](points)
        second = double[2](double[1](first))
    pre = torch.cat([first, second], dim=1)  # the switches in graph order: layer by layer, entry by entry
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    ranges = tightest_jacobian_bound(graph, domain.bounds, domain.ranges).ranges
    chosen, _ = switching._switching_entries(graph, ranges)
    columns = np.concatenate([e.index + 4 * k for k, e in enumerate(chosen)])
    sides = np.concatenate([e.signs for e in chosen])  # σ per setting
    values = pre[:, columns].numpy()
    assert conflict.shape[0] == len(columns)  # every switch of this MLP reaches the output: all live
    for i, a, j, b in torch.nonzero(conflict).tolist():
        together = (sides[i, a] * values[:, i] >= 0) & (sides[j, b] * values[:, j] >= 0)
        assert not together.any(), (i, a, j, b)
