"""lipaudit.sdp against independent truth: autograd Jacobians, enumerated ReLU patterns, the product
of norms, cvxpy's optimum of the same program, and the certificate's refusal below the truth."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from lipaudit.sdp import certify, from_mlp, from_residual_mlp, product_figure, sdp_bound
from lipaudit.sdp.matrix import Blocks, SchurObjective, constraint_matrix
from lipaudit.sdp.optimise import initial_multipliers, minimise
from lipaudit.sdp.windows import cut_sources, split

BUDGET = 3 * 10**8


def weights(dims, seed):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((dims[i + 1], dims[i])) / np.sqrt(dims[i])).astype(np.float32)
        for i in range(len(dims) - 1)
    ]


def mlp_torch(ws, act):
    def f(x):
        for w in ws[:-1]:
            x = act(x @ torch.from_numpy(w).double().T)
        return x @ torch.from_numpy(ws[-1]).double().T

    return f


def jacobian_lower_bound(f, dim, samples=300, seed=0):
    """max ‖J(x)‖₂ over random inputs: a lower bound on the Lipschitz constant."""
    generator = torch.Generator().manual_seed(seed)
    xs = torch.randn(samples, dim, generator=generator, dtype=torch.float64) * 2
    jac = torch.func.vmap(torch.func.jacrev(f))(xs)
    return float(torch.linalg.matrix_norm(jac, ord=2).max())


def relu_truth_one_hidden(w1, w2):
    """Lip of x ↦ W2 relu(W1 x) with every activation pattern realisable (W1 of full row rank ≤ dim x,
    no bias): the largest ‖W2 D W1‖ over 0/1 diagonals D."""
    best = 0.0
    for pattern in itertools.product([0.0, 1.0], repeat=w1.shape[0]):
        best = max(best, np.linalg.norm(w2.astype(np.float64) @ np.diag(pattern) @ w1.astype(np.float64), 2))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_one_hidden_relu_between_truth_and_product(seed):
    w = weights([2, 2, 1], seed)
    net = from_mlp(w, [(0.0, 1.0)])
    found = sdp_bound(net, budget=BUDGET)
    assert found.certified and found.figure is not None
    truth = relu_truth_one_hidden(*w)
    assert truth * (1 - 1e-12) <= found.figure <= product_figure(net) * (1 + 1e-9)


@pytest.mark.parametrize(
    "dims,slopes,act",
    [
        ([5, 8, 8, 3], (0.0, 1.0), torch.relu),
        ([4, 10, 6, 2], (0.0, 1.0), torch.tanh),
        ([6, 7, 7, 7, 3], (0.01, 1.0), lambda t: torch.nn.functional.leaky_relu(t, 0.01)),
        ([4, 9, 5, 2], (-0.12891, 1.12891), torch.nn.functional.gelu),
    ],
)
def test_mlp_figure_between_jacobians_and_product(dims, slopes, act):
    w = weights(dims, sum(dims))
    net = from_mlp(w, [slopes] * (len(w) - 1))
    found = sdp_bound(net, budget=BUDGET)
    assert found.certified and found.figure is not None
    assert "Rump" in found.proof and found.method == "LipSDP-Neuron"
    lower = jacobian_lower_bound(mlp_torch(w, act), dims[0])
    assert lower <= found.figure <= product_figure(net) * (1 + 1e-9)


def test_residual_mlp_figure_between_jacobians_and_product():
    rng = np.random.default_rng(5)
    blocks = [(rng.standard_normal((6, 4)) / 2, rng.standard_normal((4, 6)) / 2) for _ in range(3)]
    stem, head = rng.standard_normal((4, 3)), rng.standard_normal((2, 4))
    net = from_residual_mlp(blocks, [(0.0, 1.0)] * 3, stem=stem, head=head)

    def f(x):
        h = x @ torch.from_numpy(stem).T
        for w1, w2 in blocks:
            h = h + torch.relu(h @ torch.from_numpy(w1).T) @ torch.from_numpy(w2).T
        return h @ torch.from_numpy(head).T

    xs = torch.randn(20, 3, dtype=torch.float64)
    assert np.allclose(f(xs).numpy(), net.forward(xs.numpy(), [lambda t: np.maximum(t, 0)] * 3))
    found = sdp_bound(net, budget=BUDGET)
    assert found.certified and found.figure is not None
    assert jacobian_lower_bound(f, 3) <= found.figure <= product_figure(net) * (1 + 1e-9)
    assert cut_sources(net) == {}  # the eliminated stream reads every block: no windows
    # The stream's products are rounded: the certificate widens its error bound by their magnitudes.
    pre, out, _, _ = net.stacked()
    pre_bound, out_bound = net.magnitudes()
    assert net.rounding() >= 4 and np.all(pre_bound >= np.abs(pre)) and np.all(out_bound >= np.abs(out))


def test_certificate_rejects_multipliers_below_the_truth():
    """ρ below the optimum (and below the true constant²): no multipliers can be proved."""
    w = weights([3, 6, 2], 7)
    net = from_mlp(w, [(0.0, 1.0)])
    blocks = Blocks.of(net)
    optimum = minimise(net, warm_start=product_figure(net), budget=BUDGET)
    assert certify(blocks, optimum.rho * (1 + 1e-5), optimum.lam) is not None
    assert certify(blocks, optimum.rho * 0.98, optimum.lam) is None
    truth = jacobian_lower_bound(mlp_torch(w, torch.relu), 3)
    for scale in (1.0, 10.0, 1e3):  # any multipliers: below the truth nothing is provable
        assert certify(blocks, truth**2 * 0.999, optimum.lam * scale) is None
    assert certify(blocks, optimum.rho, -optimum.lam) is None  # λ ≥ 0 is part of the proof
    # The matrix the proof rejects is indeed not negative semidefinite.
    assert np.linalg.eigvalsh(constraint_matrix(blocks, optimum.rho * 0.98, optimum.lam)).max() > 0


def test_figure_matches_cvxpy():
    pytest.importorskip("cvxpy")
    from bench._sdp_reference import cvxpy_lipsdp

    for dims, slopes in (([4, 6, 6, 2], (0.0, 1.0)), ([3, 5, 4, 2], (-0.12891, 1.12891))):
        net = from_mlp(weights(dims, 11), [slopes] * (len(dims) - 2))
        reference = cvxpy_lipsdp(net)
        found = sdp_bound(net, budget=BUDGET)
        assert found.figure is not None
        assert found.figure == pytest.approx(reference, rel=2e-3)


def test_windows_compose_and_stay_sound():
    w = weights([5, 8, 8, 8, 3], 3)
    net = from_mlp(w, [(0.0, 1.0)] * 3)
    windows = split(net, 10)
    assert windows is not None and len(windows) == 3
    found = sdp_bound(net, budget=BUDGET, max_neurons=10)
    whole = sdp_bound(net, budget=BUDGET)
    assert found.certified and found.figure is not None and whole.figure is not None
    assert "per window (3)" in found.method
    assert whole.figure <= found.figure * (1 + 1e-6) <= product_figure(net) * (1 + 1e-6)
    assert split(net, 7) is None  # one group is larger than the limit


def test_windows_keep_each_connections_rounding_allowance():
    """A window's certificate must hold for the exact maps: a product's rounding count and magnitude
    go with its connection into the window (they had been dropped)."""
    net = from_mlp(weights([5, 8, 8, 8, 3], 3), [(0.0, 1.0)] * 3)
    rounded = [
        replace(g, inputs=tuple(replace(c, rounding=7, magnitude=np.abs(c.matrix) * 2) for c in g.inputs))
        for g in net.groups
    ]
    net = replace(net, groups=tuple(rounded))
    windows = split(net, 10)
    assert windows is not None and len(windows) == 3
    for window in windows:
        for group in window.groups:
            for connection in group.inputs:
                assert connection.rounding == 7 and connection.magnitude is not None


def test_deterministic():
    net = from_mlp(weights([6, 9, 9, 3], 2), [(0.0, 1.0)] * 2)
    first, second = sdp_bound(net, budget=BUDGET), sdp_bound(net, budget=BUDGET)
    assert first == second


def test_gradient_matches_autograd():
    rng = np.random.default_rng(1)
    net = from_mlp(
        [rng.standard_normal((7, 5)), rng.standard_normal((6, 7)), rng.standard_normal((3, 6))],
        [(-0.1, 1.1), (0.0, 1.0)],
    )
    objective = SchurObjective(Blocks.of(net))
    lam = initial_multipliers(net, objective) * 1.3
    _, _, grad = objective.smoothed(lam, 5.0)
    leaf = lam.clone().requires_grad_(True)
    mu = objective.eigenvalues(leaf)
    top = mu.max()
    (reference,) = torch.autograd.grad(top + torch.log(torch.exp(5.0 * (mu - top)).sum()) / 5.0, leaf)
    assert torch.allclose(grad, reference, rtol=1e-9, atol=1e-12 * float(reference.abs().max()))


def test_a_final_point_that_cannot_be_proved_falls_back_to_an_earlier_stage(monkeypatch):
    """A long run may end on the boundary of feasibility, where no inflation proves it; the best point
    of an earlier stage still gives a certified figure, so more work never costs the figure."""
    import dataclasses

    from lipaudit.sdp import bound as sdp_bound_module

    w = weights([3, 6, 2], 7)
    net = from_mlp(w, [(0.0, 1.0)])
    reached = minimise(net, warm_start=product_figure(net), budget=BUDGET)
    unprovable = dataclasses.replace(reached, rho=reached.rho * 0.5, earlier=((reached.lam, reached.rho),))
    monkeypatch.setattr(sdp_bound_module, "minimise", lambda *args, **kwargs: unprovable)
    result = sdp_bound(net, budget=BUDGET)
    truth = relu_truth_one_hidden(*w)
    assert result.certified and result.figure is not None
    assert truth * (1 - 1e-9) <= result.figure <= reached.rho**0.5 * 1.001
    assert "stage(s) before the end" in result.proof
    monkeypatch.setattr(
        sdp_bound_module, "minimise", lambda *args, **kwargs: dataclasses.replace(unprovable, earlier=())
    )
    assert sdp_bound(net, budget=BUDGET).figure is None
