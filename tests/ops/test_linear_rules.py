"""Gemm, MatMul, Conv and ConvTranspose factors against the truth: the operator's largest singular value.

The truth is built independently of lipaudit: basis vectors pushed through onnxruntime give the
operator's matrix (float32 arithmetic, float64 assembly), whose top singular value we take in
numpy.  Because onnxruntime computes in float32, "equal" means equal to a relative 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.builders import graph_model, operator_matrix, single_node_model
from tests.ops._truth import (
    CERT_SLACK,
    RTOL,
    assert_certified_bound,
    assert_equals_truth,
    batched_operator_matrix,
    check_all_methods,
    rng_array,
    run_audit,
    same_pads,
    top_singular_value,
)

# ---------------------------------------------------------------------------------------------
# Gemm


@pytest.mark.parametrize("alpha", [1.0, -0.7, 2.5])
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_constant_b_matches_operator_norm(tmp_path, alpha, trans_a, trans_b):
    m, k, n = 3, 5, 4
    b = rng_array((n, k) if trans_b else (k, n), seed=1)
    c = rng_array((n,), seed=2)
    x_shape = [k, m] if trans_a else [m, k]
    model = single_node_model("Gemm", x_shape, {"b": b, "c": c}, alpha=alpha, beta=0.3, transA=trans_a, transB=trans_b)
    truth = np.linalg.svd(operator_matrix(model, x_shape), compute_uv=False)[0]
    assert truth == pytest.approx(abs(alpha) * np.linalg.norm(b.astype(np.float64), 2), rel=RTOL)
    layers = check_all_methods(model, tmp_path, truth)
    assert layers["auto"].method == "exact"


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_constant_a_variable_b(tmp_path, trans_a, trans_b):
    """Y = α·A'·X': the variable on the right; the bias does not count."""
    m, k, n = 4, 3, 5
    a = rng_array((k, m) if trans_a else (m, k), seed=3)
    x_shape = [n, k] if trans_b else [k, n]
    nodes = [helper.make_node("Gemm", ["a", "x", "c"], ["y"], alpha=1.5, transA=trans_a, transB=trans_b)]
    model = graph_model(nodes, x_shape, {"a": a, "c": rng_array((m, n), seed=4)})
    truth = np.linalg.svd(operator_matrix(model, x_shape), compute_uv=False)[0]
    report = run_audit(model, tmp_path, "exact")
    assert_equals_truth(report.layers[0].factor, truth)
    assert report.layers[0].certified


def test_gemm_opset6_broadcast_bias(tmp_path):
    """Opset 6 Gemm spells bias broadcasting with the `broadcast` attribute."""
    b = rng_array((6, 4), seed=5)
    c = rng_array((4,), seed=6)
    model = single_node_model("Gemm", [2, 6], {"b": b, "c": c}, opset=6, broadcast=1, alpha=0.5, beta=2.0)
    # onnxruntime has no Gemm-6 kernel; Gemm-7 computes the same map with implicit broadcasting.
    same_map = single_node_model("Gemm", [2, 6], {"b": b, "c": c}, opset=7, alpha=0.5, beta=2.0)
    truth = np.linalg.svd(operator_matrix(same_map, [2, 6]), compute_uv=False)[0]
    report = run_audit(model, tmp_path)
    assert report.model.opset == 6
    assert_equals_truth(report.layers[0].factor, truth)
    assert report.network.upper_bound == pytest.approx(report.layers[0].factor)


def test_gemm_variable_bias_adds_its_own_weight(tmp_path):
    """Y = α·X·B + β·X: the bound α‖B‖ + |β| holds the true ‖αBᵀ + β·I‖-type operator."""
    b = rng_array((4, 4), seed=7)
    nodes = [helper.make_node("Gemm", ["x", "b", "x"], ["y"], alpha=0.8, beta=-1.5)]
    model = graph_model(nodes, [3, 4], {"b": b})
    truth = np.linalg.svd(operator_matrix(model, [3, 4]), compute_uv=False)[0]
    report = run_audit(model, tmp_path)
    expected = 0.8 * np.linalg.norm(b.astype(np.float64), 2) + 1.5
    assert report.network.upper_bound == pytest.approx(expected, rel=1e-6)
    assert report.network.upper_bound >= truth * (1 - CERT_SLACK)
    assert report.network.certified


def test_gemm_variable_bias_that_broadcasts(tmp_path):
    """β·c with c of shape (1, N) feeding M rows: √M·|β| for the bias path."""
    b = rng_array((5, 3), seed=8)
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "axis0"], ["row"]),  # (1, 5)
        helper.make_node("Slice", ["row", "zero", "three", "axis1"], ["row3"]),  # (1, 3)
        helper.make_node("Gemm", ["x", "b", "row3"], ["y"], beta=2.0),
    ]  # (4, 3)
    inits = {
        "b": b,
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "three": np.array([3], np.int64),
        "axis0": np.array([0], np.int64),
        "axis1": np.array([1], np.int64),
    }
    model = graph_model(nodes, [4, 5], inits)
    truth = np.linalg.svd(operator_matrix(model, [4, 5]), compute_uv=False)[0]
    report = run_audit(model, tmp_path)
    gemm = next(layer for layer in report.layers if layer.op == "Gemm")
    assert gemm.status == "bounded"
    expected = np.linalg.norm(b.astype(np.float64), 2) + 2.0 * math.sqrt(4)
    assert report.network.upper_bound == pytest.approx(expected, rel=1e-6)
    assert report.network.upper_bound >= truth * (1 - CERT_SLACK)


def test_gemm_of_two_variables_is_unbounded(tmp_path):
    nodes = [helper.make_node("Transpose", ["x"], ["xt"]), helper.make_node("Gemm", ["x", "xt"], ["y"])]
    report = run_audit(graph_model(nodes, [3, 3], {}), tmp_path)
    gemm = report.layers[-1]
    assert gemm.status == "unbounded"
    assert gemm.factor is None
    assert report.network.upper_bound is None
    assert [b.op for b in report.network.unbounded] == ["Gemm"]


# ---------------------------------------------------------------------------------------------
# MatMul


MATMUL_CASES = [
    # (variable shape, constant shape, constant on the right)
    ((3, 4), (4, 5), True),
    ((4,), (4, 5), True),
    ((3, 4), (4,), True),
    ((2, 3, 4), (4, 5), True),  # 2-D constant shared by a batch: same matrix each time
    ((2, 3, 4), (2, 4, 5), True),  # one block per batch item: the largest block
    ((3, 4), (2, 4, 5), True),  # one variable feeds every block: x·[B_1 B_2]
    ((1, 3, 4), (3, 4, 2), True),
    ((2, 1, 3, 4), (2, 3, 4, 5), True),  # partly broadcast batch
    ((3, 4), (5, 3), False),
    ((4,), (5, 4), False),
    ((2, 3, 4), (5, 3), False),
    ((2, 3, 4), (2, 5, 3), False),
    ((3, 4), (2, 5, 3), False),  # [W_1; W_2]·x
    ((3, 1, 3, 4), (3, 2, 5, 3), False),
]


@pytest.mark.parametrize(
    "var_shape,const_shape,const_on_right",
    MATMUL_CASES,
    ids=[f"{v}{'@' if r else '<-'}{c}" for v, c, r in MATMUL_CASES],
)
def test_matmul_constant_side(tmp_path, var_shape, const_shape, const_on_right):
    w = rng_array(const_shape, seed=sum(const_shape))
    inputs = ["x", "w"] if const_on_right else ["w", "x"]
    nodes = [helper.make_node("MatMul", inputs, ["y"])]
    model = graph_model(nodes, list(var_shape), {"w": w})
    truth = np.linalg.svd(operator_matrix(model, list(var_shape)), compute_uv=False)[0]
    report = run_audit(model, tmp_path)
    layer = report.layers[0]
    assert_certified_bound(layer, truth)
    partly_broadcast = (
        len(var_shape) > 2
        and len(const_shape) > 2
        and 1 < int(np.prod(var_shape[:-2])) < int(np.prod(np.broadcast_shapes(var_shape[:-2], const_shape[:-2])))
    )
    if not partly_broadcast:
        assert_equals_truth(layer.factor, truth)
        for method in ("gram", "frobenius"):
            bound = run_audit(model, tmp_path, method, name=f"{method}.onnx").layers[0]
            assert_certified_bound(bound, truth)
        power = run_audit(model, tmp_path, "power", name="power.onnx").layers[0]
        assert not power.certified
        assert power.factor <= truth * (1 + RTOL)


def test_matmul_of_two_variables_is_unbounded(tmp_path):
    nodes = [helper.make_node("Transpose", ["x"], ["xt"]), helper.make_node("MatMul", ["x", "xt"], ["y"])]
    report = run_audit(graph_model(nodes, [3, 4], {}), tmp_path)
    assert report.layers[-1].status == "unbounded"
    assert report.network.upper_bound is None


@pytest.mark.slow
def test_matmul_large_matrix_uses_gram_in_auto(tmp_path):
    """Past the exact-SVD size the auto method must still be certified and above the truth."""
    w = rng_array((2100, 2050), seed=11, scale=0.02)
    model = single_node_model("MatMul", [1, 2100], {"w": w})
    truth = top_singular_value(w)
    layer = run_audit(model, tmp_path).layers[0]
    assert_certified_bound(layer, truth)
    assert layer.factor <= truth * 1.01


# ---------------------------------------------------------------------------------------------
# Conv


def conv_model(x_shape, c_out, kernel, *, group=1, bias=False, seed=0, **attrs):
    c_in = x_shape[1]
    w = rng_array((c_out, c_in // group, *kernel), seed=seed)
    inits = {"w": w}
    if bias:
        inits["b"] = rng_array((c_out,), seed=seed + 100)
    return single_node_model("Conv", x_shape, inits, group=group, **attrs)


# (input shape, c_out, kernel, attrs) — all small: the operator is materialised.
CONV_CASES = [
    ([1, 3, 9, 9], 4, (3, 3), dict(pads=[1, 1, 1, 1])),
    ([1, 3, 9, 9], 4, (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ([1, 3, 10, 10], 2, (3, 3), dict(strides=[3, 3])),
    ([1, 3, 9, 8], 4, (3, 3), dict(strides=[2, 2], pads=[0, 1, 2, 0])),
    ([1, 2, 9, 9], 3, (3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    ([1, 2, 11, 10], 3, (3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[1, 0, 0, 1])),
    ([1, 3, 8, 9], 2, (2, 3), dict(strides=[1, 2], pads=[0, 1, 1, 0])),
    ([1, 3, 9, 9], 4, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ([1, 2, 8, 9], 3, (4, 4), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ([1, 2, 8, 9], 3, (4, 4), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ([1, 2, 9, 9], 2, (3, 2), dict(dilations=[2, 1], auto_pad="SAME_UPPER")),
    ([1, 2, 10, 9], 3, (3, 3), dict(strides=[3, 2], dilations=[2, 2], auto_pad="SAME_LOWER")),
    ([1, 3, 9, 10], 4, (3, 3), dict(strides=[2, 2], auto_pad="VALID", pads=None)),
    ([1, 4, 8, 8], 6, (3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    ([1, 4, 9, 9], 4, (3, 3), dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1])),
    ([1, 4, 8, 8], 8, (3, 3), dict(group=4, pads=[0, 1, 1, 0])),
    ([1, 6, 7, 7], 3, (1, 1), dict()),
    ([1, 6, 7, 7], 3, (1, 1), dict(strides=[2, 2])),
    ([1, 2, 12, 12], 3, (5, 5), dict(strides=[3, 3], pads=[2, 2, 2, 2], bias=True)),
    ([1, 3, 7, 7], 2, (7, 7), dict(pads=[3, 3, 3, 3], bias=True)),
    # 1-d
    ([1, 3, 20], 4, (3,), dict(pads=[1, 1])),
    ([1, 3, 21], 2, (5,), dict(strides=[2], pads=[2, 1])),
    ([1, 2, 25], 3, (3,), dict(strides=[3], dilations=[2], pads=[0, 2])),
    ([1, 2, 17], 2, (4,), dict(strides=[2], auto_pad="SAME_UPPER")),
    ([1, 2, 17], 2, (4,), dict(strides=[2], auto_pad="SAME_LOWER")),
    ([1, 4, 16], 6, (3,), dict(group=2, strides=[2], pads=[1, 1], bias=True)),
    # 3-d
    ([1, 2, 5, 5, 5], 3, (3, 3, 3), dict(pads=[1, 1, 1, 1, 1, 1])),
    ([1, 2, 6, 5, 6], 2, (2, 3, 3), dict(strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0])),
    ([1, 4, 5, 5, 4], 4, (3, 3, 3), dict(group=2, strides=[2, 2, 2], auto_pad="SAME_LOWER")),
    ([1, 2, 6, 6, 6], 2, (3, 3, 3), dict(dilations=[2, 1, 2], pads=[2, 1, 2, 2, 1, 2], group=2)),
]


def _conv_id(case):
    shape, c_out, kernel, attrs = case
    parts = [f"{len(kernel)}d", "x".join(map(str, shape[1:])), f"o{c_out}", "k" + "x".join(map(str, kernel))]
    parts += [f"{k}{'-'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in attrs.items() if v is not None]
    return "_".join(parts)


def _build_conv(case, seed):
    shape, c_out, kernel, attrs = case
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return conv_model(shape, c_out, kernel, seed=seed, **attrs)


def _conv_truth(case, seed) -> float:
    """onnxruntime rejects dilation with SAME auto_pad; the truth then uses the spec's explicit pads."""
    shape, c_out, kernel, attrs = case
    attrs = {k: v for k, v in attrs.items() if v is not None}
    n = len(kernel)
    if attrs.get("auto_pad", "").startswith("SAME") and any(d > 1 for d in attrs.get("dilations", [1] * n)):
        mode = attrs.pop("auto_pad")
        attrs["pads"] = same_pads(shape[2:], kernel, attrs.get("strides", [1] * n), attrs["dilations"], mode)
    model = conv_model(shape, c_out, kernel, seed=seed, **attrs)
    return top_singular_value(batched_operator_matrix(model, shape))


