"""Composite convolutions (maps.py) and the chain terms (chain.py) against materialised operators."""

import math

import pytest
import torch

from lipaudit.tight import Network
from lipaudit.tight.chain import ChainBuilder
from lipaudit.tight.conv_maps import ConvMap, Part
from lipaudit.tight.maps import DenseMap
from lipaudit.tight.recursion import targets
from lipaudit.tight.region import window_region
from tests.tight._tight_helpers import sigma, window_jacobians


def _conv_net(seed: int) -> Network:
    """3×3 pads, a 1×1, a strided and dilated conv, a grouped conv, a residual Add, a per-channel
    scale, an average pool and a concat: every rule of ConvMap is on some window's path."""
    g = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) / math.sqrt(math.prod(s[1:]))  # noqa: E731
    net = Network()
    x = net.input((1, 3, 9, 9))
    a = net.conv(x, w(4, 3, 3, 3), pads=(1, 1, 1, 1))
    a = net.activation(a, "relu")
    b = net.conv(a, w(4, 4, 1, 1))
    b = net.scale(b, torch.rand(4, 1, 1, generator=g, dtype=torch.float64) + 0.5)
    b = net.activation(b, "tanh")
    c = net.conv(b, w(4, 2, 3, 3), pads=(2, 2, 2, 2), dilations=(2, 2), groups=2)
    s = net.add([a, c], (1.0, -0.5))
    s = net.activation(s, "relu")
    d = net.conv(s, w(6, 4, 3, 3), strides=(2, 2), pads=(1, 0, 1, 0))
    e = net.conv(s, w(2, 4, 1, 1), strides=(2, 2))
    e = net.avg_pool(e, (2, 2), strides=(1, 1), pads=(1, 1, 0, 0), count_include_pad=True)
    e = net.slice(e, 3, 1, 5)
    cat = net.concat([d, e], axis=1)
    cat = net.activation(cat, "gelu")
    out = net.conv(cat, w(3, 8, 2, 2))
    net.output(out)
    return net


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("window", [1, 2, None])
def test_terms_bound_the_materialised_map(seed, window):
    """For every target and source: the conv-form terms' bound is ≥ σ_max of the autograd Jacobian,
    and whenever the map stayed one ConvMap from the source, its matrix *is* that Jacobian."""
    net = _conv_net(seed)
    conv = ChainBuilder(net, dense_limit=0)
    dense = ChainBuilder(net, dense_limit=10**6, dense_entries=10**9)
    exact_maps = 0
    for u in sorted(targets(net)):
        jacobians, region = window_jacobians(net, u, window)
        for s, matrix in jacobians.items():
            truth = sigma(matrix)
            terms = conv.propagate(s, u, region.inside)
            assert conv.bound(terms) >= truth * (1 - 1e-9)
            [dense_term] = dense.propagate(s, u, region.inside)
            assert torch.allclose(dense_term.map.columns.reshape(matrix.shape[1], -1).T, matrix, atol=1e-12)
            if len(terms) == 1 and terms[0].anchor == s and isinstance(terms[0].map, ConvMap):
                columns = terms[0].map.as_dense().reshape(matrix.shape[1], -1).T
                assert torch.allclose(columns, matrix, atol=1e-12)
                assert terms[0].map.exact_norm() >= truth
                assert terms[0].map.exact_norm() == pytest.approx(truth, rel=1e-5)
                exact_maps += 1
    assert exact_maps > 5


def test_mask_in_the_way_is_refused():
    """conv(pad 1) → conv(pad 1): the first one's crop is not a convolution's, so no merge."""
    m = ConvMap.identity((1, 2, 5, 5))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
    first = m.then_conv(w, (1, 1), (1, 1, 1, 1), (1, 1), 1, (1, 2, 5, 5), 1.0)
    assert first is not None
    assert first.then_conv(w, (1, 1), (1, 1, 1, 1), (1, 1), 1, (1, 2, 5, 5), 1.0) is None
    # a valid (unpadded) second conv reads only real outputs: merged, and equal to the pair
    second = first.then_conv(w, (1, 1), (0, 0, 0, 0), (1, 1), 1, (1, 2, 3, 3), 1.0)
    assert second is not None
    basis = torch.eye(50, dtype=torch.float64).reshape(50, 2, 5, 5)
    pair = torch.nn.functional.conv2d(torch.nn.functional.conv2d(basis, w, padding=1), w)
    assert torch.allclose(second.as_dense(), pair.reshape(50, 1, 2, 3, 3), atol=1e-12)


def test_factored_norms_equal_the_full_kernel():
    """Part.reduced drops orthonormal factors; the shortcut split keeps max(|c|, ‖c·I + B‖)."""
    g = torch.Generator().manual_seed(2)
    core = torch.randn(3, 3, 3, 3, generator=g, dtype=torch.float64)
    left = torch.randn(8, 3, generator=g, dtype=torch.float64)
    right = torch.randn(3, 8, generator=g, dtype=torch.float64)
    shape = (1, 8, 6, 6)
    branch = ConvMap([Part(core, 1.0, 0, left, right, (-1, -1))], (1, 1), shape, shape, 100.0)
    truth = sigma(branch.as_dense().reshape(288, -1))
    assert branch.exact_norm() == pytest.approx(truth, rel=1e-6) and branch.exact_norm() >= truth
    residual = ConvMap.identity(shape).times(0.7).plus(branch.times(0.3))
    residual._exact = None
    truth = sigma(residual.as_dense().reshape(288, -1))
    merged = residual._merged()
    assert merged is not None and merged[0].shape[0] == 6  # the span of the factors, not 8 channels
    assert residual.exact_norm() == pytest.approx(truth, rel=1e-6) and residual.exact_norm() >= truth


def test_dense_map_columns_are_the_operator():
    net = Network()
    x = net.input((1, 2, 4))
    h = net.dense(x, torch.arange(12.0).reshape(4, 3))
    h = net.transpose(h, (0, 2, 1))
    h = net.slice(h, 1, 0, 3, 2)
    net.output(h)
    builder = ChainBuilder(net)
    [term] = builder.propagate(0, h, window_region(net, h, None).inside)
    assert isinstance(term.map, DenseMap)
    jac, _ = window_jacobians(net, h, None)
    assert torch.allclose(term.map.columns.reshape(8, -1).T, jac[0])
