"""Value ranges on the box contain every value seen inside it: sampled points, corners, and points that
push single entries of intermediate values as high or as low as gradient ascent can."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn
from torch.nn import functional as F

from lipaudit.domain import value_ranges
from lipaudit.load import load_model
from tests.builders import save
from tests.domain._containment import assert_ranges_contain_seen
from tests.domain._models import SqueezeExcitation, TinyViT, analysed, export


class Elementwise(nn.Module):
    """An affine map of the box, then one branch per elementwise op, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.affine = nn.Linear(4, 6)
        self.other = nn.Linear(4, 6)

    def forward(self, x):
        u, v = self.affine(x), self.other(x)
        branches = [
            torch.exp(u),
            torch.log(F.softplus(u) + 0.1),
            torch.sqrt(torch.sigmoid(v)),
            1 / (1.5 + torch.tanh(u)),
            u**3,
            u**2,
            u.abs(),
            F.silu(u),
            F.mish(v),
            F.elu(u),
            F.leaky_relu(u, 0.1),
            F.selu(v),
            F.hardswish(u),
            torch.erf(u),
            torch.atan(v),
            torch.clamp(u, -0.2, 0.3),
            F.softsign(u),
            torch.sin(u),
            torch.cos(v),
            torch.tan(0.5 * v),
            F.log_softmax(u, -1),
            u / (2 + torch.sigmoid(v)),
            torch.maximum(u, v),
            torch.minimum(u, v),
            torch.where(v > 0, u, v),
            u * v,
            F.gelu(u),
            F.gelu(v, approximate="tanh"),
            F.hardsigmoid(u) * v,
            F.softmax(u * 2, -1),
            F.relu(u - 5.0),
            torch.tanh(v) * torch.sigmoid(u),
            u - v,
            F.softplus(v),
            torch.prod(u, -1, keepdim=True),
            torch.prod(torch.sigmoid(v), -1, keepdim=True),
            torch.argmax(u, -1, keepdim=True).float(),
            (u > v).float(),
            torch.floor(2 * v),
        ]
        return torch.cat(branches, dim=-1)


class NormsAndPools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.instance = nn.InstanceNorm2d(4, affine=True)
        self.group = nn.GroupNorm(2, 4)
        with torch.no_grad():
            self.instance.weight.uniform_(0.5, 1.5)
            self.group.weight.uniform_(-1.5, 1.5)

    def forward(self, x):
        h = self.conv(x)
        a = self.bn(h) + h  # h has a second reader, so the BatchNorm stays
        b = self.instance(h)
        c = self.group(F.pad(h, (1, 1, 1, 1), mode="reflect"))
        pooled = [
            F.max_pool2d(a, 2),
            F.avg_pool2d(b, 2),
            F.interpolate(F.avg_pool2d(c, 3), scale_factor=2, mode="bilinear"),
        ]
        return torch.cat([p.flatten(1) for p in pooled] + [F.adaptive_avg_pool2d(a, 1).flatten(1)], dim=1)


CASES = {
    "squeeze-excitation": (lambda: SqueezeExcitation(), (1, 3, 5, 5), 17, (0.0, 1.0)),
    "vit": (lambda: TinyViT(), (1, 3, 6, 6), 17, (0.0, 1.0)),
    "vit-decomposed-layernorm": (lambda: TinyViT(), (1, 3, 6, 6), 14, (-1.0, 1.0)),
    "vit-rmsnorm": (lambda: TinyViT(rms=True), (1, 3, 6, 6), 17, (0.0, 1.0)),
    "elementwise": (lambda: Elementwise(), (1, 4), 17, (-1.0, 1.0)),
    "norms-and-pools": (lambda: NormsAndPools(), (1, 2, 6, 6), 17, (0.0, 1.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_ranges_contain_every_value_seen_in_the_box(tmp_path, case):
    build, shape, opset, box = CASES[case]
    torch.manual_seed(0)
    graph = analysed(export(build(), shape, tmp_path, opset=opset))
    ranges = value_ranges(graph, {"x": box})
    checker = assert_ranges_contain_seen(graph, ranges, box)
    assert checker.points > 50
    # The ranges say something: every output is bounded.
    for name in graph.outputs:
        assert ranges[name].is_finite(), name


def test_ranges_of_the_input_are_the_box_and_an_unnamed_input_is_unbounded(tmp_path):
    graph = analysed(export(Elementwise(), (1, 4), tmp_path))
    ranges = value_ranges(graph, {"x": (-1.0, 2.0)})
    assert np.all(ranges["x"].lo == -1.0) and np.all(ranges["x"].hi == 2.0)
    unbounded = value_ranges(graph, {})
    assert not unbounded["x"].is_finite()
    # With no box, what depends on exp is unbounded above; nothing is narrower than the truth.
    assert not all(unbounded[name].is_finite() for name in graph.outputs)


def test_an_op_without_a_rule_gives_the_full_line(tmp_path):
    from lipaudit.ops import Factor, Op, register, unregister

    @register
    class Mystery(Op):
        family = "test"
        domain = "test.domain"

        def bound(self, node, ctx):
            return Factor.constant(1.0, "closed-form")

        def run(self, env, node, args):
            return args[0] * 0.5

    try:
        node = helper.make_node("Mystery", ["x"], ["y"], domain="test.domain")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
        model = helper.make_model(
            helper.make_graph([node], "g", [x], [y]),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("test.domain", 1)],
        )
        model.ir_version = 8
        graph = load_model(save(model, tmp_path), probe=False).graph
        ranges = value_ranges(graph, {"x": (0.0, 1.0)})
        assert np.all(ranges["y"].lo == -np.inf) and np.all(ranges["y"].hi == np.inf)
    finally:
        unregister(Mystery)


def test_moving_entries_leaves_the_range_exactly_as_it_was(tmp_path) -> None:
    """Squeeze, Transpose, Reshape and the like compute their ends exactly: no margin, so the glue one
    exporter writes between two layers and another leaves out gives one local figure (redteam20:
    two-layer GRUs 19.999344 against 19.999357 through a Squeeze or a Transpose + Reshape)."""
    import numpy as np
    from onnx import helper

    from lipaudit import audit
    from tests.builders import graph_model, save

    rng = np.random.default_rng(0)
    weights = {"a": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal((6, 3)).astype(np.float32)}
    glue = {
        "none": [],
        "squeeze": [
            helper.make_node("Unsqueeze", ["c", "axis"], ["u"]),
            helper.make_node("Squeeze", ["u", "axis"], ["c2"]),
        ],
        "transpose": [
            helper.make_node("Transpose", ["c"], ["t"], perm=[1, 0]),
            helper.make_node("Transpose", ["t"], ["c2"], perm=[1, 0]),
        ],
    }
    figures = set()
    for name, middle in glue.items():
        into = "c2" if middle else "c"
        nodes = [
            helper.make_node("MatMul", ["x", "a"], ["c"]),
            *middle,
            helper.make_node("Tanh", [into], ["h"]),
            helper.make_node("MatMul", ["h", "b"], ["y"]),
        ]
        model = graph_model(nodes, (1, 4), {**weights, "axis": np.array([0], np.int64)}, opset=17)
        figures.add(audit(save(model, tmp_path, f"{name}.onnx"), input_range="-0.5:0.5").upper_bound)
    assert len(figures) == 1, figures
