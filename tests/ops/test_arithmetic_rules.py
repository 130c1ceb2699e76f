"""Elementwise arithmetic: constants (with broadcasting on either side) against the operator truth,
and the products, quotients and powers of variables that have no global bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from tests.builders import graph_model, jacobian_norm_lower_bound, operator_matrix, single_node_model
from tests.ops._truth import assert_equals_truth, rng_array, run_audit, top_singular_value


def truth_of(model, shape) -> float:
    return top_singular_value(operator_matrix(model, shape))


def network_check(model, shape, directory, *, exact: bool):
    truth = truth_of(model, shape)
    report = run_audit(model, directory)
    bound = report.network.upper_bound
    assert bound is not None and report.network.certified and report.network.complete
    assert bound >= truth * (1 - 1e-6), (bound, truth)
    if exact:
        assert_equals_truth(bound, truth)
    return report, truth


# ---------------------------------------------------------------------------------------------
# Mul / Div by a constant

# (variable shape, constant shape, constant first)
BROADCAST_CASES = [
    ([2, 3], [], False),  # scalar
    ([2, 3], [3], False),  # the constant broadcasts
    ([2, 3], [2, 1], True),
    ([1, 3], [4, 3], False),  # the variable broadcasts: each entry feeds 4 outputs
    ([3], [2, 4, 3], True),
    ([2, 1, 3], [1, 5, 1], False),  # both broadcast
    ([1, 1], [3, 4], True),
]


def _ids(cases):
    return [
        f"{'x'.join(map(str, v)) or 's'}-{'x'.join(map(str, c)) or 'scalar'}{'-cfirst' if f else ''}"
        for v, c, f in cases
    ]


@pytest.mark.parametrize("var_shape,const_shape,const_first", BROADCAST_CASES, ids=_ids(BROADCAST_CASES))
def test_mul_by_constant_equals_truth(tmp_path, var_shape, const_shape, const_first):
    c = rng_array(const_shape, seed=len(const_shape) + 7) if const_shape else np.array(-2.5, np.float32)
    inputs = ["c", "x"] if const_first else ["x", "c"]
    model = graph_model([helper.make_node("Mul", inputs, ["y"])], var_shape, {"c": c})
    report, truth = network_check(model, var_shape, tmp_path, exact=True)
    assert report.layers[0].certified


@pytest.mark.parametrize("var_shape,const_shape,const_first", BROADCAST_CASES, ids=_ids(BROADCAST_CASES))
def test_div_by_constant_equals_truth(tmp_path, var_shape, const_shape, const_first):
    c = rng_array(const_shape, seed=3) if const_shape else np.array(0.4, np.float32)
    c = np.where(np.abs(c) < 0.2, 0.2, c).astype(np.float32)  # keep away from zero
    model = graph_model([helper.make_node("Div", ["x", "c"], ["y"])], var_shape, {"c": c})
    network_check(model, var_shape, tmp_path, exact=True)


def test_mul_by_a_constant_node(tmp_path):
    """A scalar from a Constant node (as exporters write it) is a constant too."""
    nodes = [helper.make_node("Constant", [], ["c"], value_float=-3.0), helper.make_node("Mul", ["x", "c"], ["y"])]
    model = graph_model(nodes, [2, 3], {})
    report, truth = network_check(model, [2, 3], tmp_path, exact=True)
    assert report.network.upper_bound == pytest.approx(3.0)


def test_div_by_constant_with_a_zero_is_unbounded(tmp_path):
    c = np.array([1.0, 0.0, 2.0], np.float32)
    report = run_audit(single_node_model("Div", [2, 3], {"c": c}), tmp_path)
    assert report.layers[0].status == "unbounded"
    assert report.network.upper_bound is None


def test_constant_divided_by_variable_is_unbounded(tmp_path):
    nodes = [helper.make_node("Div", ["c", "x"], ["y"])]
    report = run_audit(graph_model(nodes, [3], {"c": np.ones(3, np.float32)}), tmp_path)
    assert report.layers[0].status == "unbounded"
    assert report.network.upper_bound is None
    assert report.network.unbounded[0].op == "Div"


# ---------------------------------------------------------------------------------------------
# Add / Sub / Sum


def test_add_x_to_itself_is_two(tmp_path):
    model = graph_model([helper.make_node("Add", ["x", "x"], ["y"])], [2, 3], {})
    report, truth = network_check(model, [2, 3], tmp_path, exact=True)
    assert truth == pytest.approx(2.0, rel=1e-6)


def test_sub_x_from_itself_is_bounded_by_two(tmp_path):
    model = graph_model([helper.make_node("Sub", ["x", "x"], ["y"])], [2, 3], {})
    report, truth = network_check(model, [2, 3], tmp_path, exact=False)
    assert truth == 0.0
    assert report.network.product_bound == pytest.approx(2.0)  # the rule: |1| + |−1|
    # The recursion sees the one map x − x = 0 and its exact norm, 0: sound and exact here.
    assert truth <= report.network.upper_bound <= report.network.product_bound


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("var_shape,const_shape,const_first", BROADCAST_CASES, ids=_ids(BROADCAST_CASES))
def test_add_sub_constant_equals_truth(tmp_path, op, var_shape, const_shape, const_first):
    """Adding a constant shifts; a variable that broadcasts over k copies weighs √k."""
    c = rng_array(const_shape, seed=5) if const_shape else np.array(1.5, np.float32)
    inputs = ["c", "x"] if const_first else ["x", "c"]
    model = graph_model([helper.make_node(op, inputs, ["y"])], var_shape, {"c": c})
    network_check(model, var_shape, tmp_path, exact=True)


def test_residual_of_a_broadcast_branch(tmp_path):
    """x + mean(x) over an axis: L ≤ 1 + √3·(1/√3) = 2; the truth (a projection plus I) is 2 too."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Add", ["x", "m"], ["y"]),
    ]
    model = graph_model(nodes, [2, 3], {}, opset=13)
    report, truth = network_check(model, [2, 3], tmp_path, exact=True)
    assert truth == pytest.approx(2.0, rel=1e-6)


