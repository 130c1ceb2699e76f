"""Pooling factors against the truth.

AveragePool and GlobalAveragePool are linear: the truth is the top singular value of the
operator's matrix from onnxruntime.  MaxPool is not linear: its factor √(most windows one input
falls in) must bound every measured ratio ‖f(x) − f(y)‖/‖x − y‖, and is reached by a spike that
changes every window it sits in.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from tests.builders import operator_matrix, session, single_node_model
from tests.ops._truth import (
    assert_certified_bound,
    assert_equals_truth,
    batched_operator_matrix,
    check_all_methods,
    rng_array,
    run_audit,
    same_pads,
    top_singular_value,
    with_margin,
)

# ---------------------------------------------------------------------------------------------
# AveragePool

# (input shape, attrs, opset)
AVGPOOL_CASES = [
    ([1, 2, 8, 8], dict(kernel_shape=[2, 2], strides=[2, 2]), 17),
    ([1, 2, 9, 9], dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1), 17),
    ([1, 2, 9, 9], dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0), 17),
    ([1, 2, 9, 9], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 17),  # default count_include_pad = 0
    ([1, 1, 10, 9], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0], count_include_pad=1), 17),
    ([1, 1, 10, 9], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0], count_include_pad=0), 17),
    ([1, 1, 8, 8], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 17),
    ([1, 1, 9, 8], dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1), 17),
    ([1, 1, 9, 8], dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1, count_include_pad=1), 17),
    ([1, 1, 7, 7], dict(kernel_shape=[3, 3], strides=[3, 3], auto_pad="SAME_UPPER"), 17),
    ([1, 1, 8, 7], dict(kernel_shape=[4, 4], strides=[2, 2], auto_pad="SAME_LOWER"), 17),
    ([1, 1, 8, 7], dict(kernel_shape=[4, 4], strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1), 17),
    ([1, 1, 9, 9], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"), 17),
    ([1, 1, 6, 6], dict(kernel_shape=[6, 6]), 17),  # one window: a mean
    ([1, 1, 9, 9], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 7),  # opset 7 default: pads excluded
    ([1, 3, 20], dict(kernel_shape=[4], strides=[2], pads=[1, 2], count_include_pad=0), 17),
    ([1, 3, 20], dict(kernel_shape=[4], strides=[3], ceil_mode=1), 17),
    ([1, 1, 5, 6, 5], dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[1, 1, 0, 0, 1, 1]), 17),
    ([1, 1, 5, 6, 5], dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2], count_include_pad=1, ceil_mode=1), 17),
]


def _pool_id(case):
    shape, attrs, opset = case
    parts = ["x".join(map(str, shape[2:]))]
    for k, v in attrs.items():
        short = {
            "kernel_shape": "k",
            "strides": "s",
            "pads": "p",
            "count_include_pad": "cip",
            "ceil_mode": "ceil",
            "auto_pad": "",
            "dilations": "d",
        }[k]
        parts.append(short + ("-".join(map(str, v)) if isinstance(v, list) else str(v)))
    return "_".join(parts) + f"_op{opset}"


@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=[_pool_id(c) for c in AVGPOOL_CASES])
def test_average_pool_equals_operator_norm(tmp_path, case):
    shape, attrs, opset = case
    model = single_node_model("AveragePool", shape, opset=opset, **attrs)
    truth = top_singular_value(batched_operator_matrix(model, shape))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.method in ("materialized", "exact"), layer.method
    assert_certified_bound(layer, truth)
    assert_equals_truth(layer.factor, truth)


@pytest.mark.parametrize(
    "case", [AVGPOOL_CASES[i] for i in (1, 5, 8, 15)], ids=[_pool_id(AVGPOOL_CASES[i]) for i in (1, 5, 8, 15)]
)
def test_average_pool_every_method(tmp_path, case):
    shape, attrs, opset = case
    model = single_node_model("AveragePool", shape, opset=opset, **attrs)
    truth = top_singular_value(batched_operator_matrix(model, shape))
    # A pool whose border windows average fewer cells is no convolution: gram/frobenius then give
    # another certified figure (Schur's test), so only the value is checked.
    check_all_methods(model, tmp_path, truth, check_names=False)


def test_average_pool_opset6_excludes_padding(tmp_path):
    """Opset 6 has no count_include_pad: padding is never counted (onnxruntime's opset 7 default)."""
    shape = [1, 1, 7, 7]
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    old = single_node_model("AveragePool", shape, opset=6, **attrs)
    same_map = single_node_model("AveragePool", shape, opset=7, count_include_pad=0, **attrs)
    truth = top_singular_value(batched_operator_matrix(same_map, shape))
    counted = single_node_model("AveragePool", shape, opset=7, count_include_pad=1, **attrs)
    assert abs(top_singular_value(batched_operator_matrix(counted, shape)) - truth) > 1e-3  # the setting matters
    report = run_audit(old, tmp_path)
    assert report.model.opset == 6
    assert_equals_truth(report.layers[0].factor, truth)


def test_average_pool_dilations(tmp_path):
    """AveragePool-19 has dilations: the window is spread out, and the operator changes."""
    shape = [1, 1, 11, 11]
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[2, 2, 2, 2], dilations=[2, 2])
    model = single_node_model("AveragePool", shape, opset=19, **attrs)
    truth = top_singular_value(batched_operator_matrix(model, shape))
    layer = run_audit(model, tmp_path).layers[0]
    assert_certified_bound(layer, truth)
    assert_equals_truth(layer.factor, truth)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_large_is_certified(tmp_path, count_include_pad):
    """A 4,900-side operator: a certified figure, whichever method the cost model takes."""
    shape = [1, 1, 70, 70]
    model = single_node_model(
        "AveragePool", shape, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=count_include_pad
    )
    truth = top_singular_value(batched_operator_matrix(model, shape))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.method != "power"
    assert_certified_bound(layer, truth)
    assert layer.factor <= truth * 1.2  # Schur's test is ~16% above the truth for count_include_pad=0


