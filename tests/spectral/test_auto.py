"""'auto' picks a certified method within the target of the truth, on small geometries of every kind.

The truth is the operator's matrix, built by pushing basis vectors through torch's own convolution
(not lipaudit's operator), and its largest singular value in float64.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipaudit.spectral import avgpool_norm, conv_norm, cost
from lipaudit.spectral.conv import AUTO_TARGET, adjoint_conv_geometry
from lipaudit.spectral.conv_gram import ConvGram
from lipaudit.spectral.cost import CPU_COSTS, ConvShape

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def torch_matrix(weight, spatial, strides, pads, dilations, groups, transposed=False, output_padding=None):
    """The operator's matrix: every basis vector of the input through torch's (transposed) conv.

    A Conv's pads may be asymmetric (ONNX order: begins, then ends), applied with F.pad; a
    ConvTranspose's pads are symmetric, as torch takes them."""
    n = len(spatial)
    w = torch.as_tensor(weight, dtype=torch.float64)
    channels = w.shape[0] if transposed else w.shape[1] * groups
    size = channels * math.prod(spatial)
    basis = torch.eye(size, dtype=torch.float64).reshape(size, channels, *spatial)
    if transposed:
        out = _CONV_T[n](
            basis,
            w,
            stride=strides,
            padding=pads[:n],
            output_padding=output_padding or 0,
            dilation=dilations,
            groups=groups,
        )
    else:
        order = []
        for begin, end in reversed(list(zip(pads[:n], pads[n:]))):
            order += [begin, end]
        out = _CONV[n](F.pad(basis, order), w, stride=strides, dilation=dilations, groups=groups)
    return out.reshape(size, -1).T


def top_singular_value(matrix) -> float:
    return float(torch.linalg.svdvals(matrix)[0])