def test_sum_of_three_inputs(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "three"], ["a"]), helper.make_node("Sum", ["x", "a", "c"], ["y"])]
    model = graph_model(nodes, [2, 2], {"three": np.array(3.0, np.float32), "c": np.ones((2, 2), np.float32)})
    report, truth = network_check(model, [2, 2], tmp_path, exact=True)
    assert truth == pytest.approx(4.0, rel=1e-6)


def test_mean_of_three_inputs_is_a_third_of_their_sum(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "three"], ["a"]), helper.make_node("Mean", ["x", "a", "c"], ["y"])]
    model = graph_model(nodes, [2, 2], {"three": np.array(3.0, np.float32), "c": np.ones((2, 2), np.float32)})
    report, truth = network_check(model, [2, 2], tmp_path, exact=True)
    assert truth == pytest.approx(4.0 / 3.0, rel=1e-6)


def test_mean_of_an_input_with_itself_is_the_input(tmp_path):
    model = graph_model([helper.make_node("Mean", ["x", "x"], ["y"])], [3], {})
    report, truth = network_check(model, [3], tmp_path, exact=True)
    assert truth == pytest.approx(1.0, rel=1e-6)


def test_mean_with_a_constant_that_broadcasts_the_input(tmp_path):
    model = graph_model([helper.make_node("Mean", ["x", "c"], ["y"])], [1, 3], {"c": rng_array((4, 3))})
    report, truth = network_check(model, [1, 3], tmp_path, exact=True)
    assert truth == pytest.approx(1.0, rel=1e-6)  # each entry feeds 4 outputs, halved: √4/2


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_of_two_branches(tmp_path, op):
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"]), helper.make_node(op, ["x", "a", "c"], ["y"])]
    model = graph_model(nodes, [6], {"two": np.array(-2.0, np.float32), "c": np.zeros(6, np.float32)})
    report = run_audit(model, tmp_path)
    assert report.network.upper_bound == pytest.approx(math.sqrt(1 + 4))
    assert jacobian_norm_lower_bound(model, [6]) <= report.network.upper_bound * (1 + 1e-3)


# ---------------------------------------------------------------------------------------------
# Not Lipschitz


def _assert_unbounded(report, op):
    layer = next(layer for layer in report.layers if layer.op == op)
    assert layer.status == "unbounded"
    assert layer.factor is None
    assert layer.reason
    assert report.network.upper_bound is None
    assert not report.network.certified
    assert report.network.complete  # it has a rule; it is just not bounded
    assert op in [b.op for b in report.network.unbounded]
    for output in report.model.outputs:
        assert output.upper_bound is None


def test_mul_of_two_variables_is_unbounded(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["x", "r"], ["y"])]
    _assert_unbounded(run_audit(graph_model(nodes, [3], {}), tmp_path), "Mul")


def test_mul_of_x_with_itself_is_unbounded(tmp_path):
    _assert_unbounded(run_audit(graph_model([helper.make_node("Mul", ["x", "x"], ["y"])], [3], {}), tmp_path), "Mul")


def test_div_by_variable_is_unbounded(tmp_path):
    nodes = [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Add", ["a", "one"], ["d"]),
        helper.make_node("Div", ["x", "d"], ["q"]),
        helper.make_node("Relu", ["q"], ["y"]),
    ]
    # Not x / (1 + |x|) fed straight from x's Abs (that would be Softsign): here the quotient's
    # denominator is used twice, so it cannot be fused.
    nodes.append(helper.make_node("Add", ["y", "d"], ["z"]))
    model = graph_model(nodes, [3], {"one": np.array(1.0, np.float32)}, outputs=("z",))
    _assert_unbounded(run_audit(model, tmp_path), "Div")


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, -1.0])
def test_pow_of_x_is_unbounded(tmp_path, exponent):
    model = single_node_model("Pow", [3], {"p": np.array(exponent, np.float32)})
    _assert_unbounded(run_audit(model, tmp_path), "Pow")


def test_pow_with_exponent_one_is_identity(tmp_path):
    model = single_node_model("Pow", [3], {"p": np.array(1.0, np.float32)})
    network_check(model, [3], tmp_path, exact=True)


def test_constant_to_the_power_of_x_is_unbounded(tmp_path):
    nodes = [helper.make_node("Pow", ["two", "x"], ["y"])]
    _assert_unbounded(run_audit(graph_model(nodes, [3], {"two": np.array(2.0, np.float32)}), tmp_path), "Pow")


@pytest.mark.parametrize("op", ["Exp", "Log", "Sqrt", "Reciprocal"])
def test_unbounded_slope_ops(tmp_path, op):
    _assert_unbounded(run_audit(single_node_model(op, [3]), tmp_path), op)


def test_unbounded_after_bounded_layers_still_blocks(tmp_path):
    nodes = [
        helper.make_node("Mul", ["x", "half"], ["a"]),
        helper.make_node("Exp", ["a"], ["b"]),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    report = run_audit(graph_model(nodes, [3], {"half": np.array(0.5, np.float32)}), tmp_path)
    assert report.layers[0].factor == pytest.approx(0.5)
    assert report.layers[-1].status == "bounded"
    assert report.layers[-1].running_bound is None
    _assert_unbounded(report, "Exp")
