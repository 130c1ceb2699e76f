"""Convolution and average-pool norms against matrices built straight from the ONNX definitions."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipaudit.spectral import avgpool_norm, conv_norm
from lipaudit.spectral.conv import (circulant_bound, circulant_sizes, conv_operator, frequency_blocks,
                                    kmat_multiplicity_bound)

# ------------------------------------------------------------------ reference operators


def output_size(size, begin, end, kernel, stride, dilation):
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def reference_conv_matrix(weight, spatial, strides, pads, dilations, groups):
    """Dense matrix of an ONNX Conv: y[o, j] = Σ_{c,t} W[o, c, t]·x[c, j·s + d·t − pad_begin]."""
    n, kernel = len(spatial), weight.shape[2:]
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    outs = [output_size(spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i]) for i in range(n)]
    matrix = np.zeros((c_out, *outs, c_in_g * groups, *spatial))
    for j in itertools.product(*map(range, outs)):
        for t in itertools.product(*map(range, kernel)):
            p = tuple(j[i] * strides[i] + dilations[i] * t[i] - pads[i] for i in range(n))
            if not all(0 <= p[i] < spatial[i] for i in range(n)):
                continue  # the tap reads padding
            for g in range(groups):
                rows, cols = slice(g * c_out_g, (g + 1) * c_out_g), slice(g * c_in_g, (g + 1) * c_in_g)
                matrix[(rows, *j, cols, *p)] += weight[(rows, slice(None), *t)]
    return matrix.reshape(c_out * math.prod(outs), -1)


def reference_conv_transpose_matrix(weight, spatial, strides, pads, dilations, groups, output_padding):
    """Dense matrix of an ONNX ConvTranspose: the adjoint of the unpadded conv at the full size,
    with pad_begin outputs dropped at the start, pad_end at the end and output_padding added at the end."""
    n, kernel = len(spatial), weight.shape[2:]
    full = [strides[i] * (spatial[i] - 1) + dilations[i] * (kernel[i] - 1) + 1 for i in range(n)]
    adjoint = reference_conv_matrix(weight, full, strides, (0,) * (2 * n), dilations, groups).T
    channels_out = weight.shape[1] * groups
    adjoint = adjoint.reshape(channels_out, *full, -1)
    outs = [full[i] - pads[i] - pads[n + i] + output_padding[i] for i in range(n)]
    matrix = np.zeros((channels_out, *outs, adjoint.shape[-1]))
    for q in itertools.product(*map(range, outs)):
        source = tuple(q[i] + pads[i] for i in range(n))
        if all(source[i] < full[i] for i in range(n)):
            matrix[(slice(None), *q)] = adjoint[(slice(None), *source)]
    return matrix.reshape(channels_out * math.prod(outs), -1)


def reference_avgpool_matrix(kernel, spatial, strides, pads, count_include_pad, ceil_mode, dilations=None):
    """One channel of AveragePool, torch/onnxruntime semantics (checked against both below)."""
    n = len(kernel)
    dilations = dilations or (1,) * n
    outs = []
    for i in range(n):
        room = spatial[i] + pads[i] + pads[n + i] - dilations[i] * (kernel[i] - 1) - 1
        out = (-(-room // strides[i]) if ceil_mode else room // strides[i]) + 1
        if ceil_mode and (out - 1) * strides[i] >= spatial[i] + pads[i]:
            out -= 1
        outs.append(out)
    matrix = np.zeros((*outs, *spatial))
    for j in itertools.product(*map(range, outs)):
        cells = [[j[i] * strides[i] + dilations[i] * t - pads[i] for t in range(kernel[i])] for i in range(n)]
        counted = [sum(1 for p in cells[i] if (p < spatial[i] + pads[n + i] if count_include_pad else 0 <= p < spatial[i]))
                   for i in range(n)]
        for p in itertools.product(*cells):
            if all(0 <= p[i] < spatial[i] for i in range(n)):
                matrix[(*j, *p)] += 1.0 / math.prod(counted)
    return matrix.reshape(math.prod(outs), -1)


def norm_of(matrix):
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


# (name, weight shape, input spatial, strides, pads, dilations, groups, transposed, output_padding)
CASES = [
    ("1d", (3, 2, 3), (9,), (1,), (1, 1), (1,), 1, False, None),
    ("1d-stride3-asym", (2, 3, 4), (11,), (3,), (2, 0), (1,), 1, False, None),
    ("1d-dilated-groups", (4, 2, 3), (10,), (2,), (0, 3), (2,), 2, False, None),
    ("2d-same", (4, 3, 3, 3), (6, 5), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("2d-stride2-asym", (3, 2, 3, 2), (7, 6), (2, 1), (0, 1, 2, 0), (1, 2), 1, False, None),
    ("2d-groups2", (4, 2, 3, 3), (5, 6), (1, 2), (1, 0, 1, 1), (2, 1), 2, False, None),
    ("2d-depthwise", (6, 1, 3, 3), (6, 6), (2, 2), (1, 1, 1, 1), (1, 1), 3, False, None),
    ("2d-stride3-dil2", (2, 2, 2, 3), (8, 7), (3, 3), (1, 2, 0, 1), (2, 2), 1, False, None),
    ("3d", (2, 2, 2, 3, 2), (4, 3, 5), (1, 2, 1), (1, 0, 0, 0, 1, 1), (1, 1, 2), 1, False, None),
    ("3d-stride2-groups", (4, 1, 2, 2, 2), (4, 4, 3), (2, 2, 1), (0,) * 6, (1, 1, 1), 2, False, None),
    ("1d-T", (3, 2, 3), (6,), (2,), (1, 0), (1,), 1, True, (1,)),
    ("1d-T-stride3-dil2", (2, 2, 3), (5,), (3,), (2, 1), (2,), 1, True, (2,)),
    ("2d-T-asym-outpad", (2, 3, 3, 2), (4, 3), (2, 3), (0, 1, 2, 0), (1, 2), 1, True, (1, 2)),
    ("2d-T-groups", (4, 1, 3, 3), (3, 4), (2, 1), (1, 1, 1, 1), (1, 1), 2, True, (1, 0)),
    ("3d-T", (2, 2, 2, 2, 3), (3, 2, 3), (2, 1, 2), (0, 0, 1, 1, 0, 0), (1, 2, 1), 1, True, (1, 0, 1)),
]


def build(case, seed=0):
    name, shape, spatial, strides, pads, dilations, groups, transposed, output_padding = case
    weight = np.random.default_rng(seed).standard_normal(shape)
    kwargs = dict(strides=strides, pads=pads, dilations=dilations, groups=groups, transposed=transposed,
                  output_padding=output_padding)
    if transposed:
        truth = reference_conv_transpose_matrix(weight, spatial, strides, pads, dilations, groups, output_padding)
    else:
        truth = reference_conv_matrix(weight, spatial, strides, pads, dilations, groups)
    return weight, spatial, kwargs, truth


def jacobian(forward, input_shape):
    """The operator's matrix from autograd, for checking the reference matrices themselves."""
    zero = torch.zeros(input_shape, dtype=torch.float64)
    matrix = torch.autograd.functional.jacobian(lambda x: forward(x[None])[0], zero)
    return matrix.reshape(-1, math.prod(input_shape)).numpy()


