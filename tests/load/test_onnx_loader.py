"""ONNX conventions the loader must honour, checked through the bound they lead to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, version_converter

from lipaudit import audit
from lipaudit.compose import FLOAT32_MARGIN
from lipaudit.errors import InputShapeError, ModelLoadError
from lipaudit.load import load_model, sniff_format
from tests.builders import graph_model, operator_matrix, save, spectral_norm, tensor

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(6, 5)).astype(np.float32)
W2 = RNG.normal(size=(5, 3)).astype(np.float32)


def _mlp_nodes() -> list[onnx.NodeProto]:
    return [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]


def _expected() -> float:
    """The product of the two layers' norms, each with its float32 margin."""
    return spectral_norm(W1.astype(np.float64)) * spectral_norm(W2.astype(np.float64)) * (1 + FLOAT32_MARGIN) ** 2


def test_initializers_listed_as_graph_inputs(tmp_path: Path) -> None:
    model = graph_model(_mlp_nodes(), [1, 6], {"w1": W1, "w2": W2}, opset=8)
    for name, array in (("w1", W1), ("w2", W2)):
        model.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, array.shape))
    report = audit(str(save(model, tmp_path)))
    assert [i.name for i in report.model.inputs] == ["x"]
    assert report.network.product_bound == pytest.approx(_expected(), rel=1e-6)


def test_constant_nodes_carry_weights(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=tensor("w1", W1)),
        helper.make_node("Constant", [], ["w2"], value=tensor("w2", W2)),
    ] + _mlp_nodes()
    report = audit(str(save(graph_model(nodes, [1, 6], {}), tmp_path)))
    assert report.network.product_bound == pytest.approx(_expected(), rel=1e-6)


def test_external_data(tmp_path: Path) -> None:
    model = graph_model(_mlp_nodes(), [1, 6], {"w1": W1, "w2": W2})
    onnx.save(
        model,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.weights",
        size_threshold=0,
    )
    assert (tmp_path / "ext.weights").exists()
    assert audit(str(tmp_path / "ext.onnx")).network.product_bound == pytest.approx(_expected(), rel=1e-6)


def test_missing_external_data_is_a_load_error(tmp_path: Path) -> None:
    model = graph_model(_mlp_nodes(), [1, 6], {"w1": W1, "w2": W2})
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.weights", size_threshold=0)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(ModelLoadError):
        audit(str(tmp_path / "ext.onnx"))


def _external(tensor_proto: onnx.TensorProto, folder: Path, file: str, array: np.ndarray) -> None:
    """Point the tensor at ``file`` (relative to the model's folder) holding ``array``."""
    array.astype(np.float32).tofile(folder / file)
    tensor_proto.ClearField("raw_data")
    del tensor_proto.float_data[:]
    tensor_proto.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", file), ("offset", "0"), ("length", str(array.size * 4))):
        entry = tensor_proto.external_data.add()
        entry.key, entry.value = key, value


