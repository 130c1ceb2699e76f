"""Shape-only subgraphs fold in every exporter's dialect (issue 22).

The legacy ONNX export (``dynamo=False``) of attention computes its reshape targets with
Shape → Slice → Concat chains of static shapes, and ONNX shape inference leaves the reshaped values
without a shape. Those chains must fold (their shapes depend on the input shapes alone) and the
values take the runtime's shapes, so the legacy export gets the dynamo export's verdict and figure.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit

TOKENS, WIDTH = 5, 16


class EncoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(WIDTH, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(WIDTH, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def _export(module: nn.Module, path: Path, dynamo: bool) -> Path:
    torch.manual_seed(0)
    example = (torch.randn(1, TOKENS, WIDTH),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, example, str(path), dynamo=True, verbose=False)
        else:
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=17)
    return path


def _verdict(report: dict) -> tuple:
    network = report["network"]
    return (
        network["upper_bound"],
        network["certified"],
        sorted(b["op"] for b in network["unsupported"]),
        sorted(b["op"] for b in network["unbounded"]),
    )


def test_the_legacy_export_of_an_encoder_layer_leaves_nothing_unsupported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = audit(str(_export(EncoderLayer().eval(), tmp_path / "legacy.onnx", dynamo=False))).to_dict()
    assert report["network"]["unsupported"] == [], report["network"]["unsupported"]
    assert sorted(b["op"] for b in report["network"]["unbounded"]) == ["Attention"]  # fused from q·kᵀ, softmax, p·v
    assert report["verification"]["checked"]


@pytest.mark.slow  # the dynamo exporter takes seconds per model
@pytest.mark.parametrize("family", ["encoder", "attention"])
def test_legacy_and_dynamo_exports_get_the_same_verdict_and_figure(tmp_path: Path, family: str) -> None:
    torch.manual_seed(1)
    module = (EncoderLayer() if family == "encoder" else SelfAttention()).eval()
    settings = {} if family == "encoder" else {"input_range": ["-1:1"]}
    verdicts = {}
    for kind in ("legacy", "dynamo"):
        path = _export(module, tmp_path / f"{kind}.onnx", kind == "dynamo")
        verdicts[kind] = _verdict(audit(str(path), **settings).to_dict())
    # The same verdict; the figure to 1e-5, as the two exporters lay out the heads with other
    # Reshape/Transpose chains around the one fused Attention op (its rounding differs).
    assert verdicts["legacy"][1:] == verdicts["dynamo"][1:]
    legacy, dynamo = verdicts["legacy"][0], verdicts["dynamo"][0]
    assert (legacy is None) == (dynamo is None)
    if legacy is not None:
        assert math.isclose(legacy, dynamo, rel_tol=1e-5), (legacy, dynamo)
    assert verdicts["legacy"][2] == []
    if settings:
        assert verdicts["legacy"][0] is not None and verdicts["legacy"][1], verdicts