# ------------------------------------------------------------------ the references are right


@pytest.mark.parametrize("n, stride, pad, dilation, groups", [(1, 2, 1, 1, 1), (2, 1, 1, 2, 2), (3, 2, 1, 1, 1)])
def test_reference_matrices_match_torch(n, stride, pad, dilation, groups):
    rng = np.random.default_rng(n)
    spatial = (5, 4, 3)[:n]
    conv, conv_t = [F.conv1d, F.conv2d, F.conv3d][n - 1], [F.conv_transpose1d, F.conv_transpose2d,
                                                             F.conv_transpose3d][n - 1]
    weight = rng.standard_normal((4, 2, *(3,) * n))
    w = torch.from_numpy(weight)
    truth = jacobian(lambda x: conv(x, w, stride=stride, padding=pad, dilation=dilation, groups=groups),
                     (2 * groups, *spatial))
    ours = reference_conv_matrix(weight, spatial, (stride,) * n, (pad,) * 2 * n, (dilation,) * n, groups)
    np.testing.assert_allclose(ours, truth, atol=1e-12)
    op = (1,) * n
    truth = jacobian(lambda x: conv_t(x, w, stride=stride, padding=pad, output_padding=op, dilation=dilation,
                                      groups=groups), (4, *spatial))
    ours = reference_conv_transpose_matrix(weight, spatial, (stride,) * n, (pad,) * 2 * n, (dilation,) * n,
                                           groups, op)
    np.testing.assert_allclose(ours, truth, atol=1e-12)


