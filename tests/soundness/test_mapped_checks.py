"""Memory-mapped models get the same checks (issue 18): a figure never depends on --in-memory-limit.

A model whose weights exceed the in-memory limit is read memory-mapped. It used to skip the runtime
probe, so its shapes came from ONNX shape inference alone, which is wrong for MaxPool with
ceil_mode and padding: the figure was then certified below the truth. Now it is probed one node at
a time (each node's own weights read from the mapping), verified, and tightened like a model read
whole: the same figure and certification with a limit of 0 bytes as with the default. The truth is
onnxruntime's own function: central differences of a piecewise-linear map at random points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from lipaudit import audit
from lipaudit.load import load_model
from tests.soundness._oracle import FLOAT, assert_sound, max_fd_jacobian_norm, model, runtime_function

FD_SLACK = 1e-3


def _ceil_mode_pool_with_weights() -> onnx.ModelProto:
    """x·w → MaxPool(2, stride 2, pads 1, ceil_mode) → a 1×1 convolution → GlobalAveragePool.

    Shape inference says the pool gives 4×4, onnxruntime 3×3: the average then runs over 9 entries, not 16.
    """
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["s"]),
        helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("Conv", ["p", "mix"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["y"]),
    ]
    weights = {
        "scale": (1 + rng.random((1, 2, 5, 5))).astype(np.float32),
        "mix": rng.standard_normal((3, 2, 1, 1)).astype(np.float32),
    }
    return model(nodes, [("x", FLOAT, [1, 2, 5, 5])], [("y", FLOAT, [1, 3, 1, 1])], weights)


def _save_external(proto: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "model.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # saving moves the weights out of the proto it is given
    onnx.save_model(
        copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0
    )
    return path


@pytest.mark.parametrize("verify", [None, False])
def test_a_mapped_model_gets_the_figure_and_checks_of_the_model_read_whole(tmp_path: Path, verify) -> None:
    proto = _ceil_mode_pool_with_weights()
    path = _save_external(proto, tmp_path)
    truth = max_fd_jacobian_norm(runtime_function(proto), [1, 2, 5, 5], eps=1e-2)
    whole = audit(str(path), verify=verify).to_dict()
    mapped = audit(str(path), verify=verify, in_memory_limit=0).to_dict()
    assert any("memory-mapped" in notice for notice in mapped["notices"])
    for report in (whole, mapped):
        network = report["network"]
        assert network["certified"] and network["upper_bound"] >= truth * (1 - FD_SLACK), network
    assert mapped["network"]["upper_bound"] == whole["network"]["upper_bound"]
    assert mapped["network"]["certified"] == whole["network"]["certified"]
    assert mapped["verification"]["checked"] == whole["verification"]["checked"] == (verify is None)
    assert [layer["output_shape"] for layer in mapped["layers"]] == [layer["output_shape"] for layer in whole["layers"]]


def test_the_node_by_node_probe_sees_what_one_run_sees(tmp_path: Path) -> None:
    path = _save_external(_ceil_mode_pool_with_weights(), tmp_path)
    whole, mapped = load_model(path), load_model(path, map_external_data=True)
    assert mapped.probe is not None and whole.probe is not None
    assert mapped.probe.values.keys() == whole.probe.values.keys()
    for name, array in whole.probe.values.items():
        np.testing.assert_array_equal(mapped.probe.values[name], array)
    assert mapped.graph.shape("p") == whole.graph.shape("p") == (1, 2, 3, 3)


def test_a_mapped_model_is_sound_against_the_runtime(tmp_path: Path) -> None:
    proto = _ceil_mode_pool_with_weights()
    truth = max_fd_jacobian_norm(runtime_function(proto), [1, 2, 5, 5], eps=1e-2)
    outcome_path = _save_external(proto, tmp_path)
    from tests.soundness._oracle import run_audit

    assert_sound(run_audit(outcome_path, tmp_path, in_memory_limit=0, verify=False), truth, slack=FD_SLACK)