@pytest.mark.parametrize("shape", [[1, 3, 5, 6], [2, 2, 4], [1, 1, 3, 2, 4]])
def test_global_average_pool_is_one_over_sqrt_positions(tmp_path, shape):
    model = single_node_model("GlobalAveragePool", shape)
    matrix = batched_operator_matrix(model, shape) if shape[0] == 1 else operator_matrix(model, shape)
    truth = top_singular_value(matrix)
    positions = int(np.prod(shape[2:]))
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.factor == pytest.approx(with_margin(1 / math.sqrt(positions)), rel=1e-12)
    assert layer.certified
    assert_equals_truth(layer.factor, truth)


# ---------------------------------------------------------------------------------------------
# MaxPool

MAXPOOL_CASES = [
    # (input shape, attrs, opset)
    ([1, 1, 9, 9], dict(kernel_shape=[3, 3], strides=[2, 2]), 17),  # 3×3 stride 2: 2, not 1
    ([1, 1, 9, 9], dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), 17),
    ([1, 1, 8, 8], dict(kernel_shape=[2, 2], strides=[2, 2]), 17),
    ([1, 1, 10, 9], dict(kernel_shape=[5, 3], strides=[2, 3], pads=[2, 1, 2, 1]), 17),
    ([1, 1, 12, 12], dict(kernel_shape=[4, 4], strides=[3, 3], ceil_mode=1), 17),
    ([1, 1, 9, 9], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), 17),
    ([1, 1, 13, 13], dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2]), 17),  # gcd(2,2)=2: 3 per axis
    ([1, 1, 13, 13], dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[3, 3]), 17),  # gcd(2,3)=1: 2 per axis
    ([1, 1, 13, 13], dict(kernel_shape=[4, 2], strides=[2, 1], dilations=[2, 3], pads=[1, 1, 1, 1]), 17),
    ([1, 1, 30], dict(kernel_shape=[5], strides=[2]), 17),
    ([1, 1, 7, 7, 7], dict(kernel_shape=[3, 3, 3], strides=[2, 2, 2]), 17),
    ([1, 1, 9, 9], dict(kernel_shape=[3, 3], strides=[2, 2]), 8),
]


