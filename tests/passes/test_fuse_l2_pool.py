"""ℓ2-norm pooling as exporters spell it (square → average pool → affine/clamp → root) fuses into one
L2Pool whose factor the Jacobian reaches; forms that are not norms stay as their pieces.

Truth: the Jacobian of the torch function itself, at random points and at a point with one large
entry over a faint background (where every window holding that entry pulls it at once: the
worst case of the rule's sum over windows).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipaudit import audit
from lipaudit.compose import FLOAT32_MARGIN
from lipaudit.ir import Graph, Node, Value
from lipaudit.passes import FuseL2Pool
from tests.passes._export import export, jacobian_norms, random_points

SHAPE = (1, 2, 6, 6)


def lp_pool(x):  # torch's LPPool2d(2, 2): Pow → AveragePool → Sign·Relu(Abs) → Mul(4) → Pow(0.5)
    return F.lp_pool2d(x, 2, 2)


def lp_pool_overlapping(x):
    return F.lp_pool2d(x, 2, 3, stride=1)


def scaled_with_epsilon(x):  # deel-torchlip-style sqrt(mean(x²) + ε), then a scale
    return torch.sqrt(F.avg_pool2d(x * x, 2) + 1e-6) * 2.0


def rms_padded(x):  # border windows average fewer entries
    return torch.sqrt(F.avg_pool2d(torch.square(x), 3, 1, 1, count_include_pad=False))


def global_rms(x):
    return torch.sqrt(F.adaptive_avg_pool2d(x * x, 1))


def global_mean_of_squares(x):
    return x.pow(2).mean(dim=(2, 3), keepdim=True).add(1e-5).sqrt()


def clamped(x):
    return torch.sqrt(torch.clamp(F.avg_pool2d(x * x, 4, ceil_mode=True) * 4.0, min=1e-6))


FORMS = {
    "lp_pool": lp_pool,
    "lp_pool-overlapping": lp_pool_overlapping,
    "epsilon": scaled_with_epsilon,
    "rms-padded": rms_padded,
    "global": global_rms,
    "reduce-mean": global_mean_of_squares,
    "clamped": clamped,
}


def _spikes() -> list[torch.Tensor]:
    """One large entry over a faint background, on the diagonal (the worst entry depends on the form)."""
    points = []
    for i in range(SHAPE[2]):
        x = torch.full(SHAPE, 1e-4, dtype=torch.float64)
        x[0, 0, i, i] = 1.0
        points.append(x)
    return points


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", sorted(FORMS))
def test_exported_l2_pools_fuse_and_reach_their_bound(tmp_path: Path, name: str, kind: str) -> None:
    fn = FORMS[name]
    path, shapes = export(fn, SHAPE, tmp_path, kind)
    report = audit(str(path), input_shape=shapes)
    ops = [layer.op for layer in report.layers]
    assert ops.count("L2Pool") == 1, ops
    assert not {"Sqrt", "Pow", "AveragePool", "GlobalAveragePool", "ReduceMean", "Sign"} & set(ops), ops
    assert report.verification.checked, report.verification.reason
    assert report.network.certified and report.network.complete
    truth = jacobian_norms(fn, random_points(SHAPE, 3) + _spikes())
    bound = report.network.upper_bound
    assert bound >= truth
    # Each factor carries the float32 margin; the windows' sum is reached at the spike.
    assert bound <= truth * (1 + 1e-5) + 4 * FLOAT32_MARGIN, (bound, truth)


def test_torch_lp_pool_is_exactly_one(tmp_path: Path) -> None:
    path, _ = export(lp_pool, SHAPE, tmp_path)
    layer = next(layer for layer in audit(str(path)).layers if layer.op == "L2Pool")
    assert layer.factor == pytest.approx(1.0, abs=2 * FLOAT32_MARGIN)


def test_border_windows_with_fewer_entries_weigh_more(tmp_path: Path) -> None:
    """3×3, stride 1, pad 1, count_include_pad=0 on 6×6: entry (1, 1) is in windows of 4, 6 (×4) and
    9 (×4) entries, Σ 1/n = 1/4 + 4/6 + 4/9: the factor is its square root, above 1."""
    path, _ = export(rms_padded, SHAPE, tmp_path)
    layer = next(layer for layer in audit(str(path)).layers if layer.op == "L2Pool")
    expected = math.sqrt(1 / 4 + 4 / 6 + 4 / 9)
    assert layer.factor == pytest.approx(expected, rel=2 * FLOAT32_MARGIN)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: torch.sqrt(F.avg_pool2d(x * x, 2) - 1e-3),  # a negative offset: the slope exceeds the norm's
        lambda x: torch.sqrt(F.avg_pool2d(x.pow(3).abs(), 2)),  # not a square
        lambda x: torch.sqrt(F.avg_pool2d(x.abs(), 2)),  # no square at all
    ],
    ids=["negative-offset", "cube", "no-square"],
)
def test_roots_of_other_pools_are_not_fused(tmp_path: Path, fn) -> None:
    path, _ = export(fn, SHAPE, tmp_path)
    report = audit(str(path))
    assert "L2Pool" not in [layer.op for layer in report.layers]
    assert report.network.upper_bound is None  # the pieces have no global bound


def _pool_graph(outputs: list[str]) -> Graph:
    nodes = [
        Node("square", "Mul", ["x", "x"], ["s"]),
        Node("pool", "AveragePool", ["s"], ["m"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
        Node("root", "Sqrt", ["m"], ["y"]),
    ]
    values = {
        "x": Value("x", (1, 1, 4, 4)),
        "s": Value("s", (1, 1, 4, 4)),
        "m": Value("m", (1, 1, 2, 2)),
        "y": Value("y", (1, 1, 2, 2)),
    }
    return Graph(nodes, values, ["x"], outputs, opset=17)


def test_a_pooled_value_read_elsewhere_blocks_the_fusion() -> None:
    graph = _pool_graph(["y", "m"])
    assert not FuseL2Pool().run(graph)


def test_a_square_read_elsewhere_stays_for_its_other_reader() -> None:
    graph = _pool_graph(["y", "s"])
    assert FuseL2Pool().run(graph)
    graph.check_links()
    assert graph.producer("s").op_type == "Mul"
    fused = graph.producer("y")
    assert (fused.op_type, fused.inputs, fused.attrs["scale"], fused.attrs["bias"]) == ("L2Pool", ("x",), 1.0, 0.0)
    assert np.isclose(fused.attrs["scale"], 1.0)