@pytest.mark.parametrize("kernel, spatial, stride, pad, include, ceil", [
    ((3,), (7,), 2, 1, False, True), ((3,), (8,), 2, 1, True, True), ((2, 3), (5, 7), 2, 1, False, False),
    ((3, 3), (6, 5), 2, 1, True, True), ((2,), (5,), 2, 1, False, True)])
def test_reference_avgpool_matches_torch(kernel, spatial, stride, pad, include, ceil):
    n = len(kernel)
    pool = [F.avg_pool1d, F.avg_pool2d, F.avg_pool3d][n - 1]
    truth = jacobian(lambda x: pool(x, kernel, stride, pad, ceil_mode=ceil, count_include_pad=include), (1, *spatial))
    ours = reference_avgpool_matrix(kernel, spatial, (stride,) * n, (pad,) * 2 * n, include, ceil)
    np.testing.assert_allclose(ours, truth, atol=1e-12)


# ------------------------------------------------------------------ conv_norm against the truth


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv_operator_is_the_reference_operator(case):
    weight, spatial, kwargs, truth = build(case)
    operator = conv_operator(torch.from_numpy(weight), spatial, **kwargs)
    np.testing.assert_allclose(jacobian(operator.forward, operator.input_shape), truth, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_method_brackets_the_true_norm(case):
    weight, spatial, kwargs, matrix = build(case)
    truth = norm_of(matrix)

    exact = conv_norm(weight, spatial, **kwargs)
    assert (exact.method, exact.certified) == ("materialized", True)
    assert truth * (1 - 1e-12) <= exact.value <= truth * (1 + 1e-6)

    bounds = {method: conv_norm(weight, spatial, **kwargs, method=method, materialize_limit=0)
              for method in ("exact", "gram", "frobenius")}
    assert bounds["exact"].method in ("fft-exact", "kmat-multiplicity")
    assert bounds["gram"].method == "fft-gram"
    assert bounds["frobenius"].method == "fft-frobenius"
    for result in bounds.values():
        assert result.certified
        assert result.value >= truth * (1 - 1e-9)
        assert result.frobenius >= truth
        assert result.estimate <= truth * (1 + 1e-9)
        assert result.estimate >= 0.95 * truth
    assert bounds["gram"].value <= bounds["frobenius"].value * (1 + 1e-9)

    power = conv_norm(weight, spatial, **kwargs, method="power")
    assert (power.method, power.certified) == ("power", False)
    assert 0.95 * truth <= power.value <= truth * (1 + 1e-9)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_both_kernel_bounds_hold_on_their_own(case):
    weight, spatial, kwargs, matrix = build(case, seed=1)
    truth = norm_of(matrix)
    w = torch.from_numpy(weight)
    n = len(spatial)
    strides, dilations, pads = kwargs["strides"], kwargs["dilations"], kwargs["pads"]
    if kwargs["transposed"]:  # bounded through the unpadded conv at the full size
        spatial = tuple(s * (h - 1) + d * (k - 1) + 1 for h, k, s, d in zip(spatial, w.shape[2:], strides, dilations))
        pads = (0,) * (2 * n)
    sizes = circulant_sizes(spatial, pads, w.shape[2:], strides, dilations)
    svd = circulant_bound(w, sizes, dilations, kwargs["groups"], "svd")
    gram = circulant_bound(w, sizes, dilations, kwargs["groups"], "gram")
    assert svd >= truth * (1 - 1e-9)
    assert svd * (1 - 1e-12) <= gram <= svd * (1 + 1e-7)
    assert kmat_multiplicity_bound(w, kwargs["groups"], strides, dilations) >= truth * (1 - 1e-9)


@pytest.mark.parametrize("kernel, spatial, pads", [
    ([1.0, -1.0], (9,), (1, 1)), ([1.0, -1.0], (9,), (0, 1)), ([1.0, -1.0], (7,), (1, 0)),
    ([1.0, -1.0], (9,), (2, 2)), ([[1.0, -1.0], [-1.0, 1.0]], (7, 9), (1, 1, 1, 1)),
    ([[1.0, -1.0], [-1.0, 1.0]], (7, 7), (0, 1, 1, 0))])
def test_fft_period_leaves_room_for_the_padding(kernel, spatial, pads):
    # The difference kernel's symbol 2|sin(πω/N)| peaks between grid points for odd N, so a
    # period without room for the padding (N = H) falls below the true norm: these cases catch it.
    weight = np.array(kernel)[None, None]
    n = len(spatial)
    truth = norm_of(reference_conv_matrix(weight, spatial, (1,) * n, pads, (1,) * n, 1))
    w = torch.from_numpy(weight)
    sizes = circulant_sizes(spatial, pads, weight.shape[2:], (1,) * n, (1,) * n)
    assert circulant_bound(w, sizes, (1,) * n, 1) >= truth * (1 - 1e-12)
    assert circulant_bound(w, spatial, (1,) * n, 1) < truth


@pytest.mark.parametrize("kernel, stride, dilation", [(3, 2, 2), (4, 2, 1), (3, 3, 2), (5, 2, 4), (3, 4, 2),
                                                      (2, 3, 3), (6, 4, 2)])
def test_multiplicity_bound_is_sound_and_tight_for_a_flat_kernel(kernel, stride, dilation):
    # With a flat kernel on a long input, an input value really does sit in (nearly) that many
    # windows at once, so a multiplicity that forgot gcd(s, d) would undercut the truth.
    weight = np.ones((1, 1, kernel))
    truth = norm_of(reference_conv_matrix(weight, (80,), (stride,), (0, 0), (dilation,), 1))
    bound = kmat_multiplicity_bound(torch.from_numpy(weight), 1, (stride,), (dilation,))
    assert truth * (1 - 1e-12) <= bound <= 1.1 * truth


def test_fft_bound_is_exact_for_a_1x1_convolution():
    weight = np.random.default_rng(2).standard_normal((5, 3, 1, 1))
    truth = norm_of(weight[:, :, 0, 0])
    result = conv_norm(weight, (40, 40), strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), materialize_limit=0)
    assert result.certified
    assert truth * (1 - 1e-12) <= result.value <= truth * (1 + 2e-6)


