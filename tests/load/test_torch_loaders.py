"""TorchScript and torch.export files: the same IR, so the same bound, as the ONNX export of the network."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lipaudit import audit
from lipaudit.cli.app import app
from lipaudit.errors import InputShapeError, ModelLoadError
from lipaudit.load import load_model
from tests.jacobians import max_jacobian_norm
from tests.load import torch_nets
from tests.load.torch_nets import NETWORKS, build, save_as

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TORCH_FORMATS = ("traced", "scripted", "export")
ONNX_FORMATS = ("onnx", "onnx-nofold", "onnx-dynamo")
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
runner = CliRunner()


def _shape_flag(shape: tuple[int, ...]) -> list[str]:
    return ["x".join(map(str, shape))]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory):
    """Audit each network once per format (exports are the slow part, so share them)."""
    cache: dict[tuple[str, str], object] = {}

    def get(network: str, kind: str):
        if (network, kind) not in cache:
            if kind == "onnx-dynamo" and not HAS_ONNXSCRIPT:
                pytest.skip("torch.onnx.export(dynamo=True) needs onnxscript, which is not installed")
            model, shape = build(network)
            suffix = {"export": ".pt2"}.get(kind, ".onnx" if kind.startswith("onnx") else ".pt")
            path = save_as(kind, model, shape, tmp_path_factory.mktemp(network) / f"{kind}{suffix}")
            # A scripted module does not record its input shape; the others must not need the flag.
            cache[network, kind] = audit(str(path), input_shape=_shape_flag(shape) if kind == "scripted" else None)
        return cache[network, kind]

    return get


def _linear_factors(report) -> list[float]:
    return sorted(layer.factor for layer in report.layers if layer.op in LINEAR_OPS)


@pytest.mark.parametrize("kind", TORCH_FORMATS + ONNX_FORMATS[1:])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_format_gives_the_bound_of_the_onnx_export(reports, network: str, kind: str) -> None:
    reference, report = reports(network, "onnx"), reports(network, kind)
    assert report.network.complete and report.network.certified, report.network
    assert report.upper_bound == pytest.approx(reference.upper_bound, rel=1e-6)
    assert _linear_factors(report) == pytest.approx(_linear_factors(reference), rel=1e-6)
    assert not [layer for layer in report.layers if layer.op == "BatchNormalization"]


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_torch_formats_name_layers_by_module_path(reports, network: str) -> None:
    names = {kind: [(layer.name, layer.op) for layer in reports(network, kind).layers] for kind in TORCH_FORMATS}
    assert names["traced"] == names["scripted"] == names["export"]
    if network == "cnn":
        conv1 = dict(names["traced"])["layer1.0.conv1"]
        assert conv1 == "Conv"
        notes = next(layer.notes for layer in reports(network, "export").layers if layer.name == "layer1.0.conv1")
        assert any("folded" in note for note in notes)


def test_torch_formats_agree_where_onnx_export_struggles(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, shape = torch_nets.Zoo().eval(), (1, 2, 16)
    reports = {}
    for kind in TORCH_FORMATS:
        path = save_as(kind, model, shape, tmp_path / f"zoo_{kind}.pt")
        reports[kind] = audit(str(path), input_shape=_shape_flag(shape) if kind == "scripted" else None)
    for kind, report in reports.items():
        assert report.network.complete and report.network.certified, (kind, report.network)
        assert report.upper_bound == pytest.approx(reports["traced"].upper_bound, rel=1e-9), kind
    ops = {layer.op for layer in reports["export"].layers}
    assert {"Pad", "Conv", "Resize", "DepthToSpace", "Shrink", "Selu", "Elu", "HardSigmoid", "AveragePool"} <= ops
    assert reports["traced"].upper_bound >= max_jacobian_norm(model, shape, samples=4, seed=11) * (1 - 1e-9)


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_torch_bounds_are_above_the_jacobian(reports, network: str) -> None:
    model, shape = build(network)
    lower = max_jacobian_norm(model, shape, samples=4, seed=11)
    for kind in TORCH_FORMATS:
        assert reports(network, kind).upper_bound >= lower * (1 - 1e-9), kind


@pytest.mark.parametrize("kind", ["traced", "export"])
def test_loaded_model_keeps_the_runnable_torch_module(tmp_path: Path, kind: str) -> None:
    model, shape = build("decoder")
    path = save_as(kind, model, shape, tmp_path / ("m.pt2" if kind == "export" else "m.pt"))
    loaded = load_model(path)
    assert loaded.format == {"traced": "torchscript", "export": "torch.export"}[kind]
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(loaded.source(x), model(x), atol=1e-6)
    assert loaded.graph.shape(loaded.graph.inputs[0]) == shape


def test_traced_shape_is_recorded_and_checked(tmp_path: Path) -> None:
    model, shape = build("decoder")
    path = save_as("traced", model, shape, tmp_path / "m.pt")
    assert audit(str(path)).model.to_dict()["inputs"] == [{"name": "x", "shape": list(shape)}]
    with pytest.raises(InputShapeError, match="does not match"):
        audit(str(path), input_shape=["1x2x16x16"])


def test_scripted_module_asks_for_an_input_shape(tmp_path: Path) -> None:
    model, shape = build("mlp")
    path = save_as("scripted", model, shape, tmp_path / "m.pt")
    with pytest.raises(InputShapeError, match="no recorded shape") as error:
        audit(str(path))
    assert "--input-shape x=" in error.value.hint
    assert audit(str(path), input_shape=["x=4x6"]).model.to_dict()["inputs"] == [{"name": "x", "shape": [4, 6]}]


def test_dynamic_export_takes_the_input_shape(tmp_path: Path) -> None:
    model, _ = build("decoder")
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 2, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "dyn.pt2"))
    with pytest.raises(InputShapeError, match="dynamic"):
        audit(str(tmp_path / "dyn.pt2"))
    report = audit(str(tmp_path / "dyn.pt2"), input_shape=["3x2x8x8"])
    assert report.model.inputs[0].shape == [3, 2, 8, 8]
    assert report.network.complete


class _Cumulative(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(torch.cumprod(x, dim=1))


@pytest.mark.parametrize("kind", ["traced", "export"])
def test_unmapped_aten_op_is_reported_not_dropped(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("m.pt2" if kind == "export" else "m.pt")
    save_as(kind, _Cumulative().eval(), (1, 4), path)
    report = audit(str(path))
    assert [b.op for b in report.network.unsupported] == ["aten::cumprod"]
    assert report.network.upper_bound is None and not report.network.complete


class _ValueBranch(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x * 2
        return x


class _ViewWrite(nn.Module):
    def forward(self, x):
        h = x * 2
        h[:, :2].mul_(3)  # writes into h through a view
        return h


@pytest.mark.parametrize("kind", TORCH_FORMATS)
def test_in_place_write_through_a_view_is_refused(tmp_path: Path, kind: str) -> None:
    path = save_as(kind, _ViewWrite(), (1, 4), tmp_path / "m.pt")
    with pytest.raises(ModelLoadError, match="in-place write through a view"):
        audit(str(path), input_shape=["1x4"] if kind == "scripted" else None)


def test_control_flow_on_input_values_is_unsupported_with_the_reason(tmp_path: Path) -> None:
    """As for the ONNX export of the same module (an If on a computed condition): exit 3, with why."""
    path = save_as("scripted", _ValueBranch(), (1, 3), tmp_path / "m.pt")
    report = audit(str(path), input_shape=["1x3"])
    assert report.exit_code() == 3 and report.upper_bound is None
    notes = [note for layer in report.layers for note in layer.notes]
    assert any("turns the input's values into a Python value" in note for note in notes)


def test_torch_jit_warnings_stay_quiet(tmp_path: Path) -> None:
    model, shape = build("mlp")
    path = save_as("traced", model, shape, tmp_path / "m.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(path)
    assert not caught, [str(w.message) for w in caught]
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "deprecated" not in result.stderr


def _refusal(path: Path) -> str:
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    return result.stderr


def test_pickled_module_is_refused_without_unpickling(tmp_path: Path) -> None:
    model, _ = build("mlp")
    torch.save(model, tmp_path / "model.pt")
    message = _refusal(tmp_path / "model.pt")
    assert "pickled" in message and "torch.jit.save" in message and "torch.export" in message


def test_state_dict_is_refused(tmp_path: Path) -> None:
    model, _ = build("mlp")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    message = _refusal(tmp_path / "weights.pt")
    assert "state_dict" in message and "no graph" in message


def test_random_bytes_and_truncated_archives_are_refused(tmp_path: Path) -> None:
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a model file" in _refusal(tmp_path / "noise.pt")
    model, shape = build("mlp")
    for kind, name in (("traced", "ts.pt"), ("export", "ep.pt2")):
        data = save_as(kind, model, shape, tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        assert "damaged" in _refusal(tmp_path / name) or "not a readable" in _refusal(tmp_path / name)


def test_legacy_pickle_and_foreign_zip_are_refused(tmp_path: Path) -> None:
    model, _ = build("mlp")
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert "never unpickles" in _refusal(tmp_path / "legacy.pt")
    with zipfile.ZipFile(tmp_path / "other.pt", "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "not one written by" in _refusal(tmp_path / "other.pt")


def test_refusing_a_pickle_runs_none_of_its_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    buffer = io.BytesIO()
    torch.save({"model": Payload()}, buffer, pickle_module=pickle)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    _refusal(tmp_path / "evil.pt")
    assert not marker.exists()


def test_torchscript_sample_is_complete_and_certified() -> None:
    sample = Path(__file__).resolve().parents[2] / "sample_models" / "cnn_torchscript.pt"
    report = audit(str(sample))
    assert report.model.format == "torchscript"
    assert report.model.to_dict()["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32]}]  # nn.Sequential's argument
    assert report.network.complete and report.network.certified


def test_float_attributes_are_read_as_an_onnx_file_stores_them(tmp_path: Path) -> None:
    """ONNX keeps attribute floats in float32: the torch loaders do too, so a LeakyReLU's slope 0.2 is
    the same number on every path and the twins' graphs (and figures) are the same."""
    model, shape = build("mlp")
    slopes = {}
    for kind, suffix in (("onnx", ".onnx"), ("export", ".pt2"), ("traced", ".pt")):
        graph = load_model(save_as(kind, model, shape, tmp_path / f"m{suffix}")).graph
        slopes[kind] = [node.attrs["alpha"] for node in graph.nodes if node.op_type == "LeakyRelu"]
    assert slopes["onnx"] == slopes["export"] == slopes["traced"] == [float(np.float32(0.2))]