@pytest.mark.parametrize("case", CONV_CASES, ids=[_conv_id(c) for c in CONV_CASES])
def test_conv_small_is_materialised_exactly(tmp_path, case):
    model = _build_conv(case, seed=len(_conv_id(case)))
    truth = _conv_truth(case, seed=len(_conv_id(case)))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.method == "materialized"
    assert_certified_bound(layer, truth)
    assert_equals_truth(layer.factor, truth)


# A spread of the cases above, through every method (the FFT bounds run at any size for gram/frobenius).
METHOD_CASES = [CONV_CASES[i] for i in (1, 3, 5, 8, 11, 15, 22, 27)]


@pytest.mark.parametrize("case", METHOD_CASES, ids=[_conv_id(c) for c in METHOD_CASES])
def test_conv_every_method_against_truth(tmp_path, case):
    model = _build_conv(case, seed=3)
    truth = _conv_truth(case, seed=3)
    layers = check_all_methods(model, tmp_path, truth)
    assert layers["auto"].method == "materialized"
    assert layers["exact"].method == "materialized"


def test_conv_1x1_equals_kernel_matrix_norm(tmp_path):
    model = conv_model([1, 6, 5, 5], 4, (1, 1), seed=9)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).reshape(4, 6).astype(np.float64)
    layer = run_audit(model, tmp_path).layers[0]
    assert_equals_truth(layer.factor, np.linalg.norm(w, 2))


