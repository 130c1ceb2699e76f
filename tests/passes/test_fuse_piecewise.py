"""Activations the ONNX exporters spell out in pieces get the figure of the one op TorchScript and
torch.export write, on the whole space and on a box (where the switching bound must see every value
a rewrite leaves computed): softshrink (legacy nested Wheres, dynamo's Where of |x| > λ),
log-sigmoid (Log(Sigmoid(x)) = −Softplus(−x)) and chains of clamps (one Clip, as dynamo merges
them).  Every path gives one verdict and one figure, never below torch's own Jacobians."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit
from tests.passes._export import export, jacobian_norms, random_points


class _Clamps(nn.Module):
    def forward(self, x):
        return nn.functional.hardtanh(torch.clamp(x, min=0.2), -0.3, 0.3)


ACTIVATIONS = {
    "softshrink": lambda: nn.Softshrink(0.3),
    "log-sigmoid": lambda: nn.LogSigmoid(),
    "clamps": _Clamps,
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), ACTIVATIONS[name](), nn.Linear(8, 3)).eval()


def _dynamo(model: nn.Module, folder: Path) -> Path:
    path = folder / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 6),), str(path), dynamo=True)
    return path


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_export_of_the_activation_gets_one_figure(tmp_path: Path, name: str) -> None:
    model = _model(name)
    figures = {}
    for kind in ("onnx", "torchscript"):
        folder = tmp_path / kind
        folder.mkdir()
        path, shape = export(model, (1, 6), folder, kind)
        for box in (None, "-1:1"):
            report = audit(str(path), input_shape=shape or None, input_range=box)
            assert report.exit_code() == 0 and report.network.certified, report.notices
            figures[kind, box] = report.upper_bound
    if name != "log-sigmoid":
        pytest.importorskip("onnxscript")
        dynamo = _dynamo(model, tmp_path)
        figures["dynamo", None] = audit(str(dynamo)).upper_bound
        figures["dynamo", "-1:1"] = audit(str(dynamo), input_range="-1:1").upper_bound
    for box in (None, "-1:1"):
        assert len({figure for (_, scope), figure in figures.items() if scope == box}) == 1, figures
    truth = jacobian_norms(model.double(), random_points((1, 6), count=20))
    assert truth <= figures["onnx", None]


def test_max_and_min_with_a_constant_get_the_clips_figure(tmp_path: Path) -> None:
    """Relu as Max(x, 0) and Relu6 as Min(Max(x, 0), 6) are Clips: the recursion then reads their
    slopes in [0, 1] (redteam17: 13.9 where Relu got 10.49, with the same truth)."""
    import numpy as np
    from onnx import helper

    from tests.builders import graph_model, save

    rng = np.random.default_rng(13)
    weights = {"a": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal((6, 3)).astype(np.float32)}
    zero, six = {"zero": np.array(0.0, np.float32)}, {"six": np.array(6.0, np.float32)}
    spellings = {
        "Relu": ([helper.make_node("Relu", ["c"], ["h"])], {}),
        "Max": ([helper.make_node("Max", ["zero", "c"], ["h"])], zero),
        "Clip": ([helper.make_node("Clip", ["c", "zero", "six"], ["h"])], {**zero, **six}),
        "MinMax": (
            [helper.make_node("Max", ["c", "zero"], ["m"]), helper.make_node("Min", ["m", "six"], ["h"])],
            {**zero, **six},
        ),
    }
    figures = {}
    for name, (middle, constants) in spellings.items():
        nodes = [helper.make_node("MatMul", ["x", "a"], ["c"]), *middle, helper.make_node("MatMul", ["h", "b"], ["y"])]
        path = save(graph_model(nodes, (1, 4), {**weights, **constants}, opset=13), tmp_path, f"{name}.onnx")
        figures[name] = audit(path).upper_bound
    assert len(set(figures.values())) == 1, figures
