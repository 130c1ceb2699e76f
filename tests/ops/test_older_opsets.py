"""Ops written at the opsets before an attribute existed, or where the runtime fills an output its own
way: the same verdict and figure as at the later opsets (redteam17)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, operator_matrix, save, spectral_norm

RNG = np.random.default_rng(2)
WEIGHT = RNG.standard_normal((6, 5)).astype(np.float32)
KERNELS = {
    "k": RNG.standard_normal((8, 2, 3, 3)).astype(np.float32),
    "k2": RNG.standard_normal((1, 2, 2, 2)).astype(np.float32),
}


def _dropout(opset: int) -> onnx.ModelProto:
    """An inference Dropout whose mask output is named but unused: onnxruntime writes zeros before opset 12."""
    attrs = {"ratio": 0.5} if opset < 12 else {}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Dropout", ["m"], ["y", "mask"], **attrs)]
    return graph_model(nodes, (1, 6), {"w": WEIGHT}, opset=opset)


def _gather_nd(opset: int) -> onnx.ModelProto:
    """GatherND-11 has no batch_dims (from 12, default 0)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["c"]),
        helper.make_node("GatherND", ["c", "idx"], ["y"]),
    ]
    return graph_model(nodes, (1, 6), {"w": WEIGHT, "idx": np.array([[0, 4], [0, 1], [0, 3]], np.int64)}, opset=opset)


def _depth_to_space(opset: int) -> onnx.ModelProto:
    """DepthToSpace-1 has no mode (DCR, the default from 11)."""
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2),
        helper.make_node("Conv", ["d", "k2"], ["y"]),
    ]
    return graph_model(nodes, (1, 2, 3, 3), KERNELS, opset=opset)


CASES = {
    "Dropout": (_dropout, (7, 10, 12), (1, 6)),
    "GatherND": (_gather_nd, (11, 12, 13), (1, 6)),
    "DepthToSpace": (_depth_to_space, (10, 11, 13), (1, 2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_op_at_an_older_opset_gets_the_later_opsets_verdict_and_figure(tmp_path, name) -> None:
    build, opsets, shape = CASES[name]
    truth = spectral_norm(operator_matrix(build(opsets[-1]), shape))
    figures = []
    for opset in opsets:
        report = audit(save(build(opset), tmp_path, f"{name}{opset}.onnx")).to_dict()
        assert report["network"]["verified"] and report["network"]["certified"], (opset, report["network"])
        figures.append(report["network"]["upper_bound"])
    assert len(set(figures)) == 1
    assert truth <= figures[0] <= truth * (1 + 1e-5)
