"""Pair sorts as exporters write them (GroupSort-2 / MaxMin, CReLU) fuse into one op of factor 1;
look-alikes that are not 1-Lipschitz, or whose pieces are read elsewhere, stay as they were.

Truth: the Jacobian of the torch function itself at random points (a permutation matrix for a
pair sort, so exactly 1), never lipaudit's executor.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from lipaudit import audit
from lipaudit.ir import Graph, Node, Value
from lipaudit.passes import FuseSorting
from tests.builders import graph_model, save
from tests.passes._export import export, jacobian_norms, random_points

SHAPE = (2, 6, 3)


def split_halves(x):
    a, b = x.split(x.shape[1] // 2, 1)
    return torch.cat([torch.max(a, b), torch.min(a, b)], 1)


def chunk_min_first(x):
    a, b = x.chunk(2, dim=1)
    return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], 1)


def sliced_halves(x):
    c = x.shape[1] // 2
    a, b = x[:, :c], x[:, c:]
    return torch.cat([torch.max(a, b), torch.min(a, b)], 1)


def interleaved_stack(x):
    a, b = x[:, 0::2], x[:, 1::2]
    return torch.stack([torch.max(a, b), torch.min(a, b)], 2).reshape(x.shape)


def grouped_reduce(x):  # deel-torchlip's GroupSort2
    t = x.view(x.shape[0], x.shape[1] // 2, 2, *x.shape[2:])
    return torch.cat([t.min(2, keepdim=True)[0], t.max(2, keepdim=True)[0]], 2).view(x.shape)


def grouped_reduce_stacked(x):
    t = x.view(x.shape[0], x.shape[1] // 2, 2, *x.shape[2:])
    return torch.stack([t.amax(2), t.amin(2)], 2).reshape(x.shape)


def concatenated_relu(x):
    return torch.cat((F.relu(x), F.relu(-x)), 1)


def concatenated_relu_negative_first(x):
    return torch.cat((F.relu(x * -1.0), F.relu(x)), 2)


PAIR_SORTS = {
    "split": split_halves,
    "chunk": chunk_min_first,
    "slices": sliced_halves,
    "interleaved-stack": interleaved_stack,
    "reduce": grouped_reduce,
    "reduce-stack": grouped_reduce_stacked,
}
CRELUS = {"crelu": concatenated_relu, "crelu-negative-first": concatenated_relu_negative_first}


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", sorted(PAIR_SORTS) + sorted(CRELUS))
def test_exported_pair_sorts_fuse_into_one_op_of_factor_one(tmp_path: Path, name: str, kind: str) -> None:
    fn = {**PAIR_SORTS, **CRELUS}[name]
    path, shapes = export(fn, SHAPE, tmp_path, kind)
    report = audit(str(path), input_shape=shapes)
    ops = [layer.op for layer in report.layers]
    fused = "MaxMin" if name in PAIR_SORTS else "CRelu"
    assert ops.count(fused) == 1, ops
    assert not {"Max", "Min", "ReduceMax", "ReduceMin", "Relu", "Neg"} & set(ops), ops
    assert report.verification.checked, report.verification.reason  # the fused run is the runtime's function
    assert report.network.certified and report.network.complete
    truth = jacobian_norms(fn, random_points(SHAPE))
    assert truth == pytest.approx(1.0, abs=1e-12)  # a (signed) permutation where differentiable
    assert report.network.upper_bound == 1.0  # selects and compares only: no float32 margin


def _graph(
    nodes: list[Node], shapes: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray], outputs: list[str]
) -> Graph:
    values = {name: Value(name, shape) for name, shape in shapes.items()}
    values.update({name: Value(name, array.shape, array) for name, array in consts.items()})
    return Graph(nodes, values, ["x"], outputs, opset=17)


def _split_pair(*, second_min_input: str = "b", extra_output: str | None = None) -> Graph:
    nodes = [
        Node("split", "Split", ["x", "sizes"], ["a", "b"], {"axis": 1}),
        Node("max", "Max", ["a", "b"], ["hi"]),
        Node("min", "Min", ["a", second_min_input], ["lo"]),
        Node("cat", "Concat", ["hi", "lo"], ["y"], {"axis": 1}),
    ]
    shapes = {"x": (1, 4, 2), "a": (1, 2, 2), "b": (1, 2, 2), "hi": (1, 2, 2), "lo": (1, 2, 2), "y": (1, 4, 2)}
    outputs = ["y"] + ([extra_output] if extra_output else [])
    return _graph(nodes, shapes, {"sizes": np.array([2, 2], np.int64)}, outputs)


def test_the_fused_graph_keeps_its_links_and_the_concat_output_name() -> None:
    graph = _split_pair()
    assert FuseSorting().run(graph)
    graph.check_links()
    fused = graph.producer("y")
    assert (fused.op_type, fused.domain, fused.inputs) == ("MaxMin", "lipaudit", ("x",))
    assert fused.attrs["first"] == [0, 1] and fused.attrs["second"] == [2, 3] and fused.attrs["max_first"] == 1


def test_a_max_and_min_of_different_pairs_is_not_a_sort() -> None:
    graph = _split_pair(second_min_input="a")  # Min(a, a): not the pair of the Max
    assert not FuseSorting().run(graph)


def test_a_half_read_elsewhere_is_not_removed() -> None:
    graph = _split_pair(extra_output="hi")
    assert not FuseSorting().run(graph)
    assert graph.producer("hi").op_type == "Max"


def test_overlapping_selections_cost_the_square_root_of_their_overlap(tmp_path: Path) -> None:
    """a = x[:, 0:3], b = x[:, 1:4]: x₁ and x₂ each appear twice; the Jacobian at a point where
    x₁ wins both of its comparisons has a column of two ones, so the truth is √2."""

    def overlapping(x):
        a, b = x[:, 0:3], x[:, 1:4]
        return torch.cat([torch.max(a, b), torch.min(a, b)], 1)

    path, _ = export(overlapping, (1, 4), tmp_path)
    report = audit(str(path))
    assert [layer.op for layer in report.layers] == ["MaxMin"]
    assert report.layers[0].factor == pytest.approx(math.sqrt(2))
    truth = jacobian_norms(overlapping, [torch.tensor([[0.0, 5.0, 1.0, 0.5]])])
    assert truth == pytest.approx(math.sqrt(2))
    assert report.network.upper_bound >= truth


def test_max_and_min_of_their_own_equal_slices_fuse(tmp_path: Path) -> None:
    """torch.jit writes a Slice per use: Max and Min read different values that take the same
    entries. Compared by name they were no pair, and the .pt figure was 2 where ONNX gave 1."""
    consts = {
        "s0": np.array([0], np.int64),
        "e0": np.array([2], np.int64),
        "s1": np.array([2], np.int64),
        "e1": np.array([4], np.int64),
        "axis": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Slice", ["x", "s0", "e0", "axis"], ["a"]),
        helper.make_node("Slice", ["x", "s1", "e1", "axis"], ["b"]),
        helper.make_node("Slice", ["x", "s0", "e0", "axis"], ["a2"]),
        helper.make_node("Slice", ["x", "s1", "e1", "axis"], ["b2"]),
        helper.make_node("Max", ["a", "b"], ["high"]),
        helper.make_node("Min", ["b2", "a2"], ["low"]),
        helper.make_node("Concat", ["high", "low"], ["y"], axis=1),
    ]
    report = audit(str(save(graph_model(nodes, [1, 4], consts), tmp_path)))
    assert [layer.op for layer in report.layers] == ["MaxMin"]
    assert report.upper_bound == pytest.approx(1.0)  # a GroupSort of disjoint pairs


def test_a_scaled_negation_is_not_a_crelu(tmp_path: Path) -> None:
    """relu(x) beside relu(−2x) moves twice as fast as x: fusing it as CReLU would be unsound."""

    def steep(x):
        return torch.cat((F.relu(x), F.relu(x * -2.0)), 1)

    path, _ = export(steep, (1, 4), tmp_path)
    report = audit(str(path))
    assert "CRelu" not in [layer.op for layer in report.layers]
    truth = jacobian_norms(steep, [-torch.ones(1, 4)])
    assert truth == pytest.approx(2.0)
    assert report.network.upper_bound >= truth


def test_relus_of_two_different_tensors_are_not_a_crelu(tmp_path: Path) -> None:
    consts = {"w": np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["u"]),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("Relu", ["u"], ["r1"]),
        helper.make_node("Relu", ["n"], ["r2"]),
        helper.make_node("Concat", ["r1", "r2"], ["y"], axis=1),
    ]
    report = audit(str(save(graph_model(nodes, [1, 2], consts), tmp_path)))
    assert "CRelu" not in [layer.op for layer in report.layers]


def test_a_min_max_of_a_group_of_three_is_not_taken_for_a_pair(tmp_path: Path) -> None:
    def triples(x):
        t = x.view(1, 2, 3)
        return torch.cat([t.min(2, keepdim=True)[0], t.max(2, keepdim=True)[0]], 2)

    path, _ = export(triples, (1, 6), tmp_path)
    report = audit(str(path))
    assert "MaxMin" not in [layer.op for layer in report.layers]
    assert report.network.upper_bound >= jacobian_norms(triples, random_points((1, 6)))


def test_a_concat_along_another_axis_than_the_reduction_is_not_fused(tmp_path: Path) -> None:
    def across(x):
        t = x.view(1, 3, 2)
        return torch.cat([t.min(2, keepdim=True)[0], t.max(2, keepdim=True)[0]], 1)

    path, _ = export(across, (1, 6), tmp_path)
    report = audit(str(path))
    assert "MaxMin" not in [layer.op for layer in report.layers]