def test_conv_norm_depends_on_input_size(tmp_path):
    """The same kernel at two input sizes: two different truths, each matched."""
    w = rng_array((2, 2, 3, 3), seed=12)
    factors = []
    for size in (3, 12):
        model = single_node_model("Conv", [1, 2, size, size], {"w": w}, pads=[1, 1, 1, 1])
        truth = top_singular_value(batched_operator_matrix(model, [1, 2, size, size]))
        layer = run_audit(model, tmp_path, name=f"s{size}.onnx").layers[0]
        assert_equals_truth(layer.factor, truth)
        factors.append(layer.factor)
    assert factors[0] < factors[1] * (1 - 1e-3)


def test_conv_with_variable_kernel_is_unbounded(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "x"], ["y"])]
    report = run_audit(graph_model(nodes, [1, 1, 3, 3], {}), tmp_path)
    assert report.layers[0].status == "unbounded"
    assert report.network.upper_bound is None


# Operators of 4,000–4,600 rows: 'auto' picks per layer by its cost model (materialised Gram or the
# FFT branch and bound); whichever it takes must be certified and within the 0.5% target.
LARGE_CONV_CASES = [
    ([1, 2, 48, 48], 2, (3, 3), dict(pads=[1, 1, 1, 1])),
    ([1, 2, 48, 48], 2, (3, 3), dict(group=2, auto_pad="SAME_LOWER", bias=True)),
    ([1, 2, 2100], 2, (5,), dict(pads=[2, 2], dilations=[1])),
    ([1, 2, 16, 12, 12], 2, (3, 3, 3), dict(pads=[1, 1, 1, 1, 1, 1])),
]


