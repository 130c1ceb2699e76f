"""Network nodes: their linear forwards against torch's own ops, their norms against the
materialised operator, and the shapes they infer."""

import math

import pytest
import torch
import torch.nn.functional as F

from lipaudit.tight import Network
from tests.tight._tight_helpers import sigma


def _matrix(node, shape):
    n = math.prod(shape)
    columns = node.forward(torch.eye(n, dtype=torch.float64).reshape(n, *shape))
    return columns.reshape(n, -1).T


def _single(build, shape):
    net = Network()
    x = net.input(shape)
    y = build(net, x)
    return net, net[y]


G = torch.Generator().manual_seed(0)
W = lambda *s: torch.randn(*s, generator=G, dtype=torch.float64)  # noqa: E731


@pytest.mark.parametrize(
    "build, shape, reference",
    [
        (
            lambda n, x: n.conv(x, W(3, 2, 3, 2), strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2)),
            (1, 2, 7, 6),
            lambda t, w: F.conv2d(F.pad(t, (0, 1, 1, 2)), w, stride=(2, 1), dilation=(1, 2)),
        ),
        (
            lambda n, x: n.conv(x, W(4, 1, 3), groups=2, pads=(1, 1)),
            (1, 2, 5),
            lambda t, w: F.conv1d(t, w, padding=1, groups=2),
        ),
        (
            lambda n, x: n.conv_transpose(x, W(2, 3, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1), output_padding=(1, 1)),
            (1, 2, 4, 4),
            lambda t, w: F.conv_transpose2d(t, w, stride=2, padding=1, output_padding=1),
        ),
        (
            lambda n, x: n.avg_pool(x, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True),
            (1, 2, 6, 6),
            lambda t, w: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        ),
        (
            lambda n, x: n.avg_pool(x, (2, 2), strides=(2, 2), count_include_pad=True),
            (1, 2, 4, 4),
            lambda t, w: F.avg_pool2d(t, 2, 2),
        ),
    ],
)
def test_linear_forward_and_norm(build, shape, reference):
    net, node = _single(build, shape)
    x = torch.randn(3, *shape, dtype=torch.float64)
    expected = torch.stack([reference(v, getattr(node.op, "weight", None)) for v in x])
    assert node.shape == tuple(expected.shape[1:])
    assert torch.allclose(node.forward(x), expected, atol=1e-12)
    truth = sigma(_matrix(node, shape))
    assert node.norm() >= truth and node.norm() == pytest.approx(truth, rel=1e-5)


def test_structural_nodes():
    net = Network()
    x = net.input((1, 3, 4))
    t = net.transpose(x, (0, 2, 1))
    s = net.slice(t, 1, 1, 4, 2)
    p = net.pad(s, (0, 1, 0, 0, 0, 2))
    m = net.mean(p, (1,), keepdims=False)
    r = net.reshape(m, (1, 5))
    c = net.concat([r, r], axis=1)
    sc = net.scale(c, torch.tensor(-2.0))
    d = net.add([sc, c], (1.0, -1.0))
    net.output(d)
    v = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    [out] = net.evaluate(v)
    manual = F.pad(v.transpose(2, 3)[:, :, 1:4:2], (0, 2, 1, 0)).mean(2)
    manual = torch.cat([manual, manual], dim=2)
    assert torch.allclose(out, -3 * manual)
    for node in net.nodes[1:6]:
        assert node.norm() >= sigma(_matrix(node, net.shape(node.inputs[0])))


def test_given_norms_are_used():
    net = Network()
    x = net.input((1, 3))
    y = net.dense(x, torch.eye(3) * 2, norm=5.0)
    assert net[y].norm() == 5.0
    with pytest.raises(ValueError):
        net.dense(x, torch.eye(4))


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda n, x: n.conv(x, W(4, 3, 3, 3), strides=(2, 3), pads=(0, 1, 2, 1), dilations=(2, 1)), (1, 3, 9, 10)),
        (lambda n, x: n.conv(x, W(6, 1, 5), strides=(2,), pads=(2, 0), groups=2), (1, 2, 11)),
        (lambda n, x: n.conv(x, W(2, 2, 1, 3, 3), pads=(0, 1, 1, 0, 1, 1)), (1, 2, 3, 4, 5)),
        (
            lambda n, x: n.conv_transpose(
                x, W(4, 3, 3, 2), strides=(3, 2), pads=(1, 0, 0, 1), dilations=(1, 2), groups=2, output_padding=(2, 1)
            ),
            (1, 4, 3, 5),
        ),
        (lambda n, x: n.avg_pool(x, (3,), strides=(2,), pads=(1, 1), ceil_mode=True), (1, 2, 8)),
        (lambda n, x: n.mean(x, (1, 3), keepdims=False), (1, 2, 3, 4)),
        (lambda n, x: n.mean(x, (2,), keepdims=True), (1, 2, 3, 4)),
        (lambda n, x: n.slice(x, 2, 1, 9, 3), (1, 2, 10)),
        (lambda n, x: n.pad(x, (0, 1, 2, 0, 3, 1)), (1, 2, 3)),
        (lambda n, x: n.transpose(x, (2, 0, 1)), (1, 2, 3)),
        (lambda n, x: n.concat([x, x], 1), (1, 2, 3)),
        (lambda n, x: n.dense(x, W(3, 5)), (1, 4, 3)),
    ],
)
def test_shapes_by_arithmetic_match_the_forward(build, shape):
    """Shapes are worked out without running anything (meta tensors would import torch's compiler
    stack); they must be what the forward makes."""
    net, node = _single(build, shape)
    x = torch.zeros(1, *shape, dtype=torch.float64)
    out = node.forward(*[x] * len(node.inputs))
    assert node.shape == tuple(out.shape[1:])
