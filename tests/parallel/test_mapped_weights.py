"""Models larger than memory: external data memory-mapped, each layer's weights opened only by the
job that measures it, the runtime probed one node at a time: the same checks and bound as a model
read whole."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.errors import ModelLoadError
from lipaudit.load import load_model
from lipaudit.load.onnx import external_data_bytes
from lipaudit.load.onnx_graph import ExternalData
from lipaudit.ops import RuleContext
from lipaudit.parallel.layers import layer_job, measured_nodes
from lipaudit.parallel.local import ProcessExecutor
from lipaudit.parallel.mapped import ExternalSlice, MappedTensor
from lipaudit.passes import run_passes
from lipaudit.pipeline import audit

runner = CliRunner()


def _conv_mlp(seed: int = 0, nan_in: str | None = None) -> onnx.ModelProto:
    """Conv → Relu → AveragePool → Flatten → Gemm → Relu → Gemm, weights big enough to matter."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv.w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) / 5,
        "conv.b": rng.standard_normal(8).astype(np.float32),
        "fc1.w": rng.standard_normal((256, 8 * 4 * 4)).astype(np.float32) / 10,
        "fc1.b": rng.standard_normal(256).astype(np.float32),
        "fc2.w": rng.standard_normal((10, 256)).astype(np.float32) / 10,
    }
    if nan_in is not None:
        weights[nan_in].flat[3] = np.nan
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["hr"], name="relu2"),
        helper.make_node("Gemm", ["hr", "fc2.w"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save_external(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory) -> Path:
    return _save_external(_conv_mlp(), tmp_path_factory.mktemp("external"))


def _mapped_load(path: Path):
    return load_model(path, probe=False, map_external_data=True)


def test_external_data_is_mapped_and_reads_as_the_loaded_weights(on_disk: Path) -> None:
    mapped, loaded = _mapped_load(on_disk), load_model(on_disk)
    weight = mapped.graph.const("fc1.w")
    assert isinstance(weight, MappedTensor) and not weight.flags.writeable
    assert weight.slice == ExternalSlice(
        str((on_disk.parent / "weights.bin").resolve()), weight.slice.offset, "float32", (256, 128)
    )
    for name in ("conv.w", "conv.b", "fc1.w", "fc1.b", "fc2.w"):
        np.testing.assert_array_equal(mapped.graph.const(name), loaded.graph.const(name))
        np.testing.assert_array_equal(mapped.graph.const(name).slice.open(), loaded.graph.const(name))
    # A view or a result computed from a mapped weight is not its file slice.
    assert (weight.T * 2).slice is None and weight[:3].slice is None
    assert external_data_bytes(on_disk) == sum(
        loaded.graph.const(n).nbytes for n in ("conv.w", "conv.b", "fc1.w", "fc1.b", "fc2.w")
    )


def test_layer_jobs_carry_file_slices_not_weights(on_disk: Path) -> None:
    graph = run_passes(_mapped_load(on_disk).graph)
    ctx = RuleContext(graph)
    nodes = measured_nodes(graph)
    assert [node.name for node in nodes] == ["conv", "pool", "fc1", "fc2"]
    job = layer_job(graph, ctx, nodes[2], "model")
    assert all(isinstance(value, ExternalSlice) for value in job.shared.values())
    assert len(pickle.dumps(job)) < 4096 < graph.const("fc1.w").nbytes


def test_a_model_on_disk_gets_the_bound_of_the_model_read_whole(on_disk: Path) -> None:
    whole = audit(str(on_disk))
    assert whole.verification.checked
    for executor in (None, ProcessExecutor(2)):
        on_disk_report = audit(str(on_disk), in_memory_limit=0, lower_bound=True, executor=executor)
        if executor is not None:
            executor.close()
        assert on_disk_report.layers == whole.layers  # everything but the seconds each took
        # The same checks as the model read whole (probed one node at a time), so the same figure.
        assert on_disk_report.upper_bound == whole.upper_bound and on_disk_report.network.certified
        assert on_disk_report.network.method == whole.network.method
        assert on_disk_report.verification.checked
        assert on_disk_report.lower_bound is not None
        notices = " | ".join(on_disk_report.notices)
        assert "weights memory-mapped and read one layer at a time" in notices


def test_nan_in_external_data_is_found_without_loading_it(tmp_path: Path) -> None:
    path = _save_external(_conv_mlp(nan_in="fc1.w"), tmp_path)
    with pytest.raises(ModelLoadError, match="'fc1.w' holds NaN or Inf"):
        _mapped_load(path)


def test_a_minus_infinity_mask_in_external_data_is_a_mask_on_disk_too(tmp_path: Path) -> None:
    """−∞ added before a softmax is an attention mask whether the weights are read whole or mapped
    (the mapped path used to stop at its first non-finite entry)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((1, 8), np.float32)
    mask[0, [3, 5]] = -np.inf
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "mask"], ["s"]),
        helper.make_node("Softmax", ["s"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "masked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "W"),
            numpy_helper.from_array(mask, "mask"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = _save_external(proto, tmp_path)
    whole = audit(str(path))
    mapped = audit(str(path), in_memory_limit=0)
    assert whole.network.certified and mapped.network.certified
    assert mapped.upper_bound == whole.upper_bound


def test_external_data_outside_the_model_folder_or_too_short_is_refused(tmp_path: Path) -> None:
    path = _save_external(_conv_mlp(), tmp_path / "model")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../outside.bin"
    (tmp_path / "outside.bin").write_bytes((tmp_path / "model" / "weights.bin").read_bytes())
    onnx.save_model(model, str(tmp_path / "model" / "escape.onnx"))
    with pytest.raises(ModelLoadError):
        _mapped_load(tmp_path / "model" / "escape.onnx")
    data = tmp_path / "model" / "weights.bin"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="too short"):
        _mapped_load(path)


def test_element_types_numpy_cannot_map_are_read_into_memory(tmp_path: Path) -> None:
    values = np.array([1.5, -2.0, 3.25, 0.0], dtype=np.float32)
    bfloat16_bytes = (values.view(np.uint32) >> 16).astype("<u2").tobytes()  # exact: these need no rounding
    tensor = helper.make_tensor("w", TensorProto.BFLOAT16, [4], bfloat16_bytes, raw=True)
    model = helper.make_model(helper.make_graph([], "g", [], [], [tensor]))
    onnx.save_model(
        model, str(tmp_path / "bf16.onnx"), save_as_external_data=True, location="bf16.bin", size_threshold=0
    )
    stored = onnx.load(str(tmp_path / "bf16.onnx"), load_external_data=False).graph.initializer[0]
    array = ExternalData(tmp_path).array(stored, "initializer")
    assert not isinstance(array, MappedTensor)
    np.testing.assert_array_equal(array.astype(np.float32), values)


def test_in_memory_limit_on_the_command_line(on_disk: Path) -> None:
    result = runner.invoke(app, ["check", str(on_disk), "--in-memory-limit", "1KiB", "--color", "never"])
    assert result.exit_code == 0, result.output
    assert "weights memory-mapped and read one layer at a time" in result.stderr
    result = runner.invoke(app, ["check", str(on_disk), "--in-memory-limit", "lots"])
    assert result.exit_code == 2 and "--in-memory-limit" in result.stderr