def test_kmat_bound_is_exact_and_chosen_for_non_overlapping_windows():
    # stride = kernel and no padding: every input falls in exactly one patch, the operator is block diagonal.
    weight = np.random.default_rng(3).standard_normal((3, 2, 2, 2))
    spatial, kwargs = (6, 4), dict(strides=(2, 2), pads=(0,) * 4, dilations=(1, 1))
    truth = norm_of(reference_conv_matrix(weight, spatial, groups=1, **kwargs))
    assert truth == pytest.approx(norm_of(weight.reshape(3, -1)), rel=1e-12)
    result = conv_norm(weight, spatial, **kwargs, method="exact", materialize_limit=0)
    assert result.method == "kmat-multiplicity"
    assert truth * (1 - 1e-12) <= result.value <= truth * (1 + 1e-6)


def test_fft_bound_approaches_the_norm_as_the_input_grows():
    # A stride-1 convolution on a large input is close to its circular version.
    weight = np.random.default_rng(4).standard_normal((3, 3, 3, 3))
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    gaps = []
    for size in (8, 16):
        fft = conv_norm(weight, (size, size), **kwargs, method="exact", materialize_limit=0, power_iterations=0)
        assert fft.method == "fft-exact"
        exact = conv_norm(weight, (size, size), **kwargs)
        assert exact.method == "materialized"
        gaps.append(fft.value / exact.value - 1)
    assert 0 <= gaps[1] < gaps[0]
    assert gaps[1] < 0.02


