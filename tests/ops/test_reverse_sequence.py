"""ReverseSequence at constant lengths: a permutation, exact against the operator materialised
through onnxruntime, with and without verification."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, operator_matrix, save, spectral_norm

WEIGHTS = np.random.default_rng(0).normal(size=(5, 5)).astype(np.float32)


def _between_two_matmuls(node, shape, extra):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]), node, helper.make_node("MatMul", ["b", "W"], ["y"])]
    return graph_model(nodes, shape, {"W": WEIGHTS, **extra})


CASES = {
    "reverse, batch first": (
        helper.make_node("ReverseSequence", ["a", "lengths"], ["b"], batch_axis=0, time_axis=1),
        [4, 5, 5],
        {"lengths": np.array([2, 5, 1, 3], np.int64)},
    ),
    "reverse, time first": (
        helper.make_node("ReverseSequence", ["a", "lengths"], ["b"], batch_axis=1, time_axis=0),
        [3, 2, 5],
        {"lengths": np.array([2, 3], np.int64)},
    ),
}


# Without verification, as the rules must be right on their own; one case is verified as well.
@pytest.mark.parametrize("case, verify", [(case, case == "reverse, time first") for case in sorted(CASES)])
def test_a_constant_reversal_is_bounded_exactly(tmp_path, case, verify) -> None:
    node, shape, extra = CASES[case]
    model = _between_two_matmuls(node, shape, extra)
    truth = spectral_norm(operator_matrix(model, shape))
    report = audit(str(save(model, tmp_path)), verify=verify)
    assert report.network.certified and report.network.complete
    assert truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + 1e-4)
    # the product pays each factor whole: the op's own factor is 1
    product = audit(str(save(model, tmp_path)), verify=verify, bound="product")
    assert product.upper_bound == pytest.approx(spectral_norm(WEIGHTS.astype(np.float64)) ** 2, rel=1e-5)


def test_lengths_computed_from_the_input_are_not_a_permutation(tmp_path) -> None:
    """sequence_lens read from the data (a count that jumps) cannot be bounded by 1."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Cast", ["total"], ["count"], to=7),
        helper.make_node("Expand", ["count", "two"], ["lengths"]),
        helper.make_node("ReverseSequence", ["x", "lengths"], ["y"], batch_axis=0, time_axis=1),
    ]
    model = graph_model(nodes, [2, 3], {"two": np.array([2], np.int64)})
    report = audit(str(save(model, tmp_path)), verify=False)
    assert report.upper_bound is None
    assert not report.network.complete or not report.network.certified


def test_lengths_past_the_sequence_are_refused_as_the_runtime_refuses_them(tmp_path) -> None:
    """onnxruntime will not run lengths outside [0, steps]; the reversal of 5 of 4 steps is no map."""
    node = helper.make_node("ReverseSequence", ["x", "lengths"], ["y"], batch_axis=1, time_axis=0)
    model = graph_model([node], [4, 3, 2], {"lengths": np.array([5, 1, 1], np.int64)})
    report = audit(str(save(model, tmp_path)), verify=False)
    assert report.upper_bound is None and report.exit_code() == 3
