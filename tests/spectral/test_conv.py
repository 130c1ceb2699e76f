"""Convolution and average-pool norms against matrices built straight from the ONNX definitions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipaudit.spectral import avgpool_norm, bnb, conv_norm
from lipaudit.spectral.conv import circulant_norm, circulant_sizes, conv_operator, kmat_multiplicity_bound
from tests.spectral._reference import (
    CASES,
    build,
    jacobian,
    norm_of,
    reference_avgpool_matrix,
    reference_conv_matrix,
    reference_conv_transpose_matrix,
)


def embedding(case):
    """'fft' or 'polyphase': the embedding conv_norm should report for a case (or 'kmat')."""
    return "polyphase" if any(s > 1 for s in case[3]) else "fft"


# ------------------------------------------------------------------ the references are right


@pytest.mark.parametrize("n, stride, pad, dilation, groups", [(1, 2, 1, 1, 1), (2, 1, 1, 2, 2), (3, 2, 1, 1, 1)])
def test_reference_matrices_match_torch(n, stride, pad, dilation, groups):
    rng = np.random.default_rng(n)
    spatial = (5, 4, 3)[:n]
    conv, conv_t = (
        [F.conv1d, F.conv2d, F.conv3d][n - 1],
        [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d][n - 1],
    )
    weight = rng.standard_normal((4, 2, *(3,) * n))
    w = torch.from_numpy(weight)
    truth = jacobian(
        lambda x: conv(x, w, stride=stride, padding=pad, dilation=dilation, groups=groups), (2 * groups, *spatial)
    )
    ours = reference_conv_matrix(weight, spatial, (stride,) * n, (pad,) * 2 * n, (dilation,) * n, groups)
    np.testing.assert_allclose(ours, truth, atol=1e-12)
    op = (1,) * n
    truth = jacobian(
        lambda x: conv_t(x, w, stride=stride, padding=pad, output_padding=op, dilation=dilation, groups=groups),
        (4, *spatial),
    )
    ours = reference_conv_transpose_matrix(weight, spatial, (stride,) * n, (pad,) * 2 * n, (dilation,) * n, groups, op)
    np.testing.assert_allclose(ours, truth, atol=1e-12)


@pytest.mark.parametrize(
    "kernel, spatial, stride, pad, include, ceil",
    [
        ((3,), (7,), 2, 1, False, True),
        ((3,), (8,), 2, 1, True, True),
        ((2, 3), (5, 7), 2, 1, False, False),
        ((3, 3), (6, 5), 2, 1, True, True),
        ((2,), (5,), 2, 1, False, True),
    ],
)
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
def test_the_written_out_adjoint_is_the_transpose(case):
    weight, spatial, kwargs, truth = build(case)
    operator = conv_operator(torch.from_numpy(weight), spatial, **kwargs)
    y = torch.from_numpy(np.random.default_rng(12).standard_normal((3, *operator.output_shape)))
    pulled = operator.adjoint(y)
    assert pulled.shape == (3, *operator.input_shape)
    np.testing.assert_allclose(pulled.reshape(3, -1).numpy(), y.reshape(3, -1).numpy() @ truth, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_method_brackets_the_true_norm(case):
    weight, spatial, kwargs, matrix = build(case)
    truth = norm_of(matrix)

    exact = conv_norm(weight, spatial, **kwargs)
    assert (exact.method, exact.certified) == ("materialized", True)
    assert truth * (1 - 1e-12) <= exact.value <= truth * (1 + 1e-6)

    bounds = {
        method: conv_norm(weight, spatial, **kwargs, method=method, materialize_limit=0)
        for method in ("auto", "exact", "gram", "frobenius")
    }
    figures = {"auto": "bnb", "exact": "exact", "gram": "gram", "frobenius": "frobenius"}
    for method, result in bounds.items():
        prefix, figure = result.method.rsplit("-", 1)
        assert figure == figures[method]
        assert prefix in (embedding(case), "kmat"), result.method
        assert result.certified
        assert result.value >= truth * (1 - 1e-9)
        assert result.frobenius >= truth
        assert result.estimate <= truth * (1 + 1e-9)
        assert result.estimate >= 0.95 * truth
        assert result.gap == pytest.approx(result.value / result.estimate - 1, rel=1e-9, abs=1e-12)
    # branch and bound: the exact figure within its tolerance
    assert bounds["auto"].value == pytest.approx(bounds["exact"].value, rel=2 * bnb.BNB_TOL)
    assert bounds["exact"].value <= bounds["gram"].value * (1 + 1e-9)
    assert bounds["gram"].value <= bounds["frobenius"].value * (1 + 1e-9)

    power = conv_norm(weight, spatial, **kwargs, method="power")
    assert (power.method, power.certified) == ("power", False)
    assert 0.95 * truth <= power.value <= truth * (1 + 1e-9)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_strided_bound_keeps_the_stride_and_never_exceeds_the_stride_one_bound(case):
    weight, spatial, kwargs, matrix = build(case, seed=1)
    truth = norm_of(matrix)
    w = torch.from_numpy(weight)
    n = len(spatial)
    strides, dilations, pads = kwargs["strides"], kwargs["dilations"], kwargs["pads"]
    if kwargs["transposed"]:  # bounded through the unpadded conv at the full size
        spatial = tuple(s * (h - 1) + d * (k - 1) + 1 for h, k, s, d in zip(spatial, w.shape[2:], strides, dilations))
        pads = (0,) * (2 * n)
    periods = circulant_sizes(spatial, pads, w.shape[2:], strides, dilations)
    strided, _ = circulant_norm(w, spatial, pads, strides, dilations, kwargs["groups"], mode="exact")
    # the classical bound at the same period: the stride-1 circulant (the stride thrown away)
    classical, _ = circulant_norm(
        w, spatial, pads, (1,) * n, dilations, kwargs["groups"], mode="exact", periods=periods
    )
    assert strided.upper >= truth * (1 - 1e-12)
    assert strided.upper <= classical.upper * (1 + 1e-12)
    assert kmat_multiplicity_bound(w, kwargs["groups"], strides, dilations) >= truth * (1 - 1e-9)


def test_polyphase_is_much_tighter_than_the_stride_one_bound_on_a_strided_layer():
    weight = np.random.default_rng(8).standard_normal((8, 8, 3, 3))
    spatial, kwargs = (24, 24), dict(strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1))
    truth = norm_of(reference_conv_matrix(weight, spatial, groups=1, **kwargs))
    ours = conv_norm(weight, spatial, **kwargs, materialize_limit=0)
    classical, _ = circulant_norm(torch.from_numpy(weight), spatial, (1, 1, 1, 1), (1, 1), (1, 1), 1, mode="exact")
    assert ours.method == "polyphase-bnb"
    assert truth <= ours.value <= truth * 1.03
    assert ours.value < 0.95 * classical.upper


@pytest.mark.parametrize(
    "kernel, spatial, pads",
    [
        ([1.0, -1.0], (9,), (1, 1)),
        ([1.0, -1.0], (9,), (0, 1)),
        ([1.0, -1.0], (7,), (1, 0)),
        ([1.0, -1.0], (9,), (2, 2)),
        ([[1.0, -1.0], [-1.0, 1.0]], (7, 9), (1, 1, 1, 1)),
        ([[1.0, -1.0], [-1.0, 1.0]], (7, 7), (0, 1, 1, 0)),
    ],
)
def test_fft_period_leaves_room_for_the_padding(kernel, spatial, pads):
    # The difference kernel's symbol 2|sin(πω/N)| peaks between grid points for odd N, so a
    # period without room for the padding (N = H) falls below the true norm: these cases catch it.
    weight = np.array(kernel)[None, None]
    n = len(spatial)
    truth = norm_of(reference_conv_matrix(weight, spatial, (1,) * n, pads, (1,) * n, 1))
    w = torch.from_numpy(weight)
    ones = (1,) * n
    sizes = circulant_sizes(spatial, pads, weight.shape[2:], ones, ones)
    assert sizes == tuple(h + pads[i] + pads[n + i] for i, h in enumerate(spatial))
    assert circulant_norm(w, spatial, pads, ones, ones, 1, mode="exact")[0].upper >= truth * (1 - 1e-12)
    assert circulant_norm(w, spatial, pads, ones, ones, 1, mode="exact", periods=spatial)[0].upper < truth


@pytest.mark.parametrize(
    "kernel, stride, dilation", [(3, 2, 2), (4, 2, 1), (3, 3, 2), (5, 2, 4), (3, 4, 2), (2, 3, 3), (6, 4, 2)]
)
def test_multiplicity_bound_is_sound_and_tight_for_a_flat_kernel(kernel, stride, dilation):
    # With a flat kernel on a long input, an input value really does sit in (nearly) that many
    # windows at once, so a multiplicity that forgot gcd(s, d) would undercut the truth.
    weight = np.ones((1, 1, kernel))
    truth = norm_of(reference_conv_matrix(weight, (80,), (stride,), (0, 0), (dilation,), 1))
    bound = kmat_multiplicity_bound(torch.from_numpy(weight), 1, (stride,), (dilation,))
    assert truth * (1 - 1e-12) <= bound <= 1.1 * truth


def test_1x1_convolution_is_one_dense_norm_with_or_without_stride():
    # 1×1 kernel: the operator is W applied at every kept pixel, norm ‖W‖₂ exactly (with a stride,
    # a subset of the pixels, still ‖W‖₂ as long as one output reads the input).  No FFT.
    weight = np.random.default_rng(2).standard_normal((5, 3, 1, 1))
    truth = norm_of(weight[:, :, 0, 0])
    for strides in ((1, 1), (2, 2)):
        result = conv_norm(weight, (40, 40), strides=strides, pads=(0,) * 4, dilations=(1, 1), materialize_limit=0)
        assert result.method == "kmat-bnb" and result.certified
        assert truth * (1 - 1e-12) <= result.value <= truth * (1 + 2e-6)
        assert result.estimate == pytest.approx(truth, rel=1e-9)


def test_non_overlapping_windows_are_one_block_and_exact():
    # stride = kernel and no padding: every input falls in exactly one patch, the operator is block diagonal.
    weight = np.random.default_rng(3).standard_normal((3, 2, 2, 2))
    spatial, kwargs = (6, 4), dict(strides=(2, 2), pads=(0,) * 4, dilations=(1, 1))
    truth = norm_of(reference_conv_matrix(weight, spatial, groups=1, **kwargs))
    assert truth == pytest.approx(norm_of(weight.reshape(3, -1)), rel=1e-12)
    for method in ("auto", "exact"):
        result = conv_norm(weight, spatial, **kwargs, method=method, materialize_limit=0)
        assert result.method.startswith("kmat-")
        assert truth * (1 - 1e-12) <= result.value <= truth * (1 + 2e-6)


def test_fft_bound_approaches_the_norm_as_the_input_grows():
    # A stride-1 convolution on a large input is close to its circular version.
    weight = np.random.default_rng(4).standard_normal((3, 3, 3, 3))
    kwargs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    gaps = []
    for size in (8, 16):
        fft = conv_norm(weight, (size, size), **kwargs, method="exact", materialize_limit=0, power_iterations=0)
        assert fft.method == "fft-exact" and fft.estimate is None
        exact = conv_norm(weight, (size, size), **kwargs)
        assert exact.method == "materialized"
        gaps.append(fft.value / exact.value - 1)
    assert 0 <= gaps[1] < gaps[0]
    assert gaps[1] < 0.02


@pytest.mark.parametrize("case", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_chunked_equals_unchunked(case, monkeypatch):
    weight, spatial, kwargs, _ = build(case, seed=9)
    whole = {
        m: conv_norm(weight, spatial, **kwargs, method=m, materialize_limit=0, power_iterations=0).value
        for m in ("auto", "exact")
    }
    monkeypatch.setattr(bnb, "WORK_CHUNK_BYTES", 1)
    for method, value in whole.items():
        chunked = conv_norm(weight, spatial, **kwargs, method=method, materialize_limit=0, power_iterations=0)
        assert chunked.value == pytest.approx(value, rel=2 * bnb.BNB_TOL if method == "auto" else 1e-12)


def test_random_kernels_and_shapes_are_certified():
    """Random geometries (1-3 d, strides, dilations, groups, transposed): bound ≥ truth ≥ estimate."""
    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(16):
        n = (1, 2, 2, 3)[trial % 4]
        groups = int(rng.choice([1, 2]))
        c_in_g, c_out = int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        kernel = tuple(int(k) for k in rng.integers(1, 4, size=n))
        strides = tuple(int(s) for s in rng.integers(1, 4, size=n))
        dilations = tuple(int(d) for d in rng.integers(1, 3, size=n))
        spatial = tuple(int(h) for h in rng.integers(4, 7 if n < 3 else 5, size=n))
        pads = tuple(int(p) for p in rng.integers(0, 3, size=2 * n))
        transposed = trial % 3 == 2
        span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
        if transposed:
            weight = rng.standard_normal((c_in_g * groups, c_out // groups, *kernel))
            outs = [
                s * (h - 1) + sp - pads[i] - pads[n + i] for i, (h, s, sp) in enumerate(zip(spatial, strides, span))
            ]
            if min(outs) < 1:
                continue
            matrix = reference_conv_transpose_matrix(weight, spatial, strides, pads, dilations, groups, (0,) * n)
            truth = norm_of(matrix)
        else:
            if any(spatial[i] + pads[i] + pads[n + i] < span[i] for i in range(n)):
                continue
            weight = rng.standard_normal((c_out, c_in_g, *kernel))
            truth = norm_of(reference_conv_matrix(weight, spatial, strides, pads, dilations, groups))
        kwargs = dict(strides=strides, pads=pads, dilations=dilations, groups=groups, transposed=transposed)
        result = conv_norm(weight, spatial, **kwargs, materialize_limit=0)
        assert result.certified and result.value >= truth * (1 - 1e-9), (trial, result.method)
        assert result.estimate <= truth * (1 + 1e-9)
        checked += 1
    assert checked >= 10


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
    kwargs = dict(
        strides=strides, pads=pads, count_include_pad=include, channels=3, ceil_mode=ceil, dilations=dilations
    )
    uniform = "uniform" in name

    exact = avgpool_norm(kernel, spatial, **kwargs)
    assert (exact.method, exact.certified) == ("materialized", True)
    assert truth * (1 - 1e-12) <= exact.value <= truth * (1 + 1e-6)

    bound = avgpool_norm(kernel, spatial, **kwargs, materialize_limit=0)
    assert bound.certified
    if uniform:
        assert bound.method.endswith("-bnb") and bound.method.split("-")[0] in ("fft", "polyphase", "kmat")
    else:
        assert bound.method == "schur"
    assert bound.value >= truth * (1 - 1e-9)
    assert truth * 0.95 <= bound.estimate <= truth * (1 + 1e-9)

    power = avgpool_norm(kernel, spatial, **kwargs, method="power")
    assert (power.method, power.certified) == ("power", False)
    assert power.value <= truth * (1 + 1e-9)


def test_uniform_avgpool_with_stride_equal_to_kernel_is_one_over_root_window():
    result = avgpool_norm(
        (2, 2), (64, 64), strides=(2, 2), pads=(0,) * 4, count_include_pad=False, channels=8, materialize_limit=0
    )
    assert result.method == "kmat-bnb"
    assert 0.5 <= result.value <= 0.5 * (1 + 2e-6)


# ------------------------------------------------------------------ agreement with onnxruntime


def run_onnx(op_type, x, weight=None, **attributes):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inputs = ["x"] + (["w"] if weight is not None else [])
    initializers = [numpy_helper.from_array(weight.astype(np.float32), "w")] if weight is not None else []
    graph = helper.make_graph(
        [helper.make_node(op_type, inputs, ["y"], **attributes)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


@pytest.mark.parametrize("case", [c for c in CASES if c[7]], ids=[c[0] for c in CASES if c[7]])
def test_conv_transpose_operator_matches_onnxruntime(case):
    weight, spatial, kwargs, _ = build(case)
    operator = conv_operator(torch.from_numpy(weight), spatial, **kwargs)
    x = np.random.default_rng(6).standard_normal((1, *operator.input_shape))
    expected = run_onnx(
        "ConvTranspose",
        x,
        weight,
        strides=kwargs["strides"],
        pads=kwargs["pads"],
        dilations=kwargs["dilations"],
        group=kwargs["groups"],
        output_padding=kwargs["output_padding"],
    )
    ours = operator.forward(torch.from_numpy(x)).numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("pool", [p for p in POOLS if p[7] is None], ids=[p[0] for p in POOLS if p[7] is None])
def test_avgpool_reference_matches_onnxruntime(pool):
    _, kernel, spatial, strides, pads, include, ceil, _ = pool
    x = np.random.default_rng(7).standard_normal((1, 1, *spatial))
    expected = run_onnx(
        "AveragePool",
        x,
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        count_include_pad=int(include),
        ceil_mode=int(ceil),
    )
    ours = reference_avgpool_matrix(kernel, spatial, strides, pads, include, ceil) @ x.ravel()
    np.testing.assert_allclose(ours, expected.ravel(), atol=1e-5)


# ------------------------------------------------------------------ arguments and devices


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strides=(1,), pads=(0, 0, 0, 0), dilations=(1, 1)), "needs 2 input sizes"),
        (dict(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), groups=2), "divisible by groups"),
        (dict(strides=(1, 1), pads=(0,) * 4, dilations=(5, 1)), "no output"),
        (dict(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), method="spectral"), "unknown method"),
    ],
)
def test_bad_conv_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv_norm(np.ones((3, 2, 3, 3)), (4, 4), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES[::4], ids=[c[0] for c in CASES[::4]])
def test_conv_norm_on_cuda_matches_the_cpu(case):
    weight, spatial, kwargs, _ = build(case)
    cuda = torch.device("cuda")
    for method, limit in (("auto", 4096), ("auto", 0), ("exact", 0), ("gram", 0), ("frobenius", 0)):
        on_cpu = conv_norm(weight, spatial, **kwargs, method=method, materialize_limit=limit)
        on_gpu = conv_norm(
            torch.from_numpy(weight).to(cuda), spatial, **kwargs, method=method, materialize_limit=limit, device=cuda
        )
        assert on_gpu.method == on_cpu.method
        assert on_gpu.value == pytest.approx(on_cpu.value, rel=2 * bnb.BNB_TOL)
