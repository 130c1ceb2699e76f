"""The interior-point method of lipaudit.sdp (interior.py) against independent truth: cvxpy's optimum
of the same program, autograd's derivatives of the barrier, Jacobian lower bounds, exact figures of
linear networks; and the properties it was built for: the same figure on one or two threads, and a
figure that moves no more than the weights do."""

import numpy as np
import pytest
import torch

from lipaudit.sdp import (
    Connection,
    NeuronGroup,
    SdpNetwork,
    certify,
    from_mlp,
    from_residual_mlp,
    product_figure,
    sdp_bound,
)
from lipaudit.sdp.interior import Program, iteration_cost
from lipaudit.sdp.matrix import Blocks, SchurObjective
from lipaudit.sdp.optimise import initial_multipliers, minimise

from .test_sdp_bound import jacobian_lower_bound, mlp_torch, weights

BUDGET = 3 * 10**8  # every program here takes the interior-point method under it


def residual_net(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    blocks = [(rng.standard_normal((6, 4)) / 2 * scale, rng.standard_normal((4, 6)) / 2 * scale) for _ in range(2)]
    stem, head = rng.standard_normal((4, 3)) * scale, rng.standard_normal((2, 4)) * scale
    return from_residual_mlp(blocks, [(0.0, 1.0)] * 2, stem=stem, head=head, head_slopes=(0.0, 1.0))


def interior_figure(net):
    found = sdp_bound(net, budget=BUDGET)
    assert found.certified and found.figure is not None
    assert "interior-point iterations (gap reached)" in found.proof
    return found.figure


@pytest.mark.parametrize(
    "build",
    [
        lambda: from_mlp(weights([4, 6, 6, 2], 11), [(0.0, 1.0)] * 2),
        lambda: from_mlp(weights([3, 5, 4, 2], 11), [(-0.12891, 1.12891)] * 2),
        lambda: from_mlp(weights([5, 7, 3], 4), [(0.01, 1.0)]),
        lambda: residual_net(3),
    ],
)
def test_figure_matches_cvxpy_clarabel(build):
    cvxpy = pytest.importorskip("cvxpy")
    if "CLARABEL" not in cvxpy.installed_solvers():
        pytest.skip("Clarabel is not installed")
    from bench._sdp_reference import cvxpy_lipsdp

    net = build()
    reference = cvxpy_lipsdp(net, "CLARABEL")
    figure = interior_figure(net)
    # The certified figure is the optimum's up to the gap (1e-7 in ρ), the inflation and the float32
    # grid of ρ'; the interior-point solver's tolerance is about 1e-8.
    assert figure == pytest.approx(reference, rel=1e-6)


def test_figure_above_jacobians_and_below_product():
    for dims, slopes, act in (
        ([5, 8, 8, 3], (0.0, 1.0), torch.relu),
        ([4, 10, 6, 2], (0.0, 1.0), torch.tanh),
        ([4, 9, 5, 2], (-0.12891, 1.12891), torch.nn.functional.gelu),
    ):
        w = weights(dims, sum(dims) + 1)
        net = from_mlp(w, [slopes] * (len(w) - 1))
        figure = interior_figure(net)
        assert jacobian_lower_bound(mlp_torch(w, act), dims[0]) <= figure <= product_figure(net) * (1 + 1e-9)


def test_linear_neurons_keep_a_sound_figure_near_the_exact_one():
    """α = β: the neurons are linear (here the identity and zero), the network is linear, its constant
    is a matrix norm; their multipliers are held fixed, so the figure is sound and near it."""
    w = weights([4, 5, 3], 8)
    identity = from_mlp(w, [(1.0, 1.0)])
    exact = np.linalg.norm(w[1].astype(np.float64) @ w[0].astype(np.float64), 2)
    figure = interior_figure(identity)
    assert exact * (1 - 1e-12) <= figure <= exact * (1 + 1e-3)
    # A dead group (α = β = 0) inside a residual block: only the skip path is left.
    rng = np.random.default_rng(2)
    stem, head = rng.standard_normal((4, 3)), rng.standard_normal((2, 4))
    blocks = [(rng.standard_normal((6, 4)), rng.standard_normal((4, 6)))]
    dead = from_residual_mlp(blocks, [(0.0, 0.0)], stem=stem, head=head)
    exact = np.linalg.norm(head @ stem, 2)
    assert exact * (1 - 1e-12) <= interior_figure(dead) <= exact * (1 + 1e-3)
    # One group mixes free and linear neurons.
    relu, identity = torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool), torch.tensor([0, 1, 0, 1, 0], dtype=torch.bool)
    mixed = from_mlp(w, [(np.array([0.0, 1.0, 0.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0, 0.0]))])

    def act(t):
        return torch.where(relu, torch.relu(t), torch.where(identity, t, torch.zeros_like(t)))

    lower = jacobian_lower_bound(mlp_torch(w, act), 4)
    assert lower <= interior_figure(mixed) <= product_figure(mixed) * (1 + 1e-9)