@pytest.mark.parametrize("case", LARGE_CONV_CASES, ids=[_conv_id(c) for c in LARGE_CONV_CASES])
def test_conv_large_is_certified_and_tight(tmp_path, case):
    model = _build_conv(case, seed=21)
    truth = top_singular_value(batched_operator_matrix(model, case[0]))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.method != "power", layer.method
    assert_certified_bound(layer, truth)
    assert layer.factor <= truth * 1.005, layer.method
    for method in ("gram", "frobenius"):
        bound = run_audit(model, tmp_path, method, name=f"{method}.onnx").layers[0]
        assert_certified_bound(bound, truth)


# ---------------------------------------------------------------------------------------------
# ConvTranspose


def conv_transpose_model(x_shape, c_out, kernel, *, group=1, seed=0, bias=False, **attrs):
    c_in = x_shape[1]
    w = rng_array((c_in, c_out // group, *kernel), seed=seed)
    inits = {"w": w}
    if bias:
        inits["b"] = rng_array((c_out,), seed=seed + 100)
    return single_node_model("ConvTranspose", x_shape, inits, group=group, **attrs)


CONV_TRANSPOSE_CASES = [
    ([1, 3, 6, 6], 2, (3, 3), dict()),
    ([1, 3, 5, 5], 2, (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ([1, 2, 6, 5], 3, (4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1], bias=True)),
    ([1, 2, 4, 5], 2, (3, 3), dict(strides=[3, 3], pads=[0, 1, 1, 0], output_padding=[2, 0])),
    ([1, 4, 5, 5], 4, (3, 3), dict(group=2, strides=[2, 2], pads=[1, 0, 0, 1])),
    ([1, 4, 5, 5], 4, (3, 3), dict(group=4, strides=[2, 2])),
    ([1, 2, 5, 5], 3, (3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 0])),
    ([1, 2, 5, 6], 2, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ([1, 2, 5, 6], 2, (4, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ([1, 2, 5, 5], 2, (3, 3), dict(strides=[2, 2], output_shape=[10, 10])),
    ([1, 3, 10], 2, (4,), dict(strides=[2], pads=[1, 2], output_padding=[1])),
    ([1, 2, 4, 4, 3], 2, (3, 3, 2), dict(strides=[2, 1, 2], pads=[1, 1, 0, 0, 1, 1], output_padding=[1, 0, 1])),
]


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=[_conv_id(c) for c in CONV_TRANSPOSE_CASES])
def test_conv_transpose_against_truth(tmp_path, case):
    shape, c_out, kernel, attrs = case
    model = conv_transpose_model(shape, c_out, kernel, seed=5, **attrs)
    truth = top_singular_value(batched_operator_matrix(model, shape))
    if CONV_TRANSPOSE_CASES.index(case) in (1, 3, 4, 6, 8, 11):
        layers = check_all_methods(model, tmp_path, truth)
        assert layers["auto"].method == "materialized"
    else:
        layer = run_audit(model, tmp_path).layers[0]
        assert layer.method == "materialized"
        assert_certified_bound(layer, truth)
        assert_equals_truth(layer.factor, truth)


def test_conv_transpose_large_takes_certified_fft_path(tmp_path):
    shape = [1, 2, 46, 46]
    model = conv_transpose_model(shape, 2, (3, 3), seed=6)
    truth = top_singular_value(batched_operator_matrix(model, shape))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.method.endswith("-bnb") and not layer.method.startswith("materialized"), layer.method
    assert_certified_bound(layer, truth)
    assert layer.factor <= truth * 1.05


def test_conv_transpose_is_the_adjoint_of_conv(tmp_path):
    """Same kernel: ConvTranspose at the conv's output size has the conv's norm."""
    w = rng_array((3, 2, 3, 3), seed=14)
    conv = single_node_model("Conv", [1, 2, 9, 9], {"w": w}, strides=[2, 2], pads=[1, 1, 1, 1])
    convt = single_node_model("ConvTranspose", [1, 3, 5, 5], {"w": w}, strides=[2, 2], pads=[1, 1, 1, 1])
    a = run_audit(conv, tmp_path, name="conv.onnx").layers[0].factor
    b = run_audit(convt, tmp_path, name="convt.onnx").layers[0].factor
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("batch", [1, 2])
def test_variable_bias_is_weighed_by_the_positions_it_feeds(tmp_path, op, batch):
    """A bias computed from the input is added at every output position of its channel."""
    w = rng_array((2, 2, 3, 3), seed=15, scale=0.01)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["b"], axes=[0, 2, 3], keepdims=0),
        helper.make_node(op, ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    shape = [batch, 2, 5, 5]
    model = graph_model(nodes, shape, {"w": w}, opset=13)
    truth = top_singular_value(operator_matrix(model, shape))
    report = run_audit(model, tmp_path)
    assert report.network.upper_bound >= truth * (1 - CERT_SLACK), (report.network.upper_bound, truth)
    assert report.network.certified


EINSUM_SPELLINGS = [
    ("ij,jk->ik", False, False),
    ("ij,kj->ik", False, True),
    ("jk,ij->ik", True, False),
    ("...j,jk->...k", False, False),
    ("ij,jk", False, False),
]


@pytest.mark.parametrize("equation, weight_first, transposed", EINSUM_SPELLINGS)
def test_an_einsum_that_is_a_dense_layer_gets_matmuls_figure(tmp_path, equation, weight_first, transposed) -> None:
    """x·W written as an Einsum composes in the recursion like MatMul (redteam17: the product's
    14.9 where MatMul got 7.5)."""
    from lipaudit import audit
    from tests.builders import save

    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
    figures = []
    for last in ("MatMul", "Einsum"):
        if last == "MatMul":
            node, weight = helper.make_node("MatMul", ["h", "w2"], ["y"]), second
        else:
            inputs = ["w2", "h"] if weight_first else ["h", "w2"]
            node = helper.make_node("Einsum", inputs, ["y"], equation=equation)
            weight = np.ascontiguousarray(second.T) if transposed else second
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["c"]), helper.make_node("Tanh", ["c"], ["h"]), node]
        model = graph_model(nodes, (2, 4), {"w1": first, "w2": weight}, opset=17)
        network = audit(save(model, tmp_path, f"{last}.onnx"), bound="recursion").to_dict()["network"]
        figures.append(network["upper_bound"])
        assert network["upper_bound"] < 0.99 * network["product_bound"]
    assert figures[0] == pytest.approx(figures[1], rel=1e-12)
