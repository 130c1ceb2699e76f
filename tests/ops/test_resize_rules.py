"""Resize against onnxruntime's operator matrix, over modes and scales."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from lipaudit import audit
from lipaudit.domain import prepare_domain
from lipaudit.load import load_model
from tests.builders import operator_matrix, save, single_node_model, spectral_norm

CASES = [
    # (mode, coordinate mode, nearest mode, input shape, scales)
    ("nearest", "asymmetric", "floor", [1, 2, 3, 4], [1, 1, 2, 2]),
    ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 5, 4], [1, 1, 1.6, 2.5]),
    ("nearest", "align_corners", "round_prefer_ceil", [1, 1, 4, 3], [1, 1, 2.5, 3]),
    ("nearest", "pytorch_half_pixel", "floor", [1, 1, 6, 5], [1, 1, 0.5, 1.4]),
    ("nearest", "tf_half_pixel_for_nn", "ceil", [1, 1, 3, 3], [1, 1, 2.2, 1.7]),
    ("linear", "half_pixel", "round_prefer_floor", [1, 2, 4, 5], [1, 1, 2, 2]),
    ("linear", "align_corners", "round_prefer_floor", [1, 1, 4, 3], [1, 1, 1.75, 2.5]),
    ("linear", "asymmetric", "round_prefer_floor", [1, 1, 5, 4], [1, 1, 0.6, 1.5]),
    ("linear", "pytorch_half_pixel", "round_prefer_floor", [1, 1, 3, 6], [1, 1, 3, 0.5]),
    ("cubic", "half_pixel", "round_prefer_floor", [1, 2, 4, 5], [1, 1, 2, 2]),
    ("cubic", "pytorch_half_pixel", "round_prefer_floor", [1, 1, 5, 4], [1, 1, 1.7, 0.6]),
    ("cubic", "align_corners", "round_prefer_floor", [1, 1, 4, 3], [1, 1, 1.75, 2.5]),
    ("cubic", "asymmetric", "round_prefer_floor", [1, 1, 6, 3], [1, 1, 0.5, 3]),
]


def resize(shape, scales, **attrs):
    inits = {"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)}
    return single_node_model("Resize", shape, inits, inputs=["x", "roi", "scales"], opset=13, **attrs)


def assert_exact_factor(model, shape, tmp_path, **options):
    truth = spectral_norm(operator_matrix(model, shape))
    layer = audit(str(save(model, tmp_path)), **options).layers[0]
    assert layer.status == "bounded" and layer.certified
    assert layer.factor >= truth * (1 - 1e-6)
    assert layer.factor == pytest.approx(truth, rel=1e-5)


@pytest.mark.parametrize("mode,coordinates,nearest,shape,scales", CASES)
def test_resize_factor_matches_the_operator(tmp_path, mode, coordinates, nearest, shape, scales):
    model = resize(shape, scales, mode=mode, coordinate_transformation_mode=coordinates, nearest_mode=nearest)
    assert_exact_factor(model, shape, tmp_path)


def test_upsample_opset_nine(tmp_path):
    shape = [1, 2, 3, 3]
    model = single_node_model(
        "Upsample", shape, {"scales": np.array([1, 1, 2, 3], np.float32)}, opset=9, mode="nearest"
    )
    truth = spectral_norm(operator_matrix(model, shape))
    assert audit(str(save(model, tmp_path))).layers[0].factor == pytest.approx(truth, rel=1e-6)


@pytest.mark.parametrize("cubic_a,exclude_outside", [(-0.5, 0), (-0.75, 1), (-1.0, 1)])
def test_cubic_coefficient_and_exclude_outside(tmp_path, cubic_a, exclude_outside):
    shape = [1, 1, 5, 4]
    model = resize(shape, [1, 1, 1.6, 2.5], mode="cubic", cubic_coeff_a=cubic_a, exclude_outside=exclude_outside)
    assert_exact_factor(model, shape, tmp_path, verify=False)


def test_cubic_range_on_a_box_holds_its_outputs(tmp_path):
    """Cubic weighs neighbours negatively: its range on a box is not [f(lo), f(hi)]."""
    shape = [1, 1, 4, 4]
    model = resize(shape, [1, 1, 2, 2], mode="cubic")
    graph = load_model(save(model, tmp_path)).graph
    domain = prepare_domain(graph, ["0:1"])
    assert domain is not None
    output = domain.ranges[graph.outputs[0]]
    rng = np.random.default_rng(0)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    corners = rng.integers(0, 2, size=(64, *shape)).astype(np.float32)  # vertices reach the extremes
    for x in corners:
        (y,) = session.run(None, {"x": x})
        assert output.contains(y, tolerance=1e-6)
    assert float(output.hi.max()) > 1.0  # overshoot that a monotone rule would have missed


@pytest.mark.parametrize(
    "mode,given,values",
    [
        ("nearest", "scales", [2.0, 1.5]),
        ("linear", "scales", [1.6, 2.5]),
        ("linear", "sizes", [7, 3]),
    ],
)
def test_resize_18_with_axes_matches_the_operator(tmp_path, mode, given, values):
    """From opset 18 the scales or sizes may name only some axes (``axes``): the others keep their size."""
    shape = [1, 2, 4, 5]
    dtype = np.float32 if given == "scales" else np.int64
    inits = {"roi": np.zeros(0, np.float32), given: np.array(values, dtype)}
    inputs = ["x", "roi", "scales" if given == "scales" else "", "sizes" if given == "sizes" else ""]
    model = single_node_model("Resize", shape, inits, inputs=inputs, opset=18, mode=mode, axes=[-1, 2])
    assert_exact_factor(model, shape, tmp_path)
    assert_exact_factor(model, shape, tmp_path, verify=False)
