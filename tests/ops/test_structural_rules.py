"""Weightless linear ops (copy, select, move, reduce) against the truth from onnxruntime.

Each of these maps is linear, so the truth is the top singular value of its matrix.  Where the
rule is exact (a multiplicity, a mean), the factor must equal the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from lipaudit.compose import FLOAT32_MARGIN
from tests.builders import graph_model, jacobian_norm_lower_bound, operator_matrix, single_node_model
from tests.ops._truth import assert_certified_bound, assert_equals_truth, is_closed_form, run_audit, top_singular_value


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def truth_of(model, shape) -> float:
    return top_singular_value(operator_matrix(model, shape))


def check_exact(model, shape, directory, expected: float | None = None):
    """The factor equals the truth (and a closed form, when given); returns the layer."""
    truth = truth_of(model, shape)
    report = run_audit(model, directory)
    layer = report.layers[0]
    assert_certified_bound(layer, truth)
    assert_equals_truth(layer.factor, truth)
    if expected is not None:
        assert is_closed_form(layer.factor, expected), (layer.factor, expected)
    assert report.network.complete and report.network.certified
    return layer


# ---------------------------------------------------------------------------------------------
# Pad

# (input shape, pads, mode, axes)
PAD_CASES = [
    ([1, 2, 4, 5], [0, 0, 1, 2, 0, 0, 2, 1], "constant", None),
    ([1, 2, 4, 5], [0, 0, 1, 2, 0, 0, 2, 1], "reflect", None),
    ([1, 2, 4, 5], [0, 0, 1, 2, 0, 0, 2, 1], "edge", None),
    ([1, 2, 4, 5], [0, 0, 3, 4, 0, 0, 3, 4], "reflect", None),  # reflect reaches every entry twice
    ([1, 2, 4, 5], [0, 0, 3, 0, 0, 0, 3, 4], "edge", None),  # an edge copied 4 times per axis
    ([2, 6], [0, 3, 0, 5], "reflect", None),
    ([2, 6], [1, -2, 0, 3], "edge", None),  # negative pads crop first
    ([3, 5], [-1, 2, 1, -2], "reflect", None),
    ([1, 3, 4], [2, 2], "reflect", [2]),  # opset 18 axes input
    ([1, 3, 4], [0, 3, 0, 3], "edge", [-1, 1]),
]


@pytest.mark.parametrize(
    "shape,pads,mode,axes",
    PAD_CASES,
    ids=[
        f"{mode}_{'x'.join(map(str, s))}_{'-'.join(map(str, p))}{'_axes' if a else ''}" for s, p, mode, a in PAD_CASES
    ],
)
def test_pad_inputs_form(tmp_path, shape, pads, mode, axes):
    inits = {"pads": i64(*pads), "value": np.array(0.5, np.float32)}
    inputs = ["x", "pads", "value"]
    opset = 17
    if axes is not None:
        inits["axes"] = i64(*axes)
        inputs.append("axes")
        opset = 18
    if mode != "constant":
        inputs[2] = ""
        del inits["value"]
    model = single_node_model("Pad", shape, inits, inputs=inputs, opset=opset, mode=mode)
    layer = check_exact(model, shape, tmp_path)
    if mode == "constant":
        assert layer.factor == 1.0


@pytest.mark.parametrize("shape,pads", [([2, 5], [1, 3, 0, 4]), ([1, 3, 2], [0, 2, 3, 0, 1, 4])])
def test_pad_wrap_mode(tmp_path, shape, pads):
    """Opset 19 wrap: an entry reappears once per period the padding spans."""
    model = single_node_model("Pad", shape, {"pads": i64(*pads)}, opset=19, mode="wrap")
    check_exact(model, shape, tmp_path)


def test_pad_with_a_variable_constant_value(tmp_path):
    """The fill value is copied into every padded position: it weighs √(padded positions)."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
        helper.make_node("Pad", ["x", "pads", "mean"], ["y"], mode="constant"),
    ]
    model = graph_model(nodes, [1, 4], {"pads": i64(0, 0, 0, 12)})
    truth = truth_of(model, [1, 4])
    report = run_audit(model, tmp_path)
    assert report.network.upper_bound >= truth * (1 - 1e-6), (report.network.upper_bound, truth)
    assert report.network.certified


