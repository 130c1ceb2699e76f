"""Moves that leave every entry in place are dropped; one that keeps the shape but moves entries
(a square transpose, a reversing slice) is not the identity and stays."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lipaudit.load import load_model
from lipaudit.passes import DropIdentityMoves


def _graph(nodes, initializers, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3])
    model = helper.make_model(
        helper.make_graph(nodes, "moves", [x], [y], initializers), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    path = tmp_path / "moves.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return load_model(str(path)).graph


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def test_moves_that_keep_every_entry_in_place_are_dropped(tmp_path) -> None:
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Slice", ["a", "starts", "ends", "axes", "ones"], ["b"]),  # the whole of axes 1, 2
        helper.make_node("Transpose", ["b"], ["c"], perm=[0, 1, 2]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    initializers = [_ints("starts", [0, 0]), _ints("ends", [2**62, 3]), _ints("axes", [1, 2]), _ints("ones", [1, 1])]
    graph = _graph(nodes, initializers, tmp_path)
    assert DropIdentityMoves().run(graph)
    assert [node.op_type for node in graph.nodes] == ["Relu"] and graph.nodes[0].inputs == ("x",)


def test_a_move_that_keeps_the_shape_but_moves_entries_stays(tmp_path) -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 1]),  # a square transpose
        helper.make_node("Slice", ["a", "starts", "ends", "axes", "steps"], ["b"]),  # reversed rows
        helper.make_node("Slice", ["b", "one", "three", "axis"], ["c"]),  # rows 1 and 2 only
        helper.make_node("Pad", ["c", "pads"], ["d"]),
        helper.make_node("Pad", ["d", "shift"], ["y"]),  # one row in, one row out: the same shape, moved
    ]
    initializers = [
        _ints("starts", [-1]),
        _ints("ends", [-(2**62)]),
        _ints("axes", [1]),
        _ints("steps", [-1]),
        _ints("one", [1]),
        _ints("three", [3]),
        _ints("axis", [1]),
        _ints("pads", [0, 1, 0, 0, 0, 0]),
        _ints("shift", [0, 1, 0, 0, -1, 0]),
    ]
    graph = _graph(nodes, initializers, tmp_path)
    assert not DropIdentityMoves().run(graph)
    assert [node.op_type for node in graph.nodes] == ["Transpose", "Slice", "Slice", "Pad", "Pad"]
