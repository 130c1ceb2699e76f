"""The recursion's value against its definition, the published chain formula, the exact product,
and the Lipschitz constant's lower bounds."""

import math

import numpy as np
import pytest
import torch

from lipaudit.linear_maps import Dense
from lipaudit.tight import Network, network_bound, product_bound
from lipaudit.tight.region import window_region
from tests.tight._tight_helpers import cnn, lower_bound, mlp, reference_bound, residual_mlp

REL = 1e-5  # the certified figures carry margins ≤ 1e-6 each


def test_chain_matches_combettes_pesquet_sum():
    """w = None on a chain is m_k = a^{k−1}‖W_k⋯W_1‖ + Σ_j b·a^{k−1−j}‖W_k⋯W_{j+1}‖·m_j, by numpy."""
    net = mlp([7, 9, 8, 9, 6], seed=3)
    weights = [net[v].op.matrix.numpy().T for v in range(len(net.nodes)) if isinstance(net[v].op, Dense)]
    a = b = 0.5
    m = {}
    for k in range(1, len(weights) + 1):

        def chain(j, k=k):  # W_k ⋯ W_{j+1}
            out = weights[j]
            for i in range(j + 1, k):
                out = weights[i] @ out
            return np.linalg.norm(out, 2)

        m[k] = a ** (k - 1) * chain(0) + sum(b * a ** (k - 1 - j) * chain(j) * m[j] for j in range(1, k))
    found = network_bound(net, window=None, refine_tol=0, joint=False)
    assert found.bound == pytest.approx(min(m[len(weights)], found.product), rel=REL)
    assert found.bound >= m[len(weights)] * (1 - 1e-12) or found.bound == found.product


@pytest.mark.parametrize("window", [0, 1, 2])
def test_chain_window_matches_liplt(window):
    """m_k ≤ |a|^w‖W_k⋯W_{k−w}‖·Lip·m_{k−w−1} + Σ_{j=k−w}^{k−1} b|a|^{k−1−j}‖W_k⋯W_{j+1}‖ m_j, with
    m_0 = 1 for the input, each m the min with the product rule."""
    net = mlp([6, 8, 8, 8, 8, 5], activation="leaky_relu", alpha=0.2, seed=4)
    weights = [net[v].op.matrix.numpy().T for v in range(len(net.nodes)) if isinstance(net[v].op, Dense)]
    a, b, lip = 0.6, 0.4, 1.0
    norm = lambda x: np.linalg.norm(x, 2)  # noqa: E731

    def chain(k, j):
        out = weights[j]
        for i in range(j + 1, k):
            out = weights[i] @ out
        return norm(out)

    m = {0: 1.0}
    for k in range(1, len(weights) + 1):
        first = max(1, k - window)
        cut = first - 1  # the activation output cut at (or the input)
        total = abs(a) ** (k - first) * chain(k, cut) * (lip * m[cut] if cut else 1.0) + sum(
            b * abs(a) ** (k - 1 - j) * chain(k, j) * m[j] for j in range(first, k)
        )
        product = norm(weights[k - 1]) * (lip * m[k - 1] if k > 1 else 1.0)
        m[k] = min(total, product)
    found = network_bound(net, window=window, refine_tol=0, joint=False)
    assert found.bound == pytest.approx(m[len(weights)], rel=REL)


@pytest.mark.parametrize(
    "builder, window",
    [
        (lambda: residual_mlp(seed=1), None),
        (lambda: residual_mlp(seed=2), 1),
        (lambda: residual_mlp(seed=2), 2),
        (lambda: residual_mlp(activation="tanh", seed=5), 1),
        (lambda: cnn(seed=1), 1),
        (lambda: cnn(seed=2, residual=True), 2),
        (lambda: cnn(seed=3, residual=True), None),
        (lambda: cnn(seed=4, residual=True, activation="gelu"), 1),
    ],
)
def test_dag_matches_definition(builder, window):
    """Every chain norm through autograd Jacobians of the linearised window and an exact SVD."""
    net = builder()
    expected, _ = reference_bound(net, window)
    found = network_bound(net, window=window, refine_tol=0, dense_limit=10**6, dense_entries=10**9, joint=False)
    assert found.bound == pytest.approx(expected, rel=REL)


def test_product_is_the_product_of_exact_norms():
    net = mlp([5, 7, 6, 4], activation="tanh", seed=7)
    expected = 1.0
    for node in net.nodes:
        if isinstance(node.op, Dense):
            expected *= np.linalg.norm(node.op.matrix.numpy(), 2)
    value, _ = product_bound(net)
    assert value == pytest.approx(expected, rel=1e-8) and value >= expected