def test_certificate_rejects_the_optimum_lowered():
    net = from_mlp(weights([3, 6, 4, 2], 7), [(0.0, 1.0)] * 2)
    blocks = Blocks.of(net)
    optimum = minimise(net, warm_start=product_figure(net), budget=BUDGET)
    assert optimum.interior and optimum.converged
    assert certify(blocks, optimum.rho * (1 + 1e-6), optimum.lam) is not None
    # No multipliers prove ρ below the optimum (the gap is 1e-7): these are not even close to it.
    assert certify(blocks, optimum.rho * (1 - 1e-4), optimum.lam) is None
    assert certify(blocks, optimum.rho * (1 - 1e-4), optimum.lam * 1.01) is None


def test_schur_traces_match_autograd():
    """tr(W_a K W_b K) from the Gram matrices is the barrier's Hessian (autograd through log det)."""
    rng = np.random.default_rng(1)
    net = from_mlp(
        [rng.standard_normal((7, 5)), rng.standard_normal((6, 7)), rng.standard_normal((3, 6))],
        [(-0.1, 1.1), (0.0, 1.0)],
    )
    blocks = Blocks.of(net)
    program = Program(blocks, 1.0)
    lam = initial_multipliers(net, SchurObjective(blocks)) * 1.3
    rho = float(SchurObjective(blocks).eigenvalues(lam).max()) * 1.5
    free = torch.arange(len(lam))
    grad, hess = program.barrier_derivatives(program.factor(rho, lam), lam, free)

    def barrier(x):
        return -torch.logdet(program.matrix(x[0], x[1:])) - torch.log(x[1:]).sum()

    x = torch.cat([torch.tensor([rho], dtype=torch.float64), lam])
    assert torch.allclose(grad, torch.autograd.functional.jacobian(barrier, x), rtol=1e-10, atol=1e-12)
    assert torch.allclose(hess, torch.autograd.functional.hessian(barrier, x), rtol=1e-10, atol=1e-12)


def test_same_figure_on_one_or_two_threads():
    net = residual_net(4)
    first, second = sdp_bound(net, budget=BUDGET), sdp_bound(net, budget=BUDGET)
    assert first == second
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        other = sdp_bound(net, budget=BUDGET)
    finally:
        torch.set_num_threads(threads)
    assert other.figure == pytest.approx(first.figure, rel=1e-9)


def test_figure_continuous_in_the_weights():
    """Weights scaled by 1 + 1e-7·noise move the figure by about as much (the first-order method,
    stopped by its budget, moved such figures by up to 11%)."""
    rng = np.random.default_rng(9)
    net = residual_net(5)
    base = interior_figure(net)
    for _ in range(3):

        def perturb(connections):
            noisy = [c.matrix * (1 + 1e-7 * rng.standard_normal(c.matrix.shape)) for c in connections]
            return tuple(Connection(c.source, m, c.rounding, c.magnitude) for c, m in zip(connections, noisy))

        groups = tuple(NeuronGroup(g.alpha, g.beta, perturb(g.inputs)) for g in net.groups)
        twin = SdpNetwork(net.input_dim, groups, perturb(net.output))
        assert interior_figure(twin) == pytest.approx(base, rel=1e-5)


def test_cost_model_chooses_the_method():
    """The interior-point method where 30 of its iterations fit the budget, the first-order one otherwise."""
    net = from_mlp(weights([4, 6, 6, 2], 11), [(0.0, 1.0)] * 2)
    blocks = Blocks.of(net)
    cost = iteration_cost(blocks.input_dim, blocks.neurons, 0)
    assert minimise(net, warm_start=1.0, budget=31 * cost).interior
    assert not minimise(net, warm_start=1.0, budget=29 * cost).interior