# ------------------------------------------------------------------ the frequency blocks


@pytest.mark.parametrize("shape, sizes, dilations, groups", [
    ((4, 3, 3, 2), (7, 6), (1, 2), 1), ((6, 1, 3, 3), (8, 5), (2, 1), 3), ((4, 2, 2, 3, 2), (4, 7, 5), (1, 2, 2), 2),
    ((2, 3, 4), (11,), (3,), 1)])
def test_chunked_blocks_are_the_rfftn_of_the_dilated_kernel(shape, sizes, dilations, groups):
    w = torch.from_numpy(np.random.default_rng(5).standard_normal(shape))
    n = len(sizes)
    dilated = torch.zeros((*shape[:2], *sizes), dtype=torch.float64)
    dilated[(slice(None), slice(None), *(slice(0, d * (k - 1) + 1, d) for k, d in zip(shape[2:], dilations)))] = w
    spectrum = torch.fft.rfftn(dilated, dim=tuple(range(2, 2 + n)))  # (C_out, C_in/g, *grid)
    spectrum = spectrum.reshape(groups, shape[0] // groups, shape[1], -1).permute(3, 0, 1, 2)
    for chunk in (1, 7, None):
        blocks = torch.cat(list(frequency_blocks(w, sizes, dilations, groups, chunk)))
        torch.testing.assert_close(blocks, spectrum, rtol=0, atol=1e-12)
    for reduce in ("svd", "gram", "frobenius"):
        one = circulant_bound(w, sizes, dilations, groups, reduce, chunk=1)
        assert one == pytest.approx(circulant_bound(w, sizes, dilations, groups, reduce), rel=1e-14)


# ------------------------------------------------------------------ average pooling

# (name, kernel, input spatial, strides, pads, count_include_pad, ceil_mode, dilations)
POOLS = [
    ("1d-exclude-pad", (3,), (7,), (2,), (1, 1), False, False, None),
    ("1d-ceil-include", (3,), (9,), (2,), (0, 1), True, True, None),
    ("1d-ceil-drops-last", (2,), (5,), (2,), (1, 1), False, True, None),
    ("2d-asym-exclude-ceil", (3, 2), (7, 6), (2, 2), (1, 0, 1, 1), False, True, None),
    ("2d-uniform-no-pad", (2, 2), (6, 6), (2, 2), (0,) * 4, False, False, None),
    ("2d-uniform-include-pad", (3, 3), (5, 5), (1, 1), (1, 1, 1, 1), True, False, None),
    ("2d-dilated-exclude", (2, 2), (7, 6), (1, 2), (1, 0, 0, 1), False, False, (2, 2)),
    ("3d-exclude-pad", (2, 2, 2), (3, 4, 3), (1, 2, 1), (1, 0, 0, 0, 1, 1), False, False, None),
]


@pytest.mark.parametrize("pool", POOLS, ids=[p[0] for p in POOLS])
def test_avgpool_brackets_the_true_norm(pool):
    name, kernel, spatial, strides, pads, include, ceil, dilations = pool
    truth = norm_of(reference_avgpool_matrix(kernel, spatial, strides, pads, include, ceil, dilations))
    kwargs = dict(strides=strides, pads=pads, count_include_pad=include, channels=3, ceil_mode=ceil,
                  dilations=dilations)
    uniform = "uniform" in name

    exact = avgpool_norm(kernel, spatial, **kwargs)
    assert (exact.method, exact.certified) == ("materialized", True)
    assert truth * (1 - 1e-12) <= exact.value <= truth * (1 + 1e-6)

    bound = avgpool_norm(kernel, spatial, **kwargs, materialize_limit=0)
    assert bound.certified
    assert bound.method in (("fft-exact", "kmat-multiplicity") if uniform else ("schur",))
    assert bound.value >= truth * (1 - 1e-9)
    assert truth * 0.95 <= bound.estimate <= truth * (1 + 1e-9)

    power = avgpool_norm(kernel, spatial, **kwargs, method="power")
    assert (power.method, power.certified) == ("power", False)
    assert power.value <= truth * (1 + 1e-9)


def test_uniform_avgpool_with_stride_equal_to_kernel_is_one_over_root_window():
    result = avgpool_norm((2, 2), (64, 64), strides=(2, 2), pads=(0,) * 4, count_include_pad=False, channels=8,
                          materialize_limit=0)
    assert result.method == "kmat-multiplicity"
    assert result.value == pytest.approx(0.5, rel=1e-6)


# ------------------------------------------------------------------ agreement with onnxruntime


def run_onnx(op_type, x, weight=None, **attributes):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inputs = ["x"] + (["w"] if weight is not None else [])
    initializers = [numpy_helper.from_array(weight.astype(np.float32), "w")] if weight is not None else []
    graph = helper.make_graph([helper.make_node(op_type, inputs, ["y"], **attributes)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


@pytest.mark.parametrize("case", [c for c in CASES if c[7]], ids=[c[0] for c in CASES if c[7]])
def test_conv_transpose_operator_matches_onnxruntime(case):
    weight, spatial, kwargs, _ = build(case)
    operator = conv_operator(torch.from_numpy(weight), spatial, **kwargs)
    x = np.random.default_rng(6).standard_normal((1, *operator.input_shape))
    expected = run_onnx("ConvTranspose", x, weight, strides=kwargs["strides"], pads=kwargs["pads"],
                        dilations=kwargs["dilations"], group=kwargs["groups"],
                        output_padding=kwargs["output_padding"])
    ours = operator.forward(torch.from_numpy(x)).numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("pool", [p for p in POOLS if p[7] is None], ids=[p[0] for p in POOLS if p[7] is None])
def test_avgpool_reference_matches_onnxruntime(pool):
    _, kernel, spatial, strides, pads, include, ceil, _ = pool
    x = np.random.default_rng(7).standard_normal((1, 1, *spatial))
    expected = run_onnx("AveragePool", x, kernel_shape=kernel, strides=strides, pads=pads,
                        count_include_pad=int(include), ceil_mode=int(ceil))
    ours = reference_avgpool_matrix(kernel, spatial, strides, pads, include, ceil) @ x.ravel()
    np.testing.assert_allclose(ours, expected.ravel(), atol=1e-5)


# ------------------------------------------------------------------ arguments and devices


@pytest.mark.parametrize("kwargs, message", [
    (dict(strides=(1,), pads=(0, 0, 0, 0), dilations=(1, 1)), "needs 2 input sizes"),
    (dict(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), groups=2), "divisible by groups"),
    (dict(strides=(1, 1), pads=(0,) * 4, dilations=(5, 1)), "no output"),
    (dict(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), method="spectral"), "unknown method"),
])
def test_bad_conv_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv_norm(np.ones((3, 2, 3, 3)), (4, 4), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES[::4], ids=[c[0] for c in CASES[::4]])
def test_conv_norm_on_cuda_matches_the_cpu(case):
    weight, spatial, kwargs, _ = build(case)
    cuda = torch.device("cuda")
    for method, limit in (("auto", 4096), ("exact", 0), ("gram", 0), ("frobenius", 0)):
        on_cpu = conv_norm(weight, spatial, **kwargs, method=method, materialize_limit=limit)
        on_gpu = conv_norm(torch.from_numpy(weight).to(cuda), spatial, **kwargs, method=method,
                           materialize_limit=limit, device=cuda)
        assert on_gpu.method == on_cpu.method
        assert on_gpu.value == pytest.approx(on_cpu.value, rel=1e-9)
