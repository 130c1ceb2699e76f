"""The semidefinite bound on convolutions, poolings and residual blocks, against independent truth:
the network's own run (the materialised program computes the same function), every ReLU pattern
enumerated, autograd Jacobians, exact products in extended precision, and the recursion's figure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lipaudit.sdp.certify import gamma
from lipaudit.tight import Network, network_bound
from lipaudit.tight.segments import cuts, product_of, segment, segmented_bound
from lipaudit.tight.semidefinite import program_of, semidefinite_bound, solve

BUDGET = 3e7


def _weights(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=generator, dtype=torch.float64)
    return (w * scale / math.sqrt(math.prod(shape[1:]))).float().double()  # float32 values, as a model's


def conv_net(channels: int = 2, side: int = 4) -> Network:
    """conv 1→c, ReLU, conv c→c, ReLU, 2×2 average pooling, flatten, dense → 3."""
    net = Network()
    x = net.input((1, 1, side, side))
    h = net.activation(net.conv(x, _weights((channels, 1, 3, 3), 1), pads=(1, 1, 1, 1)), "relu")
    h = net.activation(net.conv(h, _weights((channels, channels, 3, 3), 2), pads=(1, 1, 1, 1)), "relu")
    h = net.avg_pool(h, (2, 2), strides=(2, 2))
    size = channels * (side // 2) ** 2
    net.output(net.dense(net.reshape(h, (1, size)), _weights((size, 3), 3)))
    return net


def residual_conv_net(channels: int = 2, side: int = 4, blocks: int = 2, head_relu: bool = True) -> Network:
    """stem conv, blocks h + conv(ReLU(conv h)), (ReLU), flatten, dense → 3."""
    net = Network()
    x = net.input((1, 1, side, side))
    h = net.conv(x, _weights((channels, 1, 3, 3), 10), pads=(1, 1, 1, 1))
    for k in range(blocks):
        inner = net.activation(net.conv(h, _weights((channels, channels, 3, 3), 11 + k), pads=(1, 1, 1, 1)), "relu")
        h = net.add([h, net.conv(inner, _weights((channels, channels, 3, 3), 21 + k, 2.0), pads=(1, 1, 1, 1))])
    if head_relu:
        h = net.activation(h, "relu")
    size = channels * side * side
    net.output(net.dense(net.reshape(h, (1, size)), _weights((size, 3), 30)))
    return net


def _relu(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0)


def _run_program(program, x: np.ndarray) -> np.ndarray:
    return program.forward(x, [_relu] * len(program.groups))


def _jacobian_lower_bound(net: Network, samples: int = 400) -> float:
    shape = net.shape(next(node.id for node in net.nodes if not node.inputs))
    generator = torch.Generator().manual_seed(5)
    xs = torch.randn(samples, *shape[1:], generator=generator, dtype=torch.float64)

    def f(v: torch.Tensor) -> torch.Tensor:
        return net.evaluate(v[None, None])[0].reshape(-1)

    jac = torch.func.vmap(torch.func.jacrev(f))(xs)
    return float(torch.linalg.matrix_norm(jac.reshape(samples, jac.shape[1], -1), ord=2).max())


@pytest.mark.parametrize("build", [conv_net, residual_conv_net])
def test_the_program_computes_the_network(build) -> None:
    """The materialised maps (convolutions, pooling, skips) are the network's: same outputs."""
    net = build()
    program = program_of(net)
    assert program is not None
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = net.evaluate(x.reshape(7, 1, 1, 4, 4))[0].reshape(7, -1).numpy()
    np.testing.assert_allclose(_run_program(program, x.numpy()), expected, rtol=1e-10, atol=1e-12)