@pytest.mark.parametrize(
    "builder",
    [
        lambda: mlp([8, 16, 16, 4], seed=11),
        lambda: mlp([8, 16, 16, 16, 4], activation="gelu", seed=12),
        lambda: mlp([8, 12, 12, 4], activation="leaky_relu", alpha=0.1, seed=13),
        lambda: mlp([8, 12, 12, 4], activation="sigmoid", seed=14),
        lambda: residual_mlp(seed=15),
        lambda: residual_mlp(activation="tanh", seed=16),
        lambda: cnn(seed=17),
        lambda: cnn(seed=18, residual=True),
        lambda: cnn(seed=19, residual=True, activation="tanh"),
    ],
)
@pytest.mark.parametrize("window", [1, 2, None])
def test_sound_and_never_above_the_product(builder, window):
    net = builder()
    found = network_bound(net, window=window)
    assert found.bound <= found.product
    assert found.bound >= lower_bound(net, samples=24)


def test_barriers_and_multiple_outputs():
    """A max pool (lipschitz node) cuts every window; two outputs combine as √(Σ L²)."""
    torch.manual_seed(0)
    net = Network()
    x = net.input((1, 1, 4, 4))
    h = net.conv(x, torch.randn(3, 1, 3, 3) / 3, pads=(1, 1, 1, 1))
    h = net.activation(h, "relu")
    pool = torch.nn.MaxPool2d(2)
    p = net.lipschitz(
        h, 1.0, shape=(1, 3, 2, 2), fn=lambda t: pool(t.reshape(-1, 3, 4, 4)).reshape(t.shape[0], 1, 3, 2, 2)
    )
    f = net.reshape(p, (1, 12))
    out1 = net.dense(f, torch.randn(12, 3) / 3)
    g = net.activation(out1, "tanh")
    out2 = net.dense(g, torch.randn(3, 2))
    net.output(out1, out2)
    region = window_region(net, out2, None)
    assert p in region.cuts
    found = network_bound(net, window=None, joint=False)
    expected, _ = reference_bound(net, None)
    assert found.bound == pytest.approx(expected, rel=REL)
    assert found.bound >= lower_bound(net, samples=16)
    assert math.isclose(found.bound, math.sqrt(sum(v**2 for v in found.outputs.values())), rel_tol=1e-9)


def test_residual_gain_is_large():
    """x + g(x) with a small g: the recursion sees ‖I + a·W₂W₁‖, the product 1 + ‖W₂‖‖W₁‖."""
    net = residual_mlp(width=16, blocks=4, seed=21)
    found = network_bound(net, window=2)
    assert found.product / found.bound > 1.5


@pytest.mark.parametrize(
    "builder",
    [
        lambda: residual_mlp(width=10, blocks=4, seed=22),
        lambda: cnn(seed=23, residual=True),
        lambda: mlp([6, 10, 10, 10, 3], activation="gelu", seed=24),
    ],
)
def test_joint_bound_never_loses_and_stays_sound(builder):
    net = builder()
    separate = network_bound(net, window=None, joint=False)
    together = network_bound(net, window=None, joint=True)
    assert together.bound <= separate.bound
    assert together.bound >= lower_bound(net, samples=24)


@pytest.mark.parametrize("window", [1, 2, None])
def test_convolution_forms_agree_with_explicit_matrices(window):
    """The same recursion with every chain norm taken on composite kernels (dense_limit=0) is sound
    and never below the one on explicit matrices beyond the branch and bound's tolerance."""
    net = cnn(seed=31, residual=True)
    conv = network_bound(net, window=window, dense_limit=0, joint=False, refine_tol=0)
    dense = network_bound(net, window=window, joint=False, refine_tol=0)
    assert conv.bound >= dense.bound * (1 - 2e-3)
    assert conv.bound >= lower_bound(net, samples=24)
    assert conv.bound <= conv.product


def test_a_time_limit_keeps_the_bound_certified():
    """Out of time, the remaining targets keep the product rule's figure: never below the lower
    bound, never above the product, and the result says it did not finish."""
    net = cnn(seed=31, residual=True)
    stopped = network_bound(net, time_limit=0.0)
    assert not stopped.finished and stopped.bound == stopped.product
    full = network_bound(net, time_limit=600.0)
    assert full.finished and full.bound <= stopped.bound
    assert full.bound >= lower_bound(net, samples=24)