@pytest.mark.parametrize("in_memory_limit", [None, 1])
def test_external_data_of_sparse_and_subgraph_tensors_comes_from_the_models_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_limit: int | None
) -> None:
    """A sparse initializer's values and an If branch's weight, both in files next to the model;
    files of the same names, holding other numbers, in the current folder must not be read (onnx
    and onnxruntime resolve such names against the current folder by themselves)."""
    folder, elsewhere = tmp_path / "model", tmp_path / "cwd"
    folder.mkdir()
    elsewhere.mkdir()
    sparse_values = onnx.numpy_helper.from_array(W1.reshape(-1), "ws")
    _external(sparse_values, folder, "ws.bin", W1.reshape(-1))
    sparse = helper.make_sparse_tensor(
        sparse_values, onnx.numpy_helper.from_array(np.arange(30, dtype=np.int64)), [6, 5]
    )
    branch_weight = tensor("wb", W2)
    _external(branch_weight, folder, "wb.bin", W2)
    for name, array in (("ws.bin", W1 * 0.01), ("wb.bin", W2 * 0.01)):
        array.astype(np.float32).tofile(elsewhere / name)
    out = helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [1, 3])
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["r", "wb"], ["o"])], "then", [], [out], [branch_weight]
    )
    skip = helper.make_graph([helper.make_node("MatMul", ["r", "wb"], ["o"])], "else", [], [out], [tensor("wb", W2)])
    nodes = [
        helper.make_node("MatMul", ["x", "ws"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("If", ["yes"], ["y"], then_branch=then_branch, else_branch=skip),
    ]
    model = graph_model(nodes, [1, 6], {"yes": np.array(True)})
    model.graph.sparse_initializer.append(sparse)
    onnx.save(model, str(folder / "model.onnx"))
    monkeypatch.chdir(elsewhere)
    options = {} if in_memory_limit is None else {"in_memory_limit": in_memory_limit}
    report = audit(str(folder / "model.onnx"), **options)
    assert report.network.product_bound == pytest.approx(_expected(), rel=1e-6)


@pytest.mark.parametrize("opset", range(6, 22))
def test_opsets_six_to_twenty_one_give_the_same_bound(tmp_path: Path, opset: int) -> None:
    model = graph_model(_mlp_nodes(), [1, 6], {"w1": W1, "w2": W2}, opset=opset)
    assert audit(str(save(model, tmp_path))).network.product_bound == pytest.approx(_expected(), rel=1e-6)


def test_upgraded_model_gives_the_same_bound(tmp_path: Path) -> None:
    model = graph_model(_mlp_nodes(), [1, 6], {"w1": W1, "w2": W2}, opset=9)
    upgraded = version_converter.convert_version(model, 21)
    assert audit(str(save(upgraded, tmp_path))).network.product_bound == pytest.approx(_expected(), rel=1e-6)


def test_opset_six_gemm_with_broadcast(tmp_path: Path) -> None:
    bias = np.zeros(5, np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", broadcast=1, transB=1)
    model = graph_model([node], [1, 6], {"w": W1.T.copy(), "b": bias}, opset=6)
    for name, array in (("w", W1.T), ("b", bias)):
        model.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, array.shape))
    report = audit(str(save(model, tmp_path)))
    assert report.upper_bound == pytest.approx(spectral_norm(W1.astype(np.float64)), rel=1e-6)


def test_shape_arithmetic_is_folded_for_dynamic_batch(tmp_path: Path) -> None:
    """Exporters compute a Flatten as Reshape(x, Concat(Shape(x)[0], -1)); with the shape fixed it folds."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc"),
    ]
    weights = RNG.normal(size=(12, 4)).astype(np.float32)
    inits = {
        "zero": np.array(0, np.int64),
        "axes": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64),
        "w": weights,
    }
    model = graph_model(nodes, [2, 3, 4], inits, dynamic_input=["N", 3, 4])
    path = save(model, tmp_path)
    with pytest.raises(InputShapeError, match="'x'.*N"):
        audit(str(path))
    report = audit(str(path), input_shape=["x=2x3x4"])
    assert [layer.op for layer in report.layers] == ["Reshape", "MatMul"]
    assert report.upper_bound == pytest.approx(spectral_norm(weights.astype(np.float64)), rel=1e-6)


def test_format_is_sniffed_from_content_not_suffix(tmp_path: Path) -> None:
    model = graph_model(_mlp_nodes(), [1, 6], {"w1": W1, "w2": W2})
    path = save(model, tmp_path, "weights.bin")
    assert sniff_format(path.read_bytes()) == "onnx"
    assert load_model(path).format == "onnx"
    assert sniff_format(b"PK\x03\x04rest") == "zip"
    assert sniff_format(b"") == "empty"


def test_truth_matrix_agrees_for_a_folded_model(tmp_path: Path) -> None:
    model = graph_model(_mlp_nodes()[:1] + [helper.make_node("Identity", ["h"], ["y"])], [1, 6], {"w1": W1})
    truth = spectral_norm(operator_matrix(model, [1, 6]))
    assert audit(str(save(model, tmp_path))).upper_bound == pytest.approx(truth, rel=1e-5)


def test_model_local_functions_are_inlined(tmp_path: Path) -> None:
    """torch.onnx.export(export_modules_as_functions=…) writes each block as a FunctionProto call: it
    gets the figure of the same graph written out (redteam17: "no rule for Block", exit 3)."""
    weight = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    body = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Tanh", ["m"], ["b"])]
    block = helper.make_function("local", "Block", ["a", "w"], ["b"], body, opset_imports=[helper.make_opsetid("", 17)])
    called = graph_model(
        [helper.make_node("Block", ["x", "w"], ["y"], domain="local")], (1, 4), {"w": weight}, opset=17
    )
    called.opset_import.append(helper.make_opsetid("local", 1))
    called.functions.append(block)
    called = onnx.shape_inference.infer_shapes(called)  # the output's shape, through the function
    written_out = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Tanh", ["m"], ["y"])]
    written = graph_model(written_out, (1, 4), {"w": weight}, opset=17)
    figures = [audit(save(m, tmp_path, f"{i}.onnx")).upper_bound for i, m in enumerate((called, written))]
    assert figures[0] == figures[1] == pytest.approx(spectral_norm(weight), rel=1e-5)


def test_two_imports_of_the_default_domain_are_refused(tmp_path: Path) -> None:
    """The opset check read the first entry and the nodes the last (redteam17: [13, 5] passed as 13)."""
    model = graph_model([helper.make_node("Softmax", ["x"], ["y"])], (1, 2, 3), {}, opset=13)
    model.opset_import.append(helper.make_opsetid("", 5))
    with pytest.raises(ModelLoadError, match="opsets 5 and 13"):
        load_model(save(model, tmp_path))