def _pattern_truth(w_in: np.ndarray, w_out: np.ndarray, skip: np.ndarray | None = None) -> float:
    """max over 0/1 diagonals D of ‖W_out·D·W_in (+ skip)‖₂: LipSDP-Neuron with slopes [0, 1] bounds
    every one of these linear maps (each is the network with the ReLUs replaced by slopes in {0, 1})."""
    best = 0.0
    for pattern in itertools.product([0.0, 1.0], repeat=w_in.shape[0]):
        jac = w_out @ np.diag(pattern) @ w_in
        best = max(best, float(np.linalg.norm(jac if skip is None else jac + skip, 2)))
    return best


def _matrix(net: Network, output: int, input_shape) -> np.ndarray:
    """The linear map from the input to ``output`` (no activation between), by running it on the basis."""
    n = math.prod(input_shape)
    values = net.evaluate(torch.eye(n, dtype=torch.float64).reshape(n, *input_shape))
    return values[0].reshape(n, -1).T.numpy() if output == net.outputs[0] else None


def test_a_residual_conv_block_is_above_every_relu_pattern() -> None:
    """x ↦ D(x + conv₂·ReLU(conv₁·x)), one channel on 3×3 (9 ReLUs): the certified figure is at least
    the largest norm over all 512 patterns, the exact Lipschitz constant of the slope-restricted class."""
    w1, w2, dense = _weights((1, 1, 3, 3), 41), _weights((1, 1, 3, 3), 42, 2.0), _weights((9, 2), 43)
    net = Network()
    x = net.input((1, 1, 3, 3))
    inner = net.activation(net.conv(x, w1, pads=(1, 1, 1, 1)), "relu")
    h = net.add([x, net.conv(inner, w2, pads=(1, 1, 1, 1))])
    net.output(net.dense(net.reshape(h, (1, 9)), dense))

    def conv_matrix(weight: torch.Tensor) -> np.ndarray:
        part = Network()
        part.output(part.conv(part.input((1, 1, 3, 3)), weight, pads=(1, 1, 1, 1)))
        return _matrix(part, part.outputs[0], (1, 1, 3, 3))

    d = dense.numpy().T
    truth = _pattern_truth(conv_matrix(w1), d @ conv_matrix(w2), skip=d)
    program = program_of(net)
    assert program is not None and [g.size for g in program.groups] == [9]
    found = solve(program, warm_start=10.0, budget=BUDGET)
    assert found.certified and found.figure is not None
    assert truth <= found.figure <= truth * 1.02  # the class's constant, and LipSDP is tight here
    assert found.figure <= network_bound(net).bound * (1 + 1e-9)


@pytest.mark.parametrize("build", [conv_net, residual_conv_net])
def test_conv_figures_lie_between_jacobians_and_the_recursion(build) -> None:
    net = build()
    found = semidefinite_bound(net, warm_start=network_bound(net).bound, budget=BUDGET)
    assert found is not None and found.certified and found.figure is not None
    assert _jacobian_lower_bound(net) <= found.figure <= network_bound(net).bound


def test_two_convolutions_in_a_row_carry_a_rounding_that_covers_the_exact_map() -> None:
    """conv∘conv is materialised in float64: the extended-precision product lies within
    γ_rounding·magnitude of it, entry by entry."""
    w1, w2 = _weights((3, 2, 3, 3), 51), _weights((2, 3, 3, 3), 52)
    net = Network()
    x = net.input((1, 2, 4, 4))
    h = net.conv(net.conv(x, w1, pads=(1, 1, 1, 1)), w2, pads=(1, 1, 1, 1))
    net.output(net.dense(net.reshape(net.activation(h, "relu"), (1, 32)), _weights((32, 2), 53)))
    program = program_of(net)
    assert program is not None
    (connection,) = program.groups[0].inputs
    assert connection.rounding == 2 * 9 + 3 * 9 and connection.magnitude is not None  # terms() of each

    def conv_matrix(weight: torch.Tensor, channels: int) -> np.ndarray:
        part = Network()
        part.output(part.conv(part.input((1, channels, 4, 4)), weight, pads=(1, 1, 1, 1)))
        return _matrix(part, part.outputs[0], (1, channels, 4, 4))

    exact = conv_matrix(w2, 3).astype(np.longdouble) @ conv_matrix(w1, 2).astype(np.longdouble)
    error = np.abs(connection.matrix.astype(np.longdouble) - exact).astype(np.float64)
    assert np.all(error <= gamma(connection.rounding) * connection.magnitude)
    assert np.all(connection.magnitude >= np.abs(connection.matrix))