def _expected_multiplicity(attrs) -> int:
    """Π ⌈k / (s / gcd(s, d))⌉: the taps that can land on one input, per axis."""
    kernel = attrs["kernel_shape"]
    strides = attrs.get("strides", [1] * len(kernel))
    dilations = attrs.get("dilations", [1] * len(kernel))
    return math.prod(math.ceil(k / (s // math.gcd(s, d))) for k, s, d in zip(kernel, strides, dilations))


def _batched_run(model):
    """Run a model on a batch: its batch dimension made symbolic."""
    batched = copy.deepcopy(model)
    batched.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for out in batched.graph.output:
        out.type.tensor_type.ClearField("shape")
    run = session(batched)
    name = run.get_inputs()[0].name
    return lambda x: run.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0].astype(np.float64)


def _spike_ratios(model, shape) -> np.ndarray:
    """For every input position p: ‖f(x + e_p) − f(x)‖ with x a spike of 10 at p (zeros elsewhere).

    Every window containing p has its maximum at p, so the change is 1 in each: the ratio is
    √(number of windows containing p).
    """
    run = _batched_run(model)
    n = int(np.prod(shape))
    spikes = np.zeros((n, n), np.float32)
    spikes[np.arange(n), np.arange(n)] = 10.0
    bumped = spikes.copy()
    bumped[np.arange(n), np.arange(n)] = 11.0
    fx = run(spikes.reshape(n, *shape[1:])).reshape(n, -1)
    fy = run(bumped.reshape(n, *shape[1:])).reshape(n, -1)
    return np.linalg.norm(fy - fx, axis=1)


@pytest.mark.parametrize("case", MAXPOOL_CASES, ids=[_pool_id(c) for c in MAXPOOL_CASES])
def test_max_pool_multiplicity_is_tight_and_never_beaten(tmp_path, case):
    shape, attrs, opset = case
    model = single_node_model("MaxPool", shape, opset=opset, **attrs)
    layer = run_audit(model, tmp_path).layers[0]
    m = _expected_multiplicity(attrs)
    assert layer.factor == pytest.approx(math.sqrt(m), rel=1e-12)
    assert layer.certified and layer.status == "bounded"
    # The worst single input reaches the factor exactly (these inputs are large enough) ...
    spikes = _spike_ratios(model, shape)
    assert spikes.max() == pytest.approx(math.sqrt(m), rel=1e-6)
    # ... and no random pair of inputs beats it.
    run = _batched_run(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, *shape[1:])).astype(np.float32)
    for scale in (1.0, 1e-2):
        y = (x + scale * rng.normal(size=x.shape)).astype(np.float32)
        out_change = np.linalg.norm((run(x) - run(y)).reshape(len(x), -1), axis=1)
        in_change = np.linalg.norm((x.astype(np.float64) - y).reshape(len(x), -1), axis=1)
        assert (out_change / in_change).max() <= layer.factor * (1 + 1e-6)


def test_max_pool_stride_one_three_by_three_is_three(tmp_path):
    model = single_node_model("MaxPool", [1, 2, 6, 6], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    assert run_audit(model, tmp_path).layers[0].factor == pytest.approx(3.0)


def test_global_max_pool_is_one(tmp_path):
    shape = [1, 3, 4, 5]
    model = single_node_model("GlobalMaxPool", shape)
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.factor == 1.0 and layer.certified
    spikes = _spike_ratios(model, shape)
    assert spikes.max() == pytest.approx(1.0, rel=1e-6)


def test_same_pads_helper_matches_onnxruntime():
    """Guards the test helper used for SAME auto_pad truths: onnxruntime agrees on the output."""
    shape = [1, 1, 8, 7]
    pads = same_pads(shape[2:], [4, 4], [2, 2], [1, 1], "SAME_LOWER")
    implicit = single_node_model("AveragePool", shape, kernel_shape=[4, 4], strides=[2, 2], auto_pad="SAME_LOWER")
    explicit = single_node_model("AveragePool", shape, kernel_shape=[4, 4], strides=[2, 2], pads=pads)
    x = rng_array(shape, seed=3)
    a = session(implicit).run(None, {"x": x})[0]
    b = session(explicit).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)
