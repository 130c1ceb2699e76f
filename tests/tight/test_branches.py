"""Residual branches: found where x + g(x) is, cut out faithfully, bounded soundly."""

import numpy as np
import pytest
import torch

from lipaudit.linear_maps import Dense
from lipaudit.tight import Network, residual_branches
from lipaudit.tight.branches import branch_network, residual_adds
from tests.tight._tight_helpers import lower_bound, reference_bound, residual_mlp


def test_every_block_of_a_residual_mlp():
    net = residual_mlp(width=10, blocks=3, seed=4)
    found = residual_branches(net, window=None, refine_tol=0, joint=False)
    assert len(found) == 3
    for branch, (_, fork, _, _, _, members) in zip(found, residual_adds(net)):
        sub = branch_network(net, fork, members)
        expected, _ = reference_bound(sub, None)
        assert branch.bound == pytest.approx(expected, rel=1e-5)
        assert branch.bound >= lower_bound(sub, samples=16)
        w1, w2 = (sub[v].op.matrix.numpy() for v in range(len(sub.nodes)) if isinstance(sub[v].op, Dense))
        assert branch.bound <= np.linalg.norm(w1, 2) * np.linalg.norm(w2, 2) * (1 + 1e-9)
        assert branch.invertible == (branch.ratio < 1)


def test_branch_sub_network_computes_the_branch():
    net = residual_mlp(width=6, blocks=1, seed=2, activation="tanh")
    [(add, fork, out, c_x, c_g, members)] = residual_adds(net)
    sub = branch_network(net, fork, members)
    x = torch.randn(4, 1, 6, dtype=torch.float64)
    [g] = sub.evaluate(x)
    [y] = Network.evaluate(_outputs(net, add.id), x)
    assert torch.allclose(y, c_x * x + c_g * g)


def _outputs(net, value):
    net.outputs = [value]
    return net


def test_projection_shortcut_and_foreign_reads_are_not_residual():
    torch.manual_seed(0)
    net = Network()
    x = net.input((1, 4))
    other = net.dense(x, torch.randn(4, 4))
    g = net.activation(net.dense(x, torch.randn(4, 4)), "relu")
    projected = net.add([net.dense(x, torch.randn(4, 4)), g])  # P·x + g(x): no identity shortcut
    mixed = net.add([x, net.add([g, other])])  # the "branch" is a sum of two things read from x: fine
    net.output(projected, mixed)
    adds = residual_adds(net)
    assert [a.id for a, *_ in adds] == [mixed]
    net2 = Network()
    a = net2.input((1, 3))
    b = net2.lipschitz(a, 1.0)
    c = net2.activation(net2.dense(a, torch.randn(3, 3)), "relu")
    d = net2.add([b, net2.add([c, b])])  # the would-be branch c + b also reads c, which is not from b
    net2.output(d)
    assert residual_adds(net2) == []