def test_cuts_are_the_stream_between_blocks_only() -> None:
    net = residual_conv_net(blocks=3)
    found = cuts(net, net.outputs[0])
    names = [net[v].op.__class__.__name__ for v in found]
    # input, stem conv, the three sums, the head ReLU, reshape, dense: never a node inside a block
    assert names == ["Input", "Conv", "Sum", "Sum", "Sum", "Activation", "Reshape", "Dense"]
    skip = Network()
    x = skip.input((1, 4))
    inner = skip.activation(skip.dense(x, _weights((4, 4), 60)), "relu")
    skip.output(skip.add([x, skip.dense(inner, _weights((4, 4), 61))]))
    assert cuts(skip, skip.outputs[0]) == [x, skip.outputs[0]]  # the skip jumps over every value inside


def test_segments_compose_to_the_network_and_bound_it() -> None:
    net = residual_conv_net(blocks=3)
    found = cuts(net, net.outputs[0])
    x = torch.randn(5, 1, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    value = x
    for a, b in zip(found, found[1:]):
        value = segment(net, a, b).evaluate(value)[0]
    torch.testing.assert_close(value, net.evaluate(x)[0], rtol=1e-12, atol=1e-12)
    # 2×16 neurons per block: segments of one block each (input 32 + 32 neurons)
    composed = segmented_bound(net, budget=10 * BUDGET, max_variables=64)
    program = program_of(net)
    assert program is not None
    whole = solve(program, warm_start=network_bound(net).bound, budget=10 * BUDGET)
    assert composed is not None and composed.figure is not None and whole.figure is not None
    assert "per segment (4)" in composed.method and composed.proof.count("LipSDP-Neuron (") >= 3
    assert _jacobian_lower_bound(net) <= whole.figure <= composed.figure * (1 + 1e-6)
    assert composed.figure <= product_of(net)


def test_the_budget_decides_whether_a_program_runs() -> None:
    """No work, no program; the semidefinite work follows the recursion budget (None: no limit)."""
    from lipaudit.tight.graph_bound import DEFAULT_RECURSION_BUDGET, SDP_BUDGET, SDP_UNLIMITED, sdp_budget

    net = conv_net()
    assert semidefinite_bound(net, warm_start=1.0, budget=0.0) is None
    assert semidefinite_bound(net, warm_start=1.0, budget=1e3) is None  # its least work is far above
    assert sdp_budget(0.0) == 0.0 and sdp_budget(DEFAULT_RECURSION_BUDGET) == SDP_BUDGET
    assert sdp_budget(None) == SDP_BUDGET * SDP_UNLIMITED
    # a large finite budget spends no more than the unlimited run, and never less for more
    budgets = [0.0, 0.1, DEFAULT_RECURSION_BUDGET, 3.0, 100.0, 1e9]
    spends = [sdp_budget(b) for b in budgets]
    assert spends == sorted(spends) and spends[-1] == sdp_budget(100.0) == sdp_budget(None)


def test_an_optimiser_failure_leaves_no_figure_and_raises_nothing(monkeypatch) -> None:
    """The pipeline would drop the recursion's figure on an exception: the SDP must fail quietly."""
    import lipaudit.tight.semidefinite as semidefinite

    def refuse(*args, **kwargs):
        raise ArithmeticError("no feasible starting multipliers")

    monkeypatch.setattr(semidefinite, "sdp_bound", refuse)
    program = program_of(conv_net())
    assert program is not None
    found = solve(program, warm_start=1.0, budget=BUDGET)
    assert found.figure is None and not found.certified and "no feasible" in found.proof
