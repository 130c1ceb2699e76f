"""A convolution node's explicit matrix (operators.py) against its forward."""

import pytest
import torch

from lipaudit.tight import Network
from lipaudit.tight.chain import ChainBuilder
from lipaudit.tight.operators import conv_operator, cropped_forward


def _one_conv(in_shape, weight_shape, settings, seed: int):
    """A network of one convolution with random float64 weights: (network, its input, the conv node,
    the generator, for the caller's inputs)."""
    g = torch.Generator().manual_seed(seed)
    net = Network()
    x = net.input(in_shape)
    y = net.conv(x, torch.randn(*weight_shape, generator=g, dtype=torch.float64), **settings)
    net.output(y)
    return net, x, net[y], g


@pytest.mark.parametrize(
    "in_shape, weight_shape, settings",
    [
        ((1, 8, 1, 1), (8, 8, 3, 3), dict(pads=(1, 1, 1, 1))),
        ((1, 6, 2, 2), (6, 6, 3, 3), dict(pads=(1, 1, 1, 1))),
        ((1, 4, 3, 3), (6, 4, 5, 5), dict(strides=(2, 2), pads=(2, 1, 2, 1))),
        ((1, 6, 1, 2), (6, 2, 3, 3), dict(pads=(2, 2, 2, 2), dilations=(2, 2), groups=3)),
        ((1, 8, 2, 2), (8, 1, 7, 7), dict(pads=(3, 3, 3, 3), groups=8)),
        ((1, 5, 2), (4, 5, 3), dict(pads=(1, 0))),
    ],
)
def test_the_matrix_is_the_forward(in_shape, weight_shape, settings):
    net, x, node, g = _one_conv(in_shape, weight_shape, settings, 0)
    matrix = conv_operator(node, in_shape)
    assert matrix is not None
    batch = torch.randn(7, *in_shape, generator=g, dtype=torch.float64)
    expected = node.forward(batch).reshape(7, -1)
    assert torch.allclose(batch.reshape(7, -1) @ matrix.T, expected, rtol=1e-12, atol=1e-12)
    # the chain builder's push gives the same explicit matrix, from the identity and from others
    builder = ChainBuilder(net)
    identity = builder.identity(x)
    pushed = builder.then(identity, node)
    assert torch.allclose(pushed.columns.reshape(identity.columns.shape[0], -1), matrix.T, atol=0)
    again = builder._push(batch, node)
    assert torch.allclose(again.reshape(7, -1), expected, rtol=1e-12, atol=1e-12)


def test_a_large_grid_keeps_the_convolution():
    """On a grid where the kernel's taps all read the grid, the matrix costs more than the
    convolution: none is written."""
    net = Network()
    x = net.input((1, 4, 16, 16))
    y = net.conv(x, torch.ones(4, 4, 3, 3, dtype=torch.float64), pads=(1, 1, 1, 1))
    net.output(y)
    assert conv_operator(net[y], (1, 4, 16, 16)) is None


@pytest.mark.parametrize(
    "in_shape, weight_shape, settings",
    [
        ((1, 8, 1, 1), (8, 1, 7, 7), dict(pads=(3, 3, 3, 3), groups=8)),
        ((1, 8, 2, 3), (8, 1, 7, 7), dict(pads=(3, 3, 3, 3), groups=8)),
        ((1, 6, 3, 3), (6, 2, 5, 5), dict(strides=(2, 2), pads=(2, 1, 2, 3), groups=3)),
        ((1, 4, 2), (4, 4, 5), dict(pads=(1, 3))),
    ],
)
def test_the_cropped_forward_is_the_forward(in_shape, weight_shape, settings):
    """Only the taps that read the grid: the same images, entry by entry."""
    _, _, node, g = _one_conv(in_shape, weight_shape, settings, 1)
    batch = torch.randn(5, *in_shape, generator=g, dtype=torch.float64)
    found = cropped_forward(node, batch, in_shape)
    assert found is not None
    assert torch.allclose(found, node.forward(batch), rtol=1e-12, atol=1e-12)
