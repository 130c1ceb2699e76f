"""ScatterElements and ScatterND at constant indices: bounded like the Gather that moves the same
entries, checked against the materialised operator (onnxruntime on basis vectors); indices computed
from the input are a jump (redteam18)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, operator_matrix, save, spectral_norm

RNG = np.random.default_rng(5)
W = RNG.standard_normal((6, 6)).astype(np.float32)
V = RNG.standard_normal((6, 6)).astype(np.float32)


def _scatter_elements(reduction: str | None, indices: np.ndarray, opset: int = 18) -> onnx.ModelProto:
    """y = scatter(x·W, indices, (x·V)[:, :k]) along axis 1: data and updates both from the input."""
    attrs = {"axis": 1} | ({"reduction": reduction} if reduction else {})
    k = indices.shape[1]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["d"]),
        helper.make_node("MatMul", ["x", "v"], ["full"]),
        helper.make_node("Slice", ["full", "zero", "k", "one"], ["u"]),
        helper.make_node("ScatterElements", ["d", "idx", "u"], ["y"], **attrs),
    ]
    constants = {
        "w": W,
        "v": V,
        "idx": indices.astype(np.int64),
        "zero": np.array([0], np.int64),
        "k": np.array([k], np.int64),
        "one": np.array([1], np.int64),
    }
    return graph_model(nodes, (1, 6), constants, opset=opset)


def _scatter_nd(reduction: str | None, indices: np.ndarray) -> onnx.ModelProto:
    """y = scatter_nd(x·W as 2×3, indices, rows of x·V as 2×3): whole rows written (a slice per index)."""
    attrs = {"reduction": reduction} if reduction else {}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["d6"]),
        helper.make_node("Reshape", ["d6", "grid"], ["d"]),
        helper.make_node("MatMul", ["x", "v"], ["u6"]),
        helper.make_node("Reshape", ["u6", "grid"], ["u"]),
        helper.make_node("ScatterND", ["d", "idx", "u"], ["y"], **attrs),
    ]
    constants = {"w": W, "v": V, "idx": indices.astype(np.int64), "grid": np.array([2, 3], np.int64)}
    return graph_model(nodes, (1, 6), constants, opset=18)


def _norm(matrix: np.ndarray) -> float:
    return spectral_norm(matrix.astype(np.float64))


def _rss(k: int) -> float:
    return float(np.hypot(_norm(W), _norm(V[:, :k])))


# name: (model, the rule's figure: its weights times the two branches' norms)
CASES = {
    "elements-none": lambda: (_scatter_elements(None, np.array([[4, 0, 2]])), _rss(3)),
    "elements-none-negative": lambda: (_scatter_elements("none", np.array([[-1, 1]])), _rss(2)),
    "elements-add-repeats": lambda: (
        _scatter_elements("add", np.array([[3, 3, 3, 1]])),
        _norm(W) + np.sqrt(3) * _norm(V),  # the Slice of x·V is bounded by ‖V‖
    ),
    "elements-max": lambda: (_scatter_elements("max", np.array([[2, 2, 5]])), _rss(3)),
    "elements-min": lambda: (_scatter_elements("min", np.array([[0, 5]])), _rss(2)),
    "elements-opset11": lambda: (_scatter_elements(None, np.array([[1, 5, 3]]), opset=11), _rss(3)),
    "nd-rows": lambda: (_scatter_nd(None, np.array([[1], [0]])), _rss(6)),
    "nd-add-same-row": lambda: (_scatter_nd("add", np.array([[1], [1]])), _norm(W) + np.sqrt(2) * _norm(V)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_scatter_at_constant_indices_is_certified_above_its_operator_norm(tmp_path, name) -> None:
    model, rule = CASES[name]()
    truth = spectral_norm(operator_matrix(model, (1, 6)))
    network = audit(save(model, tmp_path)).to_dict()["network"]
    assert network["verified"] and network["certified"] and network["complete"], network
    assert truth <= network["upper_bound"] <= rule * (1 + 1e-4), (truth, network["upper_bound"], rule)


def test_a_scatter_of_one_variable_is_a_permutation_the_recursion_sees_through(tmp_path) -> None:
    """x·W written into a zero vector in reversed order and multiplied back by Wᵀ's pseudo-inverse
    direction: the product multiplies the two matrices' norms, the recursion does not."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["u"]),
        helper.make_node("ScatterElements", ["zeros", "idx", "u"], ["s"], axis=1),
        helper.make_node("MatMul", ["s", "v"], ["y"]),
    ]
    reverse = np.arange(5, -1, -1)[None, :]
    v = np.linalg.pinv(W)[reverse[0]].astype(np.float32)  # undoes the reversal, then W
    constants = {"w": W, "v": v, "zeros": np.zeros((1, 6), np.float32), "idx": reverse.astype(np.int64)}
    model = graph_model(nodes, (1, 6), constants)
    truth = spectral_norm(operator_matrix(model, (1, 6)))
    path = save(model, tmp_path)
    product = audit(path, bound="product").to_dict()["network"]["upper_bound"]
    network = audit(path).to_dict()["network"]
    assert network["certified"] and truth <= network["upper_bound"] <= truth * 1.01 < product / 2


def test_a_scatter_at_indices_computed_from_the_input_is_not_lipschitz(tmp_path) -> None:
    nodes = [
        helper.make_node("ArgMax", ["x"], ["where"], axis=1, keepdims=1),
        helper.make_node("ScatterElements", ["x", "where", "ones"], ["y"], axis=1),
    ]
    model = graph_model(nodes, (1, 6), {"ones": np.ones((1, 1), np.float32)})
    network = audit(save(model, tmp_path)).to_dict()["network"]
    assert network["upper_bound"] is None and not network["certified"], network


def test_a_product_scatter_of_two_values_from_the_input_is_not_lipschitz(tmp_path) -> None:
    model = _scatter_elements("mul", np.array([[1, 4]]))
    network = audit(save(model, tmp_path)).to_dict()["network"]
    assert network["upper_bound"] is None and not network["certified"], network


def test_a_product_scatter_of_constants_scales_the_entries_it_lands_on(tmp_path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["d"]),
        helper.make_node("ScatterElements", ["d", "idx", "c"], ["y"], axis=1, reduction="mul"),
    ]
    constants = {"w": W, "idx": np.array([[2, 2, 4]], np.int64), "c": np.array([[3.0, -2.0, 0.5]], np.float32)}
    model = graph_model(nodes, (1, 6), constants, opset=18)
    truth = spectral_norm(operator_matrix(model, (1, 6)))
    network = audit(save(model, tmp_path)).to_dict()["network"]
    assert network["certified"] and truth <= network["upper_bound"] <= 6.0 * spectral_norm(W) * (1 + 1e-5)
