"""Issue 18, data-dependent shapes: a shape is folded only where a static argument proves it.

Shape or Size of a value whose shape depends on the data (NonZero, Compress, Range up to a computed
limit) is a count of data: a step function of the input. One probe run sees one count; folding it
would certify a jump. The truth here is explicit input pairs, run by onnxruntime, whose outputs
jump across the threshold: ‖f(x) − f(y)‖ / ‖x − y‖ grows without bound, so no figure is right.

Conversely, shape arithmetic on shapes fixed by the input shapes and constants must still fold, in
every exporter's dialect: the legacy ONNX export of a transformer layer computes its reshape targets
with Shape → Slice → Concat chains, and reshapes to targets that shape inference leaves open.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from lipaudit.ir import Graph, Node, Value
from lipaudit.ir.data_shapes import data_shaped_values
from tests.soundness._oracle import FLOAT, assert_sound, model, pair_ratio, run_audit, runtime_function

SHAPE = [1, 4]
JUMP_RATIO = 1e3  # a Lipschitz map this steep would be suspicious; a step exceeds it by far


def _jump_pair(shift: float, rest: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Two inputs 2e-4 apart on either side of a threshold at ``shift`` (the first entry crosses it)."""
    x = np.array([[shift + 1e-4, *rest]], np.float32)
    y = np.array([[shift - 1e-4, *rest]], np.float32)
    return x, y


def _count_times_x():
    """y = x · |{i : x_i > 0}| through NonZero → Shape → Gather."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("NonZero", ["positive"], ["where"]),
        helper.make_node("Shape", ["where"], ["dims"]),
        helper.make_node("Gather", ["dims", "one"], ["count"], axis=0),
        helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "count_f"], ["y"]),
    ]
    return model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, SHAPE)], {"zero": np.float32(0), "one": np.int64(1)})


def _if_on_a_compress_count():
    """y = x if more than 2 entries are positive else 2x: an If on Size(Compress(x, x > 0))."""
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", FLOAT, SHAPE)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["e"])], "else", [], [helper.make_tensor_value_info("e", FLOAT, SHAPE)]
    )
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("Reshape", ["positive", "flat"], ["positive_flat"]),
        helper.make_node("Reshape", ["x", "flat"], ["x_flat"]),
        helper.make_node("Compress", ["x_flat", "positive_flat"], ["kept"]),
        helper.make_node("Size", ["kept"], ["count"]),
        helper.make_node("Greater", ["count", "two_i"], ["many"]),
        helper.make_node("If", ["many"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    constants = {
        "zero": np.float32(0),
        "two": np.float32(2),
        "two_i": np.int64(2),
        "flat": np.array([-1], np.int64),
    }
    return model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, SHAPE)], constants)


def _range_up_to_a_computed_limit():
    """y = x · len(range(0, |Σx|)): the length of a Range whose limit is computed from x."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Abs", ["total"], ["limit"]),
        helper.make_node("Range", ["start", "limit", "step"], ["steps"]),
        helper.make_node("Size", ["steps"], ["count"]),
        helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "count_f"], ["y"]),
    ]
    constants = {"start": np.float32(0), "step": np.float32(1)}
    return model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, SHAPE)], constants)


# (model, where its threshold is, the other entries: the first entry crossing it makes the output jump)
CASES = {
    "nonzero-count": (_count_times_x, 0.0, (1.0, 1.0, 1.0)),
    "if-on-compress-count": (_if_on_a_compress_count, 0.0, (1.0, 1.0, -1.0)),  # 3 positive entries, or 2
    "range-length": (_range_up_to_a_computed_limit, -2.0, (1.0, 1.0, 1.0)),  # ⌈|Σx|⌉ steps: 2, or 1
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("verify", [None, False])
def test_a_count_of_data_is_reported_not_lipschitz(tmp_path: Path, case: str, verify) -> None:
    build, threshold, rest = CASES[case]
    proto = build()
    ratio = pair_ratio(runtime_function(proto), *_jump_pair(threshold, rest))
    assert ratio > JUMP_RATIO, f"the pair does not show the jump ({ratio})"
    outcome = run_audit(proto, tmp_path, verify=verify)
    assert_sound(outcome, math.inf)
    assert outcome.report is not None and outcome.network["unbounded"], outcome.describe()


def test_values_downstream_of_a_data_dependent_shape_are_data_paths() -> None:
    values = {name: Value(name, (2, 3)) for name in ("x", "mask", "where", "dims", "target", "y", "z")}
    values["two"] = Value("two", (1,), np.array([2], np.int64))
    graph = Graph(
        [
            Node("nz", "NonZero", ("mask",), ("where",)),
            Node("shape", "Shape", ("where",), ("dims",)),
            Node("reshape", "Reshape", ("x", "dims"), ("y",)),
            Node("tile", "Tile", ("x", "two"), ("z",)),
        ],
        values,
        ["x", "mask"],
        ["y", "z"],
        opset=17,
    )
    found = data_shaped_values(graph)
    assert set(found) == {"where", "y"}, found  # Shape's own output has a fixed shape; Tile a constant repeat
    assert "NonZero" in found["where"]


def _if_on_a_sum():
    """y = x if Σx > 0.5 else 2x: an If on a comparison of data with a constant the graph names."""
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", FLOAT, SHAPE)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["e"])], "else", [], [helper.make_tensor_value_info("e", FLOAT, SHAPE)]
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "threshold"], ["above"]),
        helper.make_node("If", ["above"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    constants = {"threshold": np.float32(0.5), "two": np.float32(2)}
    return model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, SHAPE)], constants)


def test_the_probe_also_runs_on_the_other_side_of_each_threshold(tmp_path: Path) -> None:
    from lipaudit.load import load_model
    from tests.soundness._oracle import save

    loaded = load_model(save(_if_on_a_sum(), tmp_path))
    assert loaded.probe is not None and loaded.probe.crossings
    first = float(loaded.probe.values["total"])
    others = [float(crossing.values["total"]) for crossing in loaded.probe.crossings]
    assert any((other > 0.5) != (first > 0.5) for other in others), (first, others)


@pytest.mark.parametrize("case", ["if-on-compress-count", "nonzero-count"])
def test_verification_on_both_sides_of_a_threshold_catches_a_wrongly_folded_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """The safety net: were a count of data folded to the first run's value (the old bug), the runs on
    the other side of the thresholds the graph names would show the IR computing something else."""
    from lipaudit.errors import VerificationError
    from lipaudit.passes import fold_constants

    monkeypatch.setattr(fold_constants, "data_shape_reason", lambda *args: None)
    monkeypatch.setattr(fold_constants, "_results", _fold_every_shape(fold_constants._results))
    outcome = run_audit(CASES[case][0](), tmp_path)
    assert isinstance(outcome.error, VerificationError), outcome.describe()


def _fold_every_shape(results):
    def folding(node, graph, data_shaped):
        return results(node, graph, {})  # as before: a shape seen in one run is taken as fixed

    return folding
