"""The circulant embedding and its polyphase blocks, against matrices built entry by entry."""

import itertools
import math

import numpy as np
import pytest
import torch

from lipaudit.spectral.blocks import PolyphaseKernel, embedding_period
from tests.spectral._reference import CASES, norm_of, reference_conv_matrix

# (name, weight shape, input spatial, strides, pads, dilations, groups) — forward convolutions
GEOMETRIES = [c[:7] for c in CASES if not c[7]] + [
    ("1d-stride4-dil3", (2, 2, 3), (13,), (4,), (1, 2), (3,), 1),
    ("2d-stride2-k4", (3, 2, 4, 4), (8, 9), (2, 2), (1, 1, 2, 1), (1, 1), 1),
    ("2d-1x1-stride2", (4, 3, 1, 1), (6, 5), (2, 2), (0, 1, 1, 0), (1, 1), 1),
    ("2d-stride-ge-span", (3, 2, 2, 2), (7, 8), (3, 2), (0, 0, 1, 0), (1, 1), 1),
    ("2d-stride3-dil2-k3", (2, 3, 3, 3), (9, 8), (3, 3), (2, 1, 1, 2), (2, 2), 1),
]


def circulant_matrix(weight, periods, strides, dilations, groups):
    """S·C: the N-periodic correlation z ↦ Σ_t W_t z[(m·s + d·t) mod N], kept at m·s, as a matrix."""
    n, kernel = len(periods), weight.shape[2:]
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    outs = [p // s for p, s in zip(periods, strides)]
    matrix = np.zeros((c_out, *outs, c_in_g * groups, *periods))
    for m in itertools.product(*map(range, outs)):
        for t in itertools.product(*map(range, kernel)):
            q = tuple((m[i] * strides[i] + dilations[i] * t[i]) % periods[i] for i in range(n))
            for g in range(groups):
                rows, cols = slice(g * c_out_g, (g + 1) * c_out_g), slice(g * c_in_g, (g + 1) * c_in_g)
                matrix[(rows, *m, cols, *q)] += weight[(rows, slice(None), *t)]
    return matrix, outs


def periods_of(geometry, extra=0):
    _, shape, spatial, strides, pads, dilations, _ = geometry
    n = len(spatial)
    return tuple(
        embedding_period(spatial[i], pads[i], pads[n + i], shape[2 + i], strides[i], dilations[i]) + extra * strides[i]
        for i in range(n)
    )


def kernel_of(geometry, seed=0, periods=None):
    _, shape, spatial, strides, pads, dilations, groups = geometry
    weight = np.random.default_rng(seed).standard_normal(shape)
    kernel = PolyphaseKernel.from_conv(torch.from_numpy(weight), spatial, pads, strides, dilations, groups, periods)
    return weight, kernel


def all_blocks(kernel):
    return kernel.blocks(torch.arange(kernel.count))


def exact_max(kernel):
    return float(torch.linalg.svdvals(all_blocks(kernel))[:, 0].max())


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
def test_the_padded_convolution_is_a_crop_of_the_strided_circulant(geometry):
    """The embedding proof in blocks.py: conv = R·S·C·E with no wrap-around, at the smallest period."""
    _, shape, spatial, strides, pads, dilations, groups = geometry
    n = len(spatial)
    weight = np.random.default_rng(1).standard_normal(shape)
    periods = periods_of(geometry)
    assert all(p % s == 0 for p, s in zip(periods, strides))
    circulant, outs = circulant_matrix(weight, periods, strides, dilations, groups)
    truth = reference_conv_matrix(weight, spatial, strides, pads, dilations, groups)
    out_sizes = [
        (spatial[i] + pads[i] + pads[n + i] - dilations[i] * (shape[2 + i] - 1) - 1) // strides[i] + 1 for i in range(n)
    ]
    assert all(o <= m for o, m in zip(out_sizes, outs))
    rows = (slice(None), *(slice(0, o) for o in out_sizes))
    cols = (slice(None), *(slice(pads[i], pads[i] + spatial[i]) for i in range(n)))
    crop = circulant[rows + cols].reshape(truth.shape)
    np.testing.assert_array_equal(crop, truth)


@pytest.mark.parametrize("extra", [0, 1])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
def test_polyphase_blocks_give_the_norm_of_the_strided_circulant_exactly(geometry, extra):
    _, shape, spatial, strides, pads, dilations, groups = geometry
    periods = periods_of(geometry, extra)
    weight, kernel = kernel_of(geometry, seed=2, periods=periods)
    circulant, _ = circulant_matrix(weight, periods, strides, dilations, groups)
    truth = norm_of(circulant.reshape(weight.shape[0] * math.prod(p // s for p, s in zip(periods, strides)), -1))
    assert exact_max(kernel) == pytest.approx(truth, rel=1e-10)
    # and it never exceeds the stride-1 circulant bound at the same period (dropping outputs)
    stride1 = PolyphaseKernel.from_conv(
        torch.from_numpy(weight), spatial, pads, (1,) * len(spatial), dilations, groups, periods
    )
    assert exact_max(kernel) <= exact_max(stride1) * (1 + 1e-12)


def test_stride_one_blocks_are_the_rfftn_of_the_dilated_kernel():
    for shape, sizes, dilations, groups in [
        ((4, 3, 3, 2), (7, 6), (1, 2), 1),
        ((6, 1, 3, 3), (8, 5), (2, 1), 3),
        ((4, 2, 2, 3, 2), (4, 7, 5), (1, 2, 2), 2),
        ((2, 3, 4), (11,), (3,), 1),
    ]:
        w = torch.from_numpy(np.random.default_rng(5).standard_normal(shape))
        n = len(sizes)
        dilated = torch.zeros((*shape[:2], *sizes), dtype=torch.float64)
        dilated[(slice(None), slice(None), *(slice(0, d * (k - 1) + 1, d) for k, d in zip(shape[2:], dilations)))] = w
        spectrum = torch.fft.rfftn(dilated, dim=tuple(range(2, 2 + n)))
        spectrum = spectrum.reshape(groups, shape[0] // groups, shape[1], -1).permute(3, 0, 1, 2)
        kernel = PolyphaseKernel.from_conv(w, sizes, (0,) * 2 * n, (1,) * n, dilations, groups, sizes)
        assert kernel.frequency_grid == (*sizes[:-1], sizes[-1] // 2 + 1)
        blocks = kernel.frequency_blocks(torch.arange(kernel.frequencies))
        torch.testing.assert_close(blocks, spectrum, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "geometry", [g for g in GEOMETRIES if g[0] in ("2d-1x1-stride2", "2d-stride-ge-span", "2d-stride3-dil2")], ids=str
)
def test_axes_whose_phases_hold_one_shift_drop_out_to_a_single_real_block(geometry):
    weight, kernel = kernel_of(geometry, seed=3)
    assert kernel.is_real and kernel.count == kernel.groups
    periods = periods_of(geometry)
    full = PolyphaseKernel.from_conv(
        torch.from_numpy(weight), geometry[2], geometry[4], geometry[3], geometry[5], geometry[6], periods
    )
    assert exact_max(kernel) == pytest.approx(exact_max(full), rel=1e-12)
    if geometry[0] == "2d-1x1-stride2":  # the 1×1 kernel: the block is W itself
        assert exact_max(kernel) == pytest.approx(norm_of(weight[:, :, 0, 0]), rel=1e-12)


# the right-hand Gram side (KᴴK) with several phases: blocks of C_in/g per pair of phases
RIGHT_SIDE = [
    ("2d-tall-stride2", (12, 2, 3, 3), (9, 9), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ("1d-tall-stride3-groups", (24, 2, 5), (13,), (3,), (2, 1), (1,), 2),
]


@pytest.mark.parametrize("geometry", GEOMETRIES + RIGHT_SIDE, ids=[g[0] for g in GEOMETRIES + RIGHT_SIDE])
def test_gram_matrices_from_the_autocorrelation_are_the_blocks_gram(geometry, monkeypatch):
    weight, kernel = kernel_of(geometry, seed=4)
    blocks = all_blocks(kernel)
    expected = blocks @ blocks.mH if kernel.left else blocks.mH @ blocks
    index = torch.arange(kernel.count)
    for route in (True, False):
        monkeypatch.setattr(PolyphaseKernel, "_use_autocorrelation", lambda self, route=route: route)
        fresh = PolyphaseKernel.from_conv(
            torch.from_numpy(weight), *geometry[2:3], geometry[4], geometry[3], geometry[5], geometry[6]
        )
        torch.testing.assert_close(fresh.gram(index), expected, rtol=0, atol=1e-11)
        frobenius, gram, lower = fresh.profile()
        sigma = torch.linalg.svdvals(blocks)[:, 0]
        exact_frobenius = torch.linalg.matrix_norm(blocks, ord="fro")
        # The autocorrelation route adds an explicit rounding allowance; the direct one is within
        # rounding of the exact figure, which the final margin covers.
        assert torch.all(frobenius >= exact_frobenius * (1 - 1e-12))
        assert torch.all(frobenius <= exact_frobenius * (1 + 1e-9) + 1e-12)
        assert torch.all(lower <= sigma * (1 + 1e-12))
        if gram is not None:
            exact_gram = torch.linalg.matrix_norm(expected, ord="fro").sqrt()
            assert torch.all(gram >= exact_gram)
            assert torch.all(gram <= exact_gram * (1 + 1e-4) + 1e-3 * float(sigma.max()))


# a composite kernel's footprint: more taps than _pair_counts takes in one chunk
LARGE_FOOTPRINT = ("2d-k21-441-taps", (2, 2, 21, 21), (24, 24), (1, 1), (10, 10, 10, 10), (1, 1), 1)


@pytest.mark.parametrize("geometry", [*GEOMETRIES, LARGE_FOOTPRINT], ids=[g[0] for g in [*GEOMETRIES, LARGE_FOOTPRINT]])
def test_the_cost_models_pair_counts_are_those_of_the_pairs_themselves(geometry):
    """gram_flops counts pairs of taps and their shifts without listing them: the same numbers."""
    for seed, wide in ((0, False), (1, True)):
        g = list(geometry)
        if wide:  # the other Gram side: more output channels than the phases' inputs
            g[1] = (g[1][0] * 8 * g[6], *g[1][1:])
        _, kernel = kernel_of(tuple(g), seed=seed)
        shifts, phase = kernel.shifts.tolist(), kernel.phase.tolist()
        pairs = [
            (t, u) for t in range(kernel.taps) for u in range(kernel.taps) if not kernel.left or phase[t] == phase[u]
        ]
        deltas = {tuple(a - b for a, b in zip(shifts[t], shifts[u])) for t, u in pairs}
        assert kernel._pair_counts() == (len(pairs), len(deltas))
        listed, _ = kernel._autocorrelation()
        assert sorted(map(tuple, listed.tolist())) == sorted(deltas)


def test_the_right_side_gram_is_used_when_it_is_smaller():
    geometry = ("wide", (8, 2, 3, 3), (9, 9), (2, 2), (1, 1, 1, 1), (1, 1), 1)  # block 8 × 2·4
    _, kernel = kernel_of(geometry)
    assert kernel.block_shape == (8, 8)
    geometry = ("tall", (12, 2, 3, 3), (9, 9), (2, 2), (1, 1, 1, 1), (1, 1), 1)  # block 12 × 8
    _, kernel = kernel_of(geometry)
    assert not kernel.left and kernel.side == 8


@pytest.mark.parametrize("geometry", GEOMETRIES[:6], ids=[g[0] for g in GEOMETRIES[:6]])
def test_plane_wave_of_the_top_singular_vector_is_a_near_optimal_start(geometry):
    """On the circulant itself the plane wave attains the norm; cropped to the input it is a start."""
    _, shape, spatial, strides, pads, dilations, groups = geometry
    periods = periods_of(geometry)
    weight, kernel = kernel_of(geometry, seed=6, periods=periods)
    blocks = all_blocks(kernel)
    sigma = torch.linalg.svdvals(blocks)[:, 0]
    top = int(torch.argmax(sigma))
    _, _, vh = torch.linalg.svd(blocks[top])
    # On the whole period (no crop, no padding offset) the real plane wave is a top singular vector.
    x = kernel.plane_wave(top, vh[0].conj(), periods, (0,) * len(pads), strides)
    circulant, _ = circulant_matrix(weight, periods, strides, dilations, groups)
    matrix = circulant.reshape(-1, x.numel())
    ratio = np.linalg.norm(matrix @ x.numpy().ravel()) / float(torch.linalg.vector_norm(x))
    assert ratio == pytest.approx(float(sigma[top]), rel=1e-9)
