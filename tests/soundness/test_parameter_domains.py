"""Class 6 (ONNX): each activation's rule over the full parameter range the spec allows.

Truth: the largest secant slope |f(a) − f(b)| / |a − b| over a fine grid, evaluated by onnxruntime
(a lower bound on sup |f'|), or an explicit pair that shows the function has no Lipschitz constant.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import (
    FLOAT,
    assert_no_certified_figure,
    assert_sound,
    max_pair_ratio,
    model,
    run_audit,
    runtime_function,
)

GRID = np.linspace(-30.0, 30.0, 6001)  # steps of 1e-2
# Near a kink the runtime's float32 intermediates (α·x + β, exp(x) − 1) round on a scale the output does
# not show; this much relative slack covers that, and is far below any missing factor.
SECANT_SLACK = 1e-5


def _elementwise(op: str, opset: int = 17, **attrs):
    return model(
        [helper.make_node(op, ["x"], ["y"], **attrs)],
        [("x", FLOAT, [GRID.size])],
        [("y", FLOAT, [GRID.size])],
        opset=opset,
    )


def _largest_secant_slope(op: str, **attrs) -> float:
    """max over neighbouring grid points of |Δf| / |Δx|, from onnxruntime.

    Each float32 output may be off by a couple of ulps, so that much is taken off |Δf| first.
    """
    x = GRID.astype(np.float32)
    y = runtime_function(_elementwise(op, **attrs))(x)
    rounding = 4 * 2.0**-24 * (np.abs(y[1:]) + np.abs(y[:-1]))
    with np.errstate(invalid="ignore"):
        slopes = (np.abs(np.diff(y)) - rounding) / np.diff(x.astype(np.float64))
    return float(np.nanmax(slopes)) if np.isfinite(slopes).any() else math.inf


def _small(op: str, **attrs):
    return model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])])


@pytest.mark.parametrize("alpha", [-1.0, -0.5])
def test_celu_with_a_negative_alpha_is_not_lipschitz(tmp_path: Path, alpha: float) -> None:
    """Celu(x) = max(0,x) + min(0, α(exp(x/α) − 1)): for α < 0 the exponential grows as x → −∞."""
    proto = _small("Celu", alpha=alpha)
    steep = max_pair_ratio(runtime_function(proto), [(np.full((1, 4), -10.0), np.full((1, 4), -10.01))])
    assert steep > 1000
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), math.inf)


def test_celu_with_alpha_zero_is_undefined(tmp_path: Path) -> None:
    """α = 0 divides by zero (onnxruntime returns NaN): no figure may be certified."""
    for verify in (None, False):
        assert_no_certified_figure(run_audit(_small("Celu", alpha=0.0), tmp_path, verify=verify))


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("Celu", {"alpha": 0.25}),
        ("Celu", {"alpha": 4.0}),
        ("Elu", {"alpha": -2.0}),
        ("Elu", {"alpha": 50.0}),
        ("Elu", {"alpha": 0.0}),
        ("LeakyRelu", {"alpha": -3.0}),
        ("LeakyRelu", {"alpha": 40.0}),
        ("LeakyRelu", {"alpha": -0.5}),
        ("Selu", {"alpha": -2.0, "gamma": 3.0}),
        ("Selu", {"alpha": 2.0, "gamma": -3.0}),
        ("Selu", {"alpha": 0.5, "gamma": 2.0}),
        ("Selu", {"alpha": 40.0, "gamma": 1.0}),
        ("HardSigmoid", {"alpha": -7.0, "beta": 0.5}),
        ("HardSigmoid", {"alpha": 30.0, "beta": 0.0}),
        ("ThresholdedRelu", {"alpha": -1.0}),
        ("Shrink", {"lambd": -1.0, "bias": -1.0}),
    ],
)
def test_activation_parameters_across_their_range(tmp_path: Path, op: str, attrs: dict) -> None:
    truth = _largest_secant_slope(op, **attrs)
    for verify in (None, False):
        assert_sound(run_audit(_small(op, **attrs), tmp_path, verify=verify), truth, slack=SECANT_SLACK)


@pytest.mark.parametrize(
    "opset, inputs, attrs, initializers",
    [
        (13, ["x", "ratio", "training"], {}, {"ratio": np.array(0.5, np.float32), "training": np.array(True)}),
        (12, ["x", "ratio", "training"], {}, {"ratio": np.array(0.1, np.float32), "training": np.array(True)}),
        (6, ["x"], {"is_test": 0, "ratio": 0.5}, {}),
    ],
)
def test_dropout_in_training_mode_is_random(tmp_path: Path, opset, inputs, attrs, initializers) -> None:
    proto = model(
        [helper.make_node("Dropout", inputs, ["y"], **attrs)],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        initializers,
        opset=opset,
    )
    for verify in (None, False):
        assert_no_certified_figure(run_audit(proto, tmp_path, verify=verify))


def test_dropout_in_training_mode_with_ratio_zero_is_the_identity(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"])],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"ratio": np.array(0.0, np.float32), "training": np.array(True)},
    )
    assert_sound(run_audit(proto, tmp_path), 1.0)