# (name, weight shape, input, strides, pads, dilations, groups, transposed, output_padding)
GEOMETRIES = [
    ("3x3-at-4x4", (8, 8, 3, 3), (4, 4), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("3x3-at-2x2", (16, 16, 3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("3x3-at-1x1", (24, 16, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("3x3-stride2", (8, 4, 3, 3), (8, 8), (2, 2), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("3x3-stride2-asym", (3, 2, 3, 3), (7, 6), (2, 2), (0, 1, 1, 0), (1, 1), 1, False, None),
    ("3x3-12x12-cholesky", (8, 8, 3, 3), (12, 12), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("1x1", (6, 12, 1, 1), (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, False, None),
    ("1x1-stride2", (6, 4, 1, 1), (6, 6), (2, 2), (0, 0, 0, 0), (1, 1), 1, False, None),
    ("1x1-kmat", (4, 4, 1, 1), (16, 16), (1, 1), (0, 0, 0, 0), (1, 1), 1, False, None),
    ("7x7-stem", (8, 3, 7, 7), (4, 4), (2, 2), (3, 3, 3, 3), (1, 1), 1, False, None),
    ("7x7-depthwise", (6, 1, 7, 7), (8, 8), (1, 1), (3, 3, 3, 3), (1, 1), 6, False, None),
    ("3x3-depthwise-stride2", (8, 1, 3, 3), (8, 8), (2, 2), (1, 1, 1, 1), (1, 1), 8, False, None),
    ("groups2-dilated", (4, 3, 3, 3), (6, 6), (1, 1), (2, 2, 2, 2), (2, 2), 2, False, None),
    ("1d-long", (2, 2, 3), (700,), (1,), (1, 1), (1,), 1, False, None),
    ("1d-stride2-dilated", (3, 2, 5), (9,), (2,), (2, 1), (2,), 1, False, None),
    ("3d", (3, 2, 3, 3, 3), (3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 1, False, None),
    ("3d-1x1x1", (4, 3, 1, 1, 1), (2, 2, 2), (1, 1, 1), (0,) * 6, (1, 1, 1), 1, False, None),
    ("T-3x3-stride2", (4, 3, 3, 3), (4, 4), (2, 2), (1, 1, 1, 1), (1, 1), 1, True, (1, 1)),
    ("T-1d", (3, 2, 4), (10,), (2,), (1, 1), (1,), 1, True, (0,)),
    ("T-depthwise", (4, 1, 3, 3), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 4, True, (1, 1)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
def test_auto_is_certified_and_within_the_target(geometry):
    name, shape, spatial, strides, pads, dilations, groups, transposed, output_padding = geometry
    weight = np.random.default_rng(len(name)).standard_normal(shape)
    truth = top_singular_value(
        torch_matrix(weight, spatial, strides, pads, dilations, groups, transposed, output_padding)
    )
    result = conv_norm(
        weight,
        spatial,
        strides=strides,
        pads=pads,
        dilations=dilations,
        groups=groups,
        transposed=transposed,
        output_padding=output_padding,
    )
    assert result.certified, result.method
    assert truth * (1 - 1e-12) <= result.value <= truth * (1 + AUTO_TARGET), (result.method, result.notes)
    assert result.estimate <= truth * (1 + 1e-9)
    assert result.seconds is not None and result.seconds >= 0


def test_long_inputs_keep_the_embedding_and_tiny_ones_are_materialised():
    weight = np.random.default_rng(1).standard_normal((2, 2, 3))
    kwargs = dict(strides=(1,), pads=(1, 1), dilations=(1,))
    assert conv_norm(weight, (3000,), **kwargs).method == "fft-bnb"
    assert conv_norm(weight, (6,), **kwargs).method == "materialized"
    pointwise = np.random.default_rng(1).standard_normal((4, 4, 1, 1))
    assert conv_norm(pointwise, (48, 48), strides=(1, 1), pads=(0,) * 4, dilations=(1, 1)).method == "kmat-bnb"


def test_a_loose_embedding_is_tightened_when_the_forecast_missed_it(monkeypatch):
    # The forecast says the embedding is tight, so it runs first; at 4×4 it is ~10 % loose, and the
    # materialised operator replaces it.
    monkeypatch.setattr(cost, "predicted_gap", lambda shape: 0.0)
    weight = np.random.default_rng(2).standard_normal((8, 8, 3, 3))
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    truth = top_singular_value(torch_matrix(weight, (4, 4), (1, 1), (1, 1, 1, 1), (1, 1), 1))
    result = conv_norm(weight, (4, 4), **kwargs, costs=replace(CPU_COSTS, eigen_s=1e-7))  # ~0.2 s
    assert result.method == "materialized"
    assert any("measured the materialised operator" in note for note in result.notes), result.notes
    assert truth <= result.value <= truth * (1 + 1e-5)


def test_an_unaffordable_tightening_keeps_the_embedding_and_says_so():
    weight = np.random.default_rng(3).standard_normal((8, 8, 3, 3))
    slow = replace(CPU_COSTS, eigen_s=1.0, cholesky_s=1.0, exact_floor_s=0.0)
    result = conv_norm(weight, (4, 4), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), costs=slow)
    truth = top_singular_value(torch_matrix(weight, (4, 4), (1, 1), (1, 1, 1, 1), (1, 1), 1))
    assert result.method == "fft-bnb" and result.certified and result.value >= truth
    assert result.gap > AUTO_TARGET
    assert any("was not tried" in note for note in result.notes), result.notes


def test_explicit_limit_still_decides():
    weight = np.random.default_rng(4).standard_normal((4, 4, 3, 3))
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    assert conv_norm(weight, (4, 4), **kwargs, materialize_limit=0).method == "fft-bnb"
    assert conv_norm(weight, (4, 4), **kwargs, materialize_limit=64).method == "materialized"


def test_exact_materialises_when_affordable():
    weight = np.random.default_rng(5).standard_normal((8, 8, 3, 3))
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    truth = top_singular_value(torch_matrix(weight, (6, 6), (1, 1), (1, 1, 1, 1), (1, 1), 1))
    result = conv_norm(weight, (6, 6), **kwargs, method="exact")
    assert result.method == "materialized"
    assert truth <= result.value <= truth * (1 + 1e-6)


def test_uniform_average_pool_goes_through_the_same_choice():
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), count_include_pad=True, channels=3)
    weight = np.full((1, 1, 3, 3), 1 / 9)
    truth = top_singular_value(torch_matrix(weight, (5, 5), (1, 1), (1, 1, 1, 1), (1, 1), 1))
    result = avgpool_norm((3, 3), (5, 5), **kwargs)
    assert result.method == "materialized"
    assert truth <= result.value <= truth * (1 + 1e-6)


# ------------------------------------------------------------------ the pieces


@pytest.mark.parametrize(
    "geometry",
    [g for g in GEOMETRIES if not g[7] and math.prod(g[2]) < 200],
    ids=[g[0] for g in GEOMETRIES if not g[7] and math.prod(g[2]) < 200],
)
@pytest.mark.parametrize("by_operator", [False, True], ids=["tap-pairs", "operator"])
def test_tap_pair_gram_is_the_operator_gram(geometry, by_operator):
    name, shape, spatial, strides, pads, dilations, groups, _, _ = geometry
    weight = torch.from_numpy(np.random.default_rng(7).standard_normal(shape))
    matrix = torch_matrix(weight, spatial, strides, pads, dilations, groups)
    gram = ConvGram.build(weight, spatial, pads, strides, dilations, groups, by_operator=by_operator)
    blocks = gram.gram(torch.arange(groups))
    truth = torch.linalg.eigvalsh(matrix.T @ matrix if gram.on_input else matrix @ matrix.T)
    ours = torch.linalg.eigvalsh(blocks).flatten().sort().values
    # the groups are the operator's diagonal blocks: together, its nonzero spectrum
    np.testing.assert_allclose(ours[-10:].numpy(), truth[-10:].numpy(), rtol=1e-10, atol=1e-10)
    frobenius, lower = gram.profile()
    assert float(frobenius.pow(2).sum()) == pytest.approx(float(matrix.pow(2).sum()), rel=1e-12)
    assert float(lower.max()) <= float(truth[-1].sqrt()) * (1 + 1e-12)
    conv = ConvShape(shape[0], shape[1], groups, shape[2:], spatial, pads, strides, dilations)
    reads = int(gram.diagonal_taps.sum())
    assert conv.gram_work() == (gram.tap_pairs.shape[0], gram.scatters, reads)
    assert conv.gram_side == gram.side and conv.gram_on_input == gram.on_input


@pytest.mark.parametrize("geometry", [g for g in GEOMETRIES if g[7]], ids=[g[0] for g in GEOMETRIES if g[7]])
def test_a_conv_transpose_has_the_norm_of_its_adjoint_conv(geometry):
    name, shape, spatial, strides, pads, dilations, groups, _, output_padding = geometry
    weight = np.random.default_rng(8).standard_normal(shape)
    truth = top_singular_value(torch_matrix(weight, spatial, strides, pads, dilations, groups, True, output_padding))
    size, conv_pads = adjoint_conv_geometry(spatial, pads, output_padding, shape[2:], strides, dilations)
    adjoint = top_singular_value(torch_matrix(weight, size, strides, conv_pads, dilations, groups))
    assert adjoint == pytest.approx(truth, rel=1e-12)


def test_the_plan_never_materialises_past_the_memory_allowance():
    big = ConvShape(64, 64, 1, (3, 3), (64, 64), (1, 1, 1, 1), (1, 1), (1, 1))
    assert cost.materialized_seconds(big, CPU_COSTS) is None
    assert cost.materialized_seconds(big, replace(CPU_COSTS, gram_bytes=2**40)) > 60


def test_many_groups_share_one_estimate_and_take_a_cholesky_each():
    # 6 depthwise groups of side 576: past the eigensolver's work limit, so Lanczos on the whole
    # convolution gives the estimate and every group's Gram matrix gets a Cholesky certificate.
    weight = np.random.default_rng(9).standard_normal((6, 1, 3, 3))
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=6)
    assert not cost.uses_eigensolver(6, 576)
    truth = max(
        top_singular_value(torch_matrix(weight[g : g + 1], (24, 24), (1, 1), (1, 1, 1, 1), (1, 1), 1)) for g in range(6)
    )
    result = conv_norm(weight, (24, 24), **kwargs, method="exact")
    assert result.method == "materialized"
    assert any("Cholesky" in note for note in result.notes), result.notes
    assert truth <= result.value <= truth * (1 + 1e-6)
