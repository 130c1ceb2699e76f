"""Class 3: the faithfulness check compares every intermediate value, each at its own scale, and is
not skipped for a non-float or unused input.

The wrong reading used here is real: for nearest Resize, lipaudit places some source coordinates
differently from onnxruntime (float32 coordinate arithmetic), so the IR computes another function.
Alone it is caught; behind a large constant it slips through a tolerance taken from the output's scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import FLOAT, INT64, assert_sound, model, operator_norm, run_audit


def _nearest_resize(size_in: int, size_out: int, coordinates: str, rounding: str, offset: float | None):
    scale = np.float32(size_out / size_in)
    nodes = [
        helper.make_node(
            "Resize",
            ["x", "", "scales"],
            ["r" if offset is not None else "y"],
            mode="nearest",
            coordinate_transformation_mode=coordinates,
            nearest_mode=rounding,
        )
    ]
    initializers = {"scales": np.array([1, 1, 1, scale], np.float32)}
    if offset is not None:
        nodes.append(helper.make_node("Add", ["r", "offset"], ["y"]))
        initializers["offset"] = np.array(offset, np.float32)
    return model(nodes, [("x", FLOAT, [1, 1, 1, size_in])], [("y", FLOAT, [1, 1, 1, size_out])], initializers, opset=19)


def test_a_large_constant_added_at_the_end_hides_no_wrong_reading(tmp_path: Path) -> None:
    """3 → 8 nearest (asymmetric, round_prefer_ceil): onnxruntime copies one entry 4 times (norm 2)."""
    alone = _nearest_resize(3, 8, "asymmetric", "round_prefer_ceil", None)
    shifted = _nearest_resize(3, 8, "asymmetric", "round_prefer_ceil", 1e5)
    truth = operator_norm(shifted, [1, 1, 1, 3])
    assert truth == pytest.approx(2.0)
    assert operator_norm(alone, [1, 1, 1, 3]) == pytest.approx(2.0)
    assert_sound(run_audit(alone, tmp_path), truth)
    assert_sound(run_audit(shifted, tmp_path), truth)  # verification on, as by default


@pytest.mark.parametrize(
    "size_in, size_out, coordinates, rounding",
    [
        (3, 8, "asymmetric", "round_prefer_ceil"),
        (5, 3, "half_pixel", "floor"),
    ],
)
def test_verification_judges_each_tensor_at_its_own_scale(
    tmp_path: Path, size_in, size_out, coordinates, rounding
) -> None:
    """If the Resize alone fails the check, the same Resize followed by + 1e6 must not pass it."""
    alone = run_audit(_nearest_resize(size_in, size_out, coordinates, rounding, None), tmp_path, verify=True)
    shifted = run_audit(_nearest_resize(size_in, size_out, coordinates, rounding, 1e6), tmp_path, verify=True)
    if alone.error is None and alone.report["verification"].get("checked"):
        return  # the reading is right: nothing for the constant to hide
    assert shifted.error is not None or not shifted.report["verification"].get("checked"), (
        f"alone: {alone.describe()}\nbehind a constant: {shifted.describe()}"
    )


def test_an_unused_integer_input_does_not_skip_verification(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1, 4]), ("unused", INT64, [2])], [("y", FLOAT, [1, 4])]
    )
    outcome = run_audit(proto, tmp_path, verify=True)
    assert outcome.error is None, outcome.describe()
    assert outcome.report["verification"]["checked"] is True, outcome.describe()
    assert_sound(outcome, 1.0)


def test_an_integer_index_input_is_fed_a_valid_index(tmp_path: Path) -> None:
    """A Gather whose indices are a model input: verification feeds valid indices instead of giving up."""
    proto = model(
        [helper.make_node("Gather", ["x", "idx"], ["g"], axis=1), helper.make_node("Relu", ["g"], ["y"])],
        [("x", FLOAT, [1, 4]), ("idx", INT64, [2])],
        [("y", FLOAT, [1, 2])],
    )
    outcome = run_audit(proto, tmp_path, verify=True)
    assert outcome.error is None, outcome.describe()
    assert outcome.report["verification"]["checked"] is True, outcome.describe()
    assert outcome.upper_bound is None  # variable indices jump between entries


def test_an_unused_float_input_does_not_skip_verification(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1, 4]), ("unused", FLOAT, [2])], [("y", FLOAT, [1, 4])]
    )
    outcome = run_audit(proto, tmp_path, verify=True)
    assert outcome.error is None, outcome.describe()
    assert outcome.report["verification"]["checked"] is True, outcome.describe()
    assert_sound(outcome, 1.0)


def test_the_report_says_when_verification_could_not_run(tmp_path: Path) -> None:
    """Mod has no executor: the JSON must separate "certified, verified" from
    "certified, not verified"."""
    node = helper.make_node("Mod", ["x", "m"], ["y"], fmod=1)
    proto = model([node], [("x", FLOAT, [1, 3, 2, 2])], [("y", FLOAT, [1, 3, 2, 2])], {"m": np.float32(0.7)})
    outcome = run_audit(proto, tmp_path, verify=True)
    assert outcome.error is None, outcome.describe()
    verification = outcome.report["verification"]
    if not verification.get("checked"):
        assert verification.get("reason"), outcome.describe()
        assert outcome.report["notices"], "an unverified report must say so in its notices"
    plain = run_audit(
        model([helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])]),
        tmp_path,
        verify=True,
    )
    assert plain.report["verification"]["checked"] is True and plain.network["certified"], plain.describe()