def test_pad_with_variable_pads_is_reported_not_crashing(tmp_path):
    """Pads computed at run time (not foldable): the rule cannot bound it and says so."""
    nodes = [helper.make_node("Cast", ["x"], ["p"], to=7), helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")]
    report = run_audit(graph_model(nodes, [4], {}), tmp_path)
    pad = next(layer for layer in report.layers if layer.op == "Pad")
    assert pad.status in ("unknown", "unbounded")
    assert report.network.upper_bound is None


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [7, 10])
def test_pad_attribute_form_before_opset_11(tmp_path, mode, opset):
    shape = [1, 2, 4, 4]
    attrs = dict(pads=[0, 0, 2, 3, 0, 0, 3, 1], mode=mode)
    if mode == "constant":
        attrs["value"] = 1.5
    model = single_node_model("Pad", shape, opset=opset, **attrs)
    check_exact(model, shape, tmp_path)


# ---------------------------------------------------------------------------------------------
# Gather


@pytest.mark.parametrize(
    "indices,axis,shape",
    [
        (i64(0, 2, 2, 1, 2), 0, [4, 3]),  # index 2 three times: √3
        (i64(-1, 3, 3, 0), 1, [2, 4]),  # -1 and 3 are the same column: √3
        (i64(1, 0), 0, [3, 2]),  # no repeats: ≤ 1 (a selection)
        (np.array([[0, 1], [1, 1]], np.int64), 1, [2, 3, 2]),  # 2-D indices
        (np.array(2, np.int64), 0, [3, 4]),  # scalar index
    ],
)
def test_gather_constant_indices(tmp_path, indices, axis, shape):
    model = single_node_model("Gather", shape, {"idx": indices}, axis=axis)
    axis_len = shape[axis]
    repeats = np.bincount(np.where(indices < 0, indices + axis_len, indices).ravel()).max()
    check_exact(model, shape, tmp_path, expected=math.sqrt(repeats))


def test_gather_variable_indices_is_unbounded(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=7), helper.make_node("Gather", ["table", "i"], ["y"])]
    model = graph_model(nodes, [3], {"table": np.arange(12, dtype=np.float32).reshape(4, 3)})
    report = run_audit(model, tmp_path)
    gather = next(layer for layer in report.layers if layer.op == "Gather")
    assert gather.status == "unbounded"
    assert report.network.upper_bound is None


# ---------------------------------------------------------------------------------------------
# Reductions


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum"])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([1, 3], 0), ([-1], 1), (None, 0), ([0, 1, 2, 3], 1)])
@pytest.mark.parametrize("form", ["attribute", "input"])
def test_reduce_mean_and_sum_equal_truth(tmp_path, op, axes, keepdims, form):
    shape = [2, 3, 2, 4]
    if form == "attribute":
        opset = 11
        attrs = {"keepdims": keepdims}
        if axes is not None:
            attrs["axes"] = axes
        model = single_node_model(op, shape, opset=opset, **attrs)
    else:
        opset = 18  # ReduceSum took axes as an input from 13, ReduceMean from 18
        inits = {"axes": i64(*axes)} if axes is not None else {}
        model = single_node_model(op, shape, inits, opset=opset, keepdims=keepdims)
    reduced = shape if axes is None else [shape[a] for a in axes]
    k = int(np.prod(reduced))
    expected = math.sqrt(k) if op == "ReduceSum" else 1 / math.sqrt(k)
    check_exact(model, shape, tmp_path, expected=expected)


def test_reduce_sum_noop_with_empty_axes_is_identity(tmp_path):
    shape = [2, 3]
    model = single_node_model("ReduceSum", shape, opset=13, noop_with_empty_axes=1)
    check_exact(model, shape, tmp_path, expected=1.0)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceL2"])
def test_reduce_one_lipschitz_ops_bound_measured_ratios(tmp_path, op):
    shape = [2, 5, 3]
    model = single_node_model(op, shape, opset=13, axes=[1], keepdims=0)
    layer = run_audit(model, tmp_path).layers[0]
    assert is_closed_form(layer.factor, 1.0) and layer.certified
    assert jacobian_norm_lower_bound(model, shape, samples=6) <= 1.0 + 1e-3


# ---------------------------------------------------------------------------------------------
# Concat, Expand, Tile


def test_concat_of_x_with_itself_is_root_two(tmp_path):
    nodes = [helper.make_node("Concat", ["x", "x"], ["y"], axis=1)]
    model = graph_model(nodes, [2, 3], {})
    truth = truth_of(model, [2, 3])
    report = run_audit(model, tmp_path)
    assert truth == pytest.approx(math.sqrt(2), rel=1e-6)
    assert report.network.upper_bound == pytest.approx(math.sqrt(2), rel=1e-12)
    assert report.network.certified


