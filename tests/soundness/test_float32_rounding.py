"""Class 7: the runtime computes in float32, so a certified figure must not sit below the Jacobian
onnxruntime actually applies.

Each model here is linear (or affine); its Jacobian is materialised from basis vectors pushed through
onnxruntime and measured by a dense SVD in float64.  Coefficients such as 1/7, 1/(H·W), BatchNorm's
γ/√(var+ε) or Resize's interpolation weights are rounded to float32 by the runtime, often upwards; a
figure rebuilt in float64 without a margin of a few float32 ulps then falls just short.  No slack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import FLOAT, assert_sound, model, operator_norm, run_audit

SYMBOLIC = ["n", "c", "h", "w"]


@pytest.mark.parametrize(
    "size, scale, coordinates",
    [
        (5, 0.6, "half_pixel"),
        (6, 0.6, "pytorch_half_pixel"),
        (5, 0.7, "half_pixel"),
        (7, 0.6, "half_pixel"),
    ],
)
def test_linear_resize(tmp_path: Path, size: int, scale: float, coordinates: str) -> None:
    proto = model(
        [
            helper.make_node(
                "Resize", ["x", "", "scales"], ["y"], mode="linear", coordinate_transformation_mode=coordinates
            )
        ],
        [("x", FLOAT, [1, 1, size, size])],
        [("y", FLOAT, SYMBOLIC)],
        {"scales": np.array([1, 1, scale, scale], np.float32)},
    )
    truth = operator_norm(proto, [1, 1, size, size])
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


@pytest.mark.parametrize(
    "size_in, size_out, coordinates, rounding",
    [
        (3, 8, "asymmetric", "round_prefer_ceil"),
        (3, 11, "tf_half_pixel_for_nn", "round_prefer_ceil"),
        (3, 11, "half_pixel_symmetric", "floor"),
    ],
)
def test_nearest_resize_rounds_source_coordinates_in_float32(
    tmp_path: Path, size_in, size_out, coordinates, rounding
) -> None:
    """onnxruntime computes the source coordinate in float32; on a tie it may pick another entry,
    and one entry then gets more copies than the float64 reading gives it."""
    proto = model(
        [
            helper.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="nearest",
                coordinate_transformation_mode=coordinates,
                nearest_mode=rounding,
            )
        ],
        [("x", FLOAT, [1, 1, 1, size_in])],
        [("y", FLOAT, [1, 1, 1, size_out])],
        {"scales": np.array([1, 1, 1, np.float32(size_out / size_in)], np.float32)},
        opset=19,
    )
    truth = operator_norm(proto, [1, 1, 1, size_in])
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def _batchnorm_case(seed: int, width: int = 3):
    """The random BatchNorm (and a weight before it) a search found just below the runtime."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(width, width)).astype(np.float32)
    var = rng.uniform(0.01, 2, size=width).astype(np.float32)
    scale = rng.normal(size=width).astype(np.float32)
    epsilon = float(rng.choice([1e-5, 1e-3, 0.1]))
    parameters = {"scale": scale, "bias": np.zeros(width, np.float32), "mean": np.zeros(width, np.float32), "var": var}
    return weight, parameters, epsilon


@pytest.mark.parametrize("seed", [18, 35, 14])
def test_batchnorm_alone(tmp_path: Path, seed: int) -> None:
    _, parameters, epsilon = _batchnorm_case(seed)
    proto = model(
        [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], epsilon=epsilon)],
        [("x", FLOAT, [1, 3])],
        [("y", FLOAT, [1, 3])],
        parameters,
    )
    truth = operator_norm(proto, [1, 3])
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


@pytest.mark.parametrize("seed", [35, 32])
def test_batchnorm_folded_into_matmul(tmp_path: Path, seed: int) -> None:
    weight, parameters, epsilon = _batchnorm_case(seed)
    proto = model(
        [
            helper.make_node("MatMul", ["x", "weight"], ["h"]),
            helper.make_node("BatchNormalization", ["h", "scale", "bias", "mean", "var"], ["y"], epsilon=epsilon),
        ],
        [("x", FLOAT, [1, 3])],
        [("y", FLOAT, [1, 3])],
        {"weight": weight, **parameters},
    )
    truth = operator_norm(proto, [1, 3])
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


@pytest.mark.parametrize("seed", [7, 0])
def test_batchnorm_folded_into_conv(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    var = rng.uniform(0.01, 2, size=2).astype(np.float32)
    scale = rng.normal(size=2).astype(np.float32)
    proto = model(
        [
            helper.make_node("Conv", ["x", "weight"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["h", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3),
        ],
        [("x", FLOAT, [1, 2, 4, 4])],
        [("y", FLOAT, SYMBOLIC)],
        {
            "weight": weight,
            "scale": scale,
            "bias": np.zeros(2, np.float32),
            "mean": np.zeros(2, np.float32),
            "var": var,
        },
    )
    truth = operator_norm(proto, [1, 2, 4, 4])
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


@pytest.mark.parametrize("divisor", [3.0, 7.0, 11.0, 0.3])
def test_division_by_a_constant(tmp_path: Path, divisor: float) -> None:
    """x / 7 in float32 is x · 0.142857149…, above 1/7."""
    proto = model(
        [helper.make_node("Div", ["x", "c"], ["y"])],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"c": np.full((1, 4), divisor, np.float32)},
    )
    truth = operator_norm(proto, [1, 4])
    assert_sound(run_audit(proto, tmp_path), truth)


@pytest.mark.parametrize("op, side", [("GlobalAveragePool", 3), ("GlobalAveragePool", 6), ("ReduceMean", 3)])
def test_means_over_positions(tmp_path: Path, op: str, side: int) -> None:
    if op == "GlobalAveragePool":
        proto = model(
            [helper.make_node(op, ["x"], ["y"])], [("x", FLOAT, [1, 1, side, side])], [("y", FLOAT, [1, 1, 1, 1])]
        )
        shape = [1, 1, side, side]
    else:
        proto = model(
            [helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=1)],
            [("x", FLOAT, [1, side * side])],
            [("y", FLOAT, [1, 1])],
        )
        shape = [1, side * side]
    truth = operator_norm(proto, shape)
    assert_sound(run_audit(proto, tmp_path), truth)


@pytest.mark.parametrize("size", [5, 6])
def test_average_pool_excluding_padding(tmp_path: Path, size: int) -> None:
    proto = model(
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)],
        [("x", FLOAT, [1, 1, size, size])],
        [("y", FLOAT, SYMBOLIC)],
    )
    truth = operator_norm(proto, [1, 1, size, size])
    assert_sound(run_audit(proto, tmp_path), truth)
