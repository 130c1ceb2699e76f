"""Reshape chains collapse, and a Concat of slices of one value is one Gather: the figure of every
export of a model does not depend on how its exporter spelled these (issue 22)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, operator_matrix, save, spectral_norm

INT64_MIN = -(2**63)


def test_flatten_then_reshape_back_lets_the_convolutions_merge(tmp_path: Path) -> None:
    """nn.Flatten then nn.Unflatten between two convolutions: kept, the product multiplies two norms;
    gone, the convolutions are one and the figure is the operator's norm."""
    rng = np.random.default_rng(0)
    consts = {
        "w1": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
        "w2": rng.normal(size=(2, 4, 1, 1)).astype(np.float32),
        "back": np.array([1, 4, 5, 5], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["a"], ["flat"], axis=1),
        helper.make_node("Reshape", ["flat", "back"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"]),
    ]
    model = graph_model(nodes, [1, 2, 5, 5], consts)
    report = audit(str(save(model, tmp_path)), bound="product", verify=False)
    assert [layer.op for layer in report.layers] == ["Conv"]
    truth = spectral_norm(operator_matrix(model, [1, 2, 5, 5]))
    assert truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + 1e-4)


def test_a_reshape_chain_is_one_reshape(tmp_path: Path) -> None:
    consts = {"s1": np.array([1, 6, 2], np.int64), "s2": np.array([3, 4], np.int64), "axes": np.array([0], np.int64)}
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["a"]),
        helper.make_node("Reshape", ["a", "s2"], ["b"]),
        helper.make_node("Unsqueeze", ["b", "axes"], ["y"]),
    ]
    report = audit(str(save(graph_model(nodes, [2, 6], consts), tmp_path)), verify=False)
    assert [layer.op for layer in report.layers] == ["Reshape"]
    assert report.upper_bound == 1.0


def _halves(order: tuple[int, ...], steps: tuple[int, ...] = (1, 1)) -> tuple[list, dict]:
    """Slices [0, 3) and [3, 8) of axis 1 (one reversed when its step is −1), concatenated in ``order``."""
    bounds = {1: [(0, 3), (3, 8)], -1: [(2, INT64_MIN), (7, 2)]}
    consts = {"axis": np.array([1], np.int64)}
    nodes = []
    for k, step in enumerate(steps):
        start, end = bounds[step][k]
        consts |= {f"s{k}": np.array([start], np.int64), f"e{k}": np.array([end], np.int64)}
        consts[f"p{k}"] = np.array([step], np.int64)
        nodes.append(helper.make_node("Slice", ["x", f"s{k}", f"e{k}", "axis", f"p{k}"], [f"part{k}"]))
    nodes.append(helper.make_node("Concat", [f"part{k}" for k in order], ["y"], axis=1))
    return nodes, consts


@pytest.mark.parametrize(
    "order,steps,truth",
    [
        ((1, 0), (1, 1), 1.0),  # a roll: a permutation
        ((0, 1), (-1, -1), 1.0),  # each half reversed
        ((0, 0), (1, 1), np.sqrt(2)),  # one half twice
    ],
)
@pytest.mark.parametrize("verify", [True, False])
def test_concat_of_slices_is_one_gather(
    tmp_path: Path, order: tuple[int, ...], steps: tuple[int, ...], truth: float, verify: bool
) -> None:
    nodes, consts = _halves(order, steps)
    model = graph_model(nodes, [2, 8], consts)
    report = audit(str(save(model, tmp_path)), bound="product", verify=verify)
    assert [layer.op for layer in report.layers] == ["Gather"]
    assert spectral_norm(operator_matrix(model, [2, 8])) == pytest.approx(truth, rel=1e-6)
    assert report.upper_bound == pytest.approx(truth, rel=1e-9)


def test_split_then_concat_in_another_order_is_one_gather(tmp_path: Path) -> None:
    consts = {"sizes": np.array([2, 3, 3], np.int64)}
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=-1),
        helper.make_node("Concat", ["c", "a", "b"], ["y"], axis=1),
    ]
    report = audit(str(save(graph_model(nodes, [2, 8], consts), tmp_path)), bound="product", verify=False)
    assert [layer.op for layer in report.layers] == ["Gather"] and report.upper_bound == 1.0


def test_attribute_slices_before_opset_10_are_read_too(tmp_path: Path) -> None:
    """Slice's starts/ends/axes were attributes before opset 10 (redteam6: an internal error)."""
    nodes = [
        helper.make_node("Slice", ["x"], ["a"], starts=[0], ends=[2], axes=[1]),
        helper.make_node("Slice", ["x"], ["b"], starts=[1], ends=[3], axes=[1]),
        helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
    ]
    model = graph_model(nodes, [2, 3], {}, opset=9)
    report = audit(str(save(model, tmp_path)), bound="product")
    assert [layer.op for layer in report.layers] == ["Gather"]
    assert spectral_norm(operator_matrix(model, [2, 3])) == pytest.approx(np.sqrt(2), rel=1e-6)
    assert report.upper_bound == pytest.approx(np.sqrt(2), rel=1e-9)  # the middle column, twice


def test_slices_of_two_values_stay_a_concat(tmp_path: Path) -> None:
    consts = {"s": np.array([0], np.int64), "e": np.array([4], np.int64), "axis": np.array([1], np.int64)}
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Slice", ["x", "s", "e", "axis"], ["a"]),
        helper.make_node("Slice", ["r", "s", "e", "axis"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
    ]
    report = audit(str(save(graph_model(nodes, [2, 8], consts), tmp_path)), bound="product", verify=False)
    assert "Concat" in [layer.op for layer in report.layers]