def test_concat_three_copies_and_a_constant(tmp_path):
    nodes = [helper.make_node("Concat", ["x", "c", "x", "x"], ["y"], axis=0)]
    model = graph_model(nodes, [2, 3], {"c": np.ones((1, 3), np.float32)})
    truth = truth_of(model, [2, 3])
    report = run_audit(model, tmp_path)
    assert truth == pytest.approx(math.sqrt(3), rel=1e-6)
    assert report.network.upper_bound == pytest.approx(math.sqrt(3), rel=1e-12)


def test_concat_of_differently_scaled_branches(tmp_path):
    """√(L₁² + L₂²) with L₁ = 2 (Mul by 2) and L₂ = 1: the truth is √5 here too."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"]), helper.make_node("Concat", ["a", "x"], ["y"], axis=1)]
    model = graph_model(nodes, [2, 3], {"two": np.array(2.0, np.float32)})
    truth = truth_of(model, [2, 3])
    report = run_audit(model, tmp_path)
    assert report.network.upper_bound == pytest.approx(math.sqrt(5), rel=2 * FLOAT32_MARGIN)
    assert report.network.upper_bound >= truth * (1 - 1e-6)
    assert truth == pytest.approx(math.sqrt(5), rel=1e-6)


@pytest.mark.parametrize(
    "shape,target", [([1, 3, 1], [2, 3, 4]), ([3, 1], [2, 1, 3, 5]), ([2, 3], [2, 3]), ([4], [3, 4])]
)
def test_expand_copies(tmp_path, shape, target):
    model = single_node_model("Expand", shape, {"shape": i64(*target)})
    copies = int(np.prod(np.broadcast_shapes(tuple(shape), tuple(target)))) // int(np.prod(shape))
    check_exact(model, shape, tmp_path, expected=math.sqrt(copies))


@pytest.mark.parametrize("repeats", [[2, 1, 3], [1, 1, 1], [1, 4, 1]])
def test_tile_copies(tmp_path, repeats):
    shape = [2, 2, 3]
    model = single_node_model("Tile", shape, {"repeats": i64(*repeats)})
    check_exact(model, shape, tmp_path, expected=math.sqrt(int(np.prod(repeats))))


# ---------------------------------------------------------------------------------------------
# Pure moves and selections


@pytest.mark.parametrize(
    "op,shape,inits,attrs",
    [
        ("Transpose", [2, 3, 4], {}, dict(perm=[2, 0, 1])),
        ("Reshape", [2, 3, 4], {"shape": i64(4, -1)}, {}),
        ("Flatten", [2, 3, 4], {}, dict(axis=2)),
        ("Squeeze", [2, 1, 4], {"axes": i64(1)}, {}),
        ("Unsqueeze", [2, 4], {"axes": i64(0, 3)}, {}),
        ("Identity", [3, 4], {}, {}),
        ("Dropout", [3, 4], {}, {}),
        ("DepthToSpace", [1, 8, 2, 3], {}, dict(blocksize=2)),
        ("SpaceToDepth", [1, 2, 4, 6], {}, dict(blocksize=2)),
        ("Slice", [4, 5], {"starts": i64(1, 0), "ends": i64(3, 5), "axes": i64(0, 1), "steps": i64(1, 2)}, {}),
        ("Slice", [6], {"starts": i64(-1), "ends": i64(-7), "axes": i64(0), "steps": i64(-2)}, {}),
    ],
)
def test_moves_and_selections_are_one(tmp_path, op, shape, inits, attrs):
    model = single_node_model(op, shape, inits, **attrs)
    check_exact(model, shape, tmp_path, expected=1.0)


@pytest.mark.parametrize("split_input", [False, True])
def test_split_bounds_each_output(tmp_path, split_input):
    shape = [4, 6]
    if split_input:
        node = helper.make_node("Split", ["x", "sizes"], ["y1", "y2", "y3"], axis=1)
        inits, opset = {"sizes": i64(1, 2, 3)}, 13
    else:
        node = helper.make_node("Split", ["x"], ["y1", "y2", "y3"], axis=1, split=[1, 2, 3])
        inits, opset = {}, 11
    model = graph_model([node], shape, inits, outputs=("y1", "y2", "y3"), opset=opset)
    report = run_audit(model, tmp_path)
    outputs = {o.name: o.upper_bound for o in report.model.outputs}
    assert outputs == {"y1": 1.0, "y2": 1.0, "y3": 1.0}
    # Each output alone is a selection with norm 1.
    for name in ("y1", "y2", "y3"):
        single = graph_model([node], shape, inits, outputs=(name,), opset=opset)
        single.graph.node[0].output[:] = [n if n == name else f"unused_{n}" for n in ("y1", "y2", "y3")]
        assert truth_of(single, shape) == pytest.approx(1.0, rel=1e-6)
    # The whole network (all outputs together) is reported as √(Σ L²), above the truth 1.
    assert report.network.upper_bound == pytest.approx(math.sqrt(3), rel=1e-12)
    assert report.network.certified and report.network.complete


def test_slice_then_reduce_chain_multiplies(tmp_path):
    nodes = [
        helper.make_node("Slice", ["x", "s", "e", "a"], ["part"]),
        helper.make_node("ReduceSum", ["part", "axes"], ["y"], keepdims=0),
    ]
    inits = {"s": i64(0), "e": i64(4), "a": i64(1), "axes": i64(1)}
    model = graph_model(nodes, [3, 6], inits)
    truth = truth_of(model, [3, 6])
    report = run_audit(model, tmp_path)
    assert report.network.upper_bound == pytest.approx(2.0, rel=2 * FLOAT32_MARGIN)  # √4 entries summed
    assert truth == pytest.approx(2.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Unknown ops never count as 1


def _with_custom_domain(model):
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def test_two_unknown_ops_are_both_reported(tmp_path):
    """RandomNormalLike (no rule; its shape is inferred, so what follows it is read) and a
    custom-domain op, on two outputs: both listed at once."""
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["y1"]),
        helper.make_node("FancyScale", ["x"], ["y2"], domain="com.example"),
    ]
    model = _with_custom_domain(graph_model(nodes, [1, 2, 4, 4], {}, outputs=("y1", "y2")))
    model.graph.output[1].CopyFrom(helper.make_tensor_value_info("y2", 1, [1, 2, 4, 4]))
    report = run_audit(model, tmp_path)
    unsupported = {(b.op, b.node) for b in report.network.unsupported}
    assert {op for op, _ in unsupported} == {"RandomNormalLike", "FancyScale"}
    assert report.network.complete is False
    assert report.network.upper_bound is None
    assert report.network.certified is False
    assert {o.name: o.upper_bound for o in report.model.outputs} == {"y1": None, "y2": None}
    by_op = {layer.op: layer for layer in report.layers}
    for op in ("RandomNormalLike", "FancyScale"):
        assert by_op[op].status == "unknown"
        assert by_op[op].factor is None
        assert by_op[op].running_bound is None
        assert not by_op[op].certified
    assert "com.example" in next(b.reason for b in report.network.unsupported if b.op == "FancyScale")
    # What follows an unknown op is still analysed, but its running bound stays unknown.
    assert by_op["Relu"].factor == 1.0
    assert by_op["Relu"].running_bound is None


def test_unknown_ops_in_series_and_a_known_branch(tmp_path):
    """x → Mod → custom op → y1 and x → Relu → y2: both unknowns listed, y2 still bounded."""
    nodes = [
        helper.make_node("Mod", ["x", "m"], ["a"], fmod=1),
        helper.make_node("FancyScale", ["a"], ["y1"], domain="com.example"),
        helper.make_node("Relu", ["x"], ["y2"]),
    ]
    model = _with_custom_domain(graph_model(nodes, [1, 2, 3, 3], {"m": np.float32(0.7)}, outputs=("y1", "y2")))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y1", 1, [1, 2, 3, 3]))
    report = run_audit(model, tmp_path)
    assert sorted(b.op for b in report.network.unsupported) == ["FancyScale", "Mod"]
    assert report.network.complete is False
    assert report.network.upper_bound is None
    outputs = {o.name: o.upper_bound for o in report.model.outputs}
    assert outputs["y1"] is None
    assert outputs["y2"] == 1.0


def test_unknown_op_feeding_an_add_is_not_one(tmp_path):
    """A residual around an unknown op: the sum must not treat the unknown branch as 1."""
    nodes = [helper.make_node("Mod", ["x", "m"], ["a"], fmod=1), helper.make_node("Add", ["x", "a"], ["y"])]
    report = run_audit(graph_model(nodes, [1, 2, 3, 3], {"m": np.float32(0.7)}), tmp_path)
    assert "Mod" in [b.op for b in report.network.unsupported]
    assert report.network.upper_bound is None
    assert report.network.complete is False