class _Embedded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table, self.head = nn.Embedding(10, 4), nn.Linear(4, 2)

    def forward(self, tokens):
        return self.head(self.table(tokens))


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_integer_tokens_of_a_scripted_module_get_the_verdict_of_its_other_forms(tmp_path: Path, kind: str) -> None:
    """torch.jit.script keeps no dtype for its inputs: one that an embedding reads as indices is an
    integer tensor, and the model gets the verdict of its traced and ONNX forms (an embedding lookup
    jumps between rows) instead of a probe error that blamed --input-shape."""
    torch.manual_seed(0)
    module = _Embedded().eval()
    tokens = torch.tensor([[1, 3, 7]])
    saved = torch.jit.script(module) if kind == "script" else torch.jit.trace(module, tokens)
    path = tmp_path / f"{kind}.pt"
    torch.jit.save(saved, str(path))
    report = audit(str(path), input_shape="1x3")
    assert report.exit_code() == 3 and report.upper_bound is None
    assert any("Gather with variable indices" in (layer.reason or "") for layer in report.layers)


class _ScaledConv(nn.Module):
    """1.7·conv(x): a traced 1.7 is a float64 0-dim constant, which torch uses as float32(1.7)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        return 1.7 * self.conv(x)


def test_a_python_float_scale_is_read_as_the_float32_torch_computes_with(tmp_path: Path) -> None:
    """The traced figure was 2.8e-8 below the ONNX and .pt2 twins' (the float64 1.7, not float32's)."""
    net = _ScaledConv().eval()
    figures = {
        kind: audit(str(save_as(kind, net, (1, 2, 5, 5), tmp_path / f"m.{kind}{suffix}")), bound="product").upper_bound
        for kind, suffix in (("onnx", ".onnx"), ("traced", ".pt"), ("export", ".pt2"))
    }
    assert figures["traced"] == figures["onnx"] == figures["export"], figures


class _RandomScale(nn.Module):
    """Linear(x) · (10·rand): a fresh draw on every call, which loading had folded into one constant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 5)

    def forward(self, x):
        return self.linear(x) * (torch.rand(1, 5) * 10)


@pytest.mark.parametrize("kind, suffix", [("traced", ".pt"), ("export", ".pt2")])
def test_a_random_draw_is_never_folded_into_a_certified_constant(tmp_path: Path, kind: str, suffix: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_as(kind, _RandomScale().eval(), (1, 4), tmp_path / f"random{suffix}")
    report = audit(str(path), verify=False)
    assert report.upper_bound is None and not report.network.certified
    assert report.exit_code() == 3
