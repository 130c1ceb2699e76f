"""Every family of the zoo through every export path a user takes gives the same verdict (exit
code) and, where the graphs are the same after the passes, the same figure (issue 22).

Figures are compared with ``bound="product"``, which is quicker; the recursion's twins are compared
in tests/tight/test_reproducible.py (its work budget makes it as deterministic). Attention is one op
on every path: the torch loaders keep scaled_dot_product_attention whole, and the passes fuse the
MatMul/Softmax/MatMul both ONNX exporters write (lipaudit/passes/fuse_attention.py), so the
attention families' figures on a box agree too.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch

from lipaudit import audit
from tests.zoo.models import FAMILIES, TORCH_ONLY, build

HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
TORCH_PATHS = ("traced", "scripted", "export")
NEEDS_DOMAIN = {
    "encoder",
    "causal_encoder",
    "masked_mha",
    "padded_mha",
    "mha",
    "vit",
    "squeeze_excite",
}  # not globally Lipschitz: exit 3 without a box, finite on one
BOX = ["-1:1"]


def save(kind: str, model: torch.nn.Module, shape: tuple[int, ...], folder: Path) -> Path:
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    suffix = {"export": ".pt2", "traced": ".pt", "scripted": ".pt"}.get(kind, ".onnx")
    path = folder / f"{kind}{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "onnx":
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17)
        elif kind == "onnx-dynamo":
            torch.onnx.export(model, (example,), str(path), dynamo=True)
        elif kind == "onnx-dynamo-23":  # Attention with its mask as an input, RMSNormalization
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=23)
        elif kind == "traced":
            # check_trace re-runs under no_grad, where nn.MultiheadAttention takes another path.
            torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(path))
        elif kind == "scripted":
            torch.jit.save(torch.jit.script(model), str(path))
        else:
            torch.export.save(torch.export.export(model, (example,)), str(path))
    return path


def _audit(family: str, kind: str, folder: Path, input_range=None):
    model, shape = build(family)
    path = save(kind, model, shape, folder)
    flag = ["x".join(map(str, shape))] if kind == "scripted" else None
    return audit(str(path), input_shape=flag, bound="product", input_range=input_range)


def _same(figures: list[float | None]) -> bool:
    known = [f for f in figures if f is not None]
    return len(known) == len(figures) and all(math.isclose(f, known[0], rel_tol=1e-4) for f in known)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_torch_paths_and_the_legacy_onnx_export_agree(family: str, tmp_path: Path) -> None:
    box = BOX if family in NEEDS_DOMAIN else None
    torch_reports = [_audit(family, kind, tmp_path, box) for kind in TORCH_PATHS]
    codes = {report.exit_code() for report in torch_reports}
    assert codes == {0}, [(r.model.path, r.exit_code(), r.network.unsupported) for r in torch_reports]
    assert _same([r.upper_bound for r in torch_reports]), [r.upper_bound for r in torch_reports]
    if family in NEEDS_DOMAIN:  # without the box: unbounded, with the reason, on every path
        assert _audit(family, "export", tmp_path).exit_code() == 3
    onnx_report = _audit(family, "onnx", tmp_path, box)
    assert onnx_report.exit_code() == 0, onnx_report.network.unsupported
    assert _same([onnx_report.upper_bound, torch_reports[0].upper_bound])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="torch.onnx.export(dynamo=True) needs onnxscript, not installed")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dynamo_onnx_export_agrees(family: str, tmp_path: Path) -> None:
    box = BOX if family in NEEDS_DOMAIN else None
    dynamo = _audit(family, "onnx-dynamo", tmp_path, box)
    exported = _audit(family, "export", tmp_path, box)
    assert dynamo.exit_code() == exported.exit_code() == 0
    assert _same([dynamo.upper_bound, exported.upper_bound])


# opset 23 writes attention as one Attention op whose −∞ mask is an input (it was read as corrupt
# weights); masked_mha is in the quick suite, every family in the slow one.
@pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="torch.onnx.export(dynamo=True) needs onnxscript, not installed")
@pytest.mark.parametrize(
    "family", [f if f == "masked_mha" else pytest.param(f, marks=pytest.mark.slow) for f in sorted(FAMILIES)]
)
def test_the_opset_23_dynamo_export_agrees(family: str, tmp_path: Path) -> None:
    box = BOX if family in NEEDS_DOMAIN else None
    dynamo = _audit(family, "onnx-dynamo-23", tmp_path, box)
    exported = _audit(family, "export", tmp_path, box)
    assert dynamo.exit_code() == exported.exit_code() == 0, dynamo.network.unsupported
    assert _same([dynamo.upper_bound, exported.upper_bound])


@pytest.mark.parametrize("family", sorted(TORCH_ONLY))
def test_torch_paths_agree_where_the_onnx_exporters_write_another_graph(family: str, tmp_path: Path) -> None:
    reports = [_audit(family, kind, tmp_path) for kind in TORCH_PATHS]
    assert {report.exit_code() for report in reports} == {0}, [r.network.unsupported for r in reports]
    assert _same([r.upper_bound for r in reports]), [r.upper_bound for r in reports]
    if HAS_ONNXSCRIPT:
        assert _audit(family, "onnx-dynamo", tmp_path).exit_code() == 0
