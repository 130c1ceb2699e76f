"""Rules and converters added for the export-path probe (issue 22): CumSum, GatherElements and
GatherND with constant indices, and the aten converters that now write the ops the ONNX exporters
write (roll, index, gather, cumsum, unfold, avg_pool's divisor_override, adaptive average pooling
with unequal windows). Each figure, with verification off, is checked against the operator's own
matrix: materialised by onnxruntime on basis vectors, or by torch's autograd Jacobian of the module.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lipaudit import audit
from lipaudit.ops.reduce import cumulative_norm
from tests.builders import operator_matrix, save, single_node_model, spectral_norm
from tests.load.test_aten_converters import Lambda, _save

RTOL = 1e-5


@pytest.mark.parametrize("exclusive", [False, True])
def test_cumulative_norm_is_the_top_singular_value(exclusive: bool) -> None:
    for n in range(1, 40):
        matrix = torch.tril(torch.ones(n, n, dtype=torch.float64), diagonal=-1 if exclusive else 0)
        truth = float(torch.linalg.matrix_norm(matrix, ord=2)) if n > 1 or not exclusive else 0.0
        assert truth <= cumulative_norm(n, exclusive) <= truth * (1 + 1e-12), n


def _onnx_figure_and_truth(model, shape, tmp_path: Path) -> tuple[float, float]:
    report = audit(str(save(model, tmp_path)), bound="product", verify=False)
    assert report.exit_code() == 0, report.network.unsupported
    return report.upper_bound, spectral_norm(operator_matrix(model, shape))


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [1, -1])
def test_cumsum_rule(exclusive: int, reverse: int, axis: int, tmp_path: Path) -> None:
    model = single_node_model(
        "CumSum", [2, 5, 7], {"axis": np.array(axis, np.int64)}, exclusive=exclusive, reverse=reverse
    )
    figure, truth = _onnx_figure_and_truth(model, [2, 5, 7], tmp_path)
    assert truth * (1 - 1e-6) <= figure <= truth * (1 + RTOL)


@pytest.mark.parametrize(
    "axis,indices",
    [
        (1, np.array([[0, 2, 2, -1], [1, 1, 1, 1], [2, 0, -3, 3]], np.int64)),  # negative: from the end
        (0, np.array([[0, 2, 2, -1], [2, 2, 0, 1]], np.int64)),
    ],
)
def test_gather_elements_with_constant_indices(axis: int, indices: np.ndarray, tmp_path: Path) -> None:
    model = single_node_model("GatherElements", [3, 4], {"indices": indices}, axis=axis)
    figure, truth = _onnx_figure_and_truth(model, [3, 4], tmp_path)
    assert figure == pytest.approx(truth, rel=RTOL) and figure >= truth * (1 - 1e-9)


@pytest.mark.parametrize(
    "indices",
    [
        np.array([[0, 1], [2, 0], [0, 1]], np.int64),  # the same row twice
        np.array([[[1], [1]], [[-1], [0]]], np.int64),  # whole slices, one of them twice, a negative index
    ],
)
def test_gather_nd_with_constant_indices(indices: np.ndarray, tmp_path: Path) -> None:
    model = single_node_model("GatherND", [3, 2, 2], {"indices": indices})
    figure, truth = _onnx_figure_and_truth(model, [3, 2, 2], tmp_path)
    assert figure == pytest.approx(truth, rel=RTOL) and figure >= truth * (1 - 1e-9)


@pytest.mark.parametrize(
    "batch_dims,indices",
    [
        (1, np.array([[[1], [0], [1]], [[0], [0], [0]], [[-1], [1], [0]]], np.int64)),  # rows, one thrice
        (1, np.array([[[1, 0]], [[0, 1]], [[1, 1]]], np.int64)),  # entries of each batch item
        (2, np.array([[[1], [0]], [[0], [0]], [[1], [-2]]], np.int64)),  # the legacy export's diagonal
    ],
)
def test_gather_nd_with_batch_axes(batch_dims: int, indices: np.ndarray, tmp_path: Path) -> None:
    model = single_node_model("GatherND", [3, 2, 2], {"indices": indices}, batch_dims=batch_dims)
    figure, truth = _onnx_figure_and_truth(model, [3, 2, 2], tmp_path)
    assert figure == pytest.approx(truth, rel=RTOL) and figure >= truth * (1 - 1e-9)
    report = audit(str(save(model, tmp_path, "verified.onnx")))  # lipaudit's own run against onnxruntime's
    assert report.exit_code() == 0 and report.verification.checked


def test_a_legacy_diagonal_folds_its_index_arithmetic_and_matches_its_twins(tmp_path: Path) -> None:
    """torch.diagonal through the legacy exporter: CumSum over a 1-element axis tensor (which
    onnxruntime runs and the reference evaluator refuses), an If on the diagonal's length, GatherND
    with batch_dims = 1; the dynamo export masks with EyeLike and sums with ReduceSum. Both are
    the selection of 2 entries times 2: norm 2."""
    module = Lambda(lambda x: torch.diagonal(x, offset=-1, dim1=1, dim2=2) * 2).eval()
    example = torch.randn(2, 3, 4)
    legacy, dynamo = tmp_path / "legacy.onnx", tmp_path / "dynamo.onnx"
    torch.onnx.export(module, (example,), str(legacy), dynamo=False, opset_version=17)
    torch.onnx.export(module, (example,), str(dynamo), dynamo=True)
    for path in (legacy, dynamo):
        report = audit(str(path))
        assert report.exit_code() == 0 and report.network.certified, path
        assert 2.0 <= report.upper_bound <= 2.0 * (1 + 1e-4), (path, report.upper_bound)


def test_repeat_interleave_with_counts_counts_each_copy_once_on_every_path(tmp_path: Path) -> None:
    """The legacy exporter splits x, Expands each piece by its count and concatenates: the product
    of Split, Expand and Concat is √(1 + 3 + 2); the map copies no entry more than 3 times: √3."""
    module = Lambda(lambda x: torch.repeat_interleave(x, torch.tensor([1, 3, 2]), dim=1)).eval()
    example = torch.randn(2, 3)
    legacy, archive = tmp_path / "legacy.onnx", tmp_path / "model.pt2"
    torch.onnx.export(module, (example,), str(legacy), dynamo=False, opset_version=17)
    torch.export.save(torch.export.export(module, (example,)), str(archive))
    for path in (legacy, archive):
        report = audit(str(path))
        assert report.exit_code() == 0 and report.network.certified, path
        assert 3**0.5 <= report.upper_bound <= 3**0.5 * (1 + 1e-4), (path, report.upper_bound)


@pytest.mark.parametrize("position", [1, 2])
def test_where_with_a_constant_condition_is_the_entries_it_keeps(position: int, tmp_path: Path) -> None:
    """Where(c, x, fill) and Where(c, fill, x) with x broadcast along the rows: the recursion looks
    through it as a Pick (the largest count of one entry kept), composed with the Mul after it.
    Where's rule gives 1 and the composer counts the broadcast's copies in its input weight: the
    recursion once took the 1 as the Pick's norm and certified 2.0567 where the truth is 2.0675."""
    rng = np.random.default_rng(position)
    condition = rng.random((3, 4)) < 0.5
    fill = rng.normal(size=(3, 4)).astype(np.float32)
    inputs = ["c", "x", "fill"] if position == 1 else ["c", "fill", "x"]
    nodes = [
        onnx.helper.make_node("Where", inputs, ["kept"]),
        onnx.helper.make_node("Mul", ["kept", "w"], ["y"]),
    ]
    weight = rng.normal(size=(3, 4)).astype(np.float32)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 4])
    initializers = [
        onnx.numpy_helper.from_array(condition, "c"),
        onnx.numpy_helper.from_array(fill, "fill"),
        onnx.numpy_helper.from_array(weight, "w"),
    ]
    graph = onnx.helper.make_graph(nodes, "where", [x], [y], initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    report = audit(str(save(model, tmp_path)))
    truth = spectral_norm(operator_matrix(model, [1, 4]))
    assert report.exit_code() == 0
    assert truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + 1e-4)


@pytest.mark.parametrize("output_size", [(1, 5), (2, 2)])
def test_adaptive_pooling_gets_its_operators_norm_on_dynamo_and_pt2(output_size, tmp_path: Path) -> None:
    """Dynamo writes an adaptive average pool with unequal windows as index arithmetic (GatherND, a
    Where that masks the window's indices, Gathers, ReduceMean or Add and Div); torch.export as a
    constant pooling matrix on the left of each spatial axis (A·x). Both are linear maps the
    recursion composes with the convolution before them."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 2).eval()
    module = Lambda(lambda x: F.adaptive_avg_pool2d(conv(x), output_size)).eval()
    example = torch.randn(1, 2, 4, 4)
    dynamo, archive = tmp_path / "dynamo.onnx", tmp_path / "model.pt2"
    torch.onnx.export(module, (example,), str(dynamo), dynamo=True)
    torch.export.save(torch.export.export(module, (example,)), str(archive))
    truth = spectral_norm(operator_matrix(onnx.load(str(dynamo)), [1, 2, 4, 4]))
    for path in (dynamo, archive):
        report = audit(str(path))
        assert report.exit_code() == 0 and truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + 1e-4), path


@pytest.mark.parametrize(
    "equation,weight_shape,variable_first",
    [
        ("bhi,hij->bhj", (3, 4, 5), True),  # per-head projections
        ("ij,bkj", (5, 4), False),  # implicit output (bik), the weight first
        ("...i,ji->...j", (2, 4), True),
    ],
)
def test_einsum_with_one_constant_operand(
    equation: str, weight_shape: tuple[int, ...], variable_first: bool, tmp_path: Path
) -> None:
    weight = np.random.default_rng(0).normal(size=weight_shape).astype(np.float32)
    shape = [2, 3, 4]
    inputs = ["x", "w"] if variable_first else ["w", "x"]
    model = single_node_model("Einsum", shape, {"w": weight}, inputs=inputs, equation=equation)
    figure, truth = _onnx_figure_and_truth(model, shape, tmp_path)
    assert truth * (1 - 1e-6) <= figure <= truth * (1 + 1e-4)


def test_einsum_of_two_variables_is_unbounded(tmp_path: Path) -> None:
    model = single_node_model("Einsum", [3, 4], inputs=["x", "x"], equation="ij,kj->ik")
    report = audit(str(save(model, tmp_path)), bound="product", verify=False)
    assert report.exit_code() == 3 and report.network.unbounded and not report.network.unsupported


@pytest.mark.parametrize(
    "kernel,attrs",
    [
        ((2, 2), {}),
        ((2, 3), {"dilations": [1, 2], "pads": [1, 0, 1, 0], "strides": [2, 1]}),
    ],
)
def test_col2im_is_the_transposed_one_hot_convolution(kernel, attrs, tmp_path: Path) -> None:
    """F.fold as ONNX Col2Im: sums overlapping patches; the figure is its operator norm."""
    image = np.array([4, 5], np.int64)
    geometry = torch.nn.Fold(
        (4, 5),
        kernel,
        dilation=attrs.get("dilations", 1),
        padding=attrs.get("pads", [0, 0])[:2],
        stride=attrs.get("strides", 1),
    )
    blocks = torch.nn.Unfold(kernel, dilation=geometry.dilation, padding=geometry.padding, stride=geometry.stride)
    shape = list(blocks(torch.zeros(1, 2, 4, 5)).shape)
    model = single_node_model("Col2Im", shape, {"image": image, "block": np.array(kernel, np.int64)}, opset=18, **attrs)
    figure, truth = _onnx_figure_and_truth(model, shape, tmp_path)
    assert truth * (1 - 1e-6) <= figure <= truth * (1 + 1e-4)


_HEADS = torch.randn((3, 4, 2), generator=torch.Generator().manual_seed(3))
_PICKS = torch.tensor([[[0, 3, 3, 1], [2, 2, 2, 2], [3, 0, 1, 2]]])

LINEAR = {
    "roll": (Lambda(lambda x: torch.roll(x, (1, -3), (1, 2)) * 1.5), (1, 3, 4)),
    "index": (
        Lambda(lambda x: torch.cat([x[:, torch.tensor([2, 0, 0])], x[..., torch.tensor([3, 1, 3])]], 2)),
        (1, 3, 4),
    ),
    "gather": (Lambda(lambda x: torch.gather(x, 2, _PICKS)), (1, 3, 4)),
    "cumsum": (Lambda(lambda x: torch.cumsum(x, 2)), (1, 3, 5)),
    "einsum": (Lambda(lambda x: torch.einsum("bhi,hij->bhj", x, _HEADS.to(x.dtype))), (2, 3, 4)),
    "unfold": (Lambda(lambda x: F.unfold(x, (2, 3), padding=1, stride=(2, 1))), (1, 2, 4, 5)),
    "tile_repeat_interleave": (
        Lambda(
            lambda x: torch.cat(
                [torch.tile(x, (2,)).flatten(1), torch.repeat_interleave(x, torch.tensor([1, 0, 3]), 1).flatten(1)], 1
            )
        ),
        (1, 3, 4),
    ),
    "diff": (Lambda(lambda x: torch.diff(x, n=2, dim=-1)), (1, 3, 6)),
    "fold": (Lambda(lambda x: F.fold(x, (4, 5), (2, 3), dilation=(1, 2), padding=(1, 0), stride=(2, 1))), (1, 12, 3)),
    "unfold_then_fold": (Lambda(lambda x: F.fold(F.unfold(x, 2), (3, 4), 2)), (1, 2, 3, 4)),
    "channel_shuffle": (nn.ChannelShuffle(2), (1, 4, 2, 3)),
    "diagonal": (Lambda(lambda x: x + torch.diagonal(x, -1, 1, 2)[:, None, :]), (1, 4, 3)),
    "baddbmm": (Lambda(lambda x: torch.baddbmm(x[..., :2], x, _HEADS[:1].to(x.dtype), alpha=3.0)), (1, 3, 4)),
    "avg_pool_divisor": (nn.AvgPool2d(2, stride=1, padding=1, divisor_override=3), (1, 1, 4, 4)),
    "adaptive_unequal": (nn.AdaptiveAvgPool2d((3, 4)), (1, 2, 5, 7)),
    "adaptive_unequal_3d": (nn.AdaptiveAvgPool3d((2, 3, 2)), (1, 1, 5, 4, 3)),
}


SUMS = {"diff", "diagonal", "baddbmm"}


@pytest.mark.parametrize("kind", ["traced", "export"])
@pytest.mark.parametrize("case", sorted(LINEAR))
def test_linear_converters_figure_is_the_operator_norm(case: str, kind: str, tmp_path: Path) -> None:
    """The map is linear, so its Lipschitz constant is ‖J‖₂ of its autograd Jacobian; the product
    bound (verification off) must not fall below it, and for these exact rules meets it."""
    model, shape = LINEAR[case]
    path = _save(kind, model, shape, tmp_path / ("m.pt" if kind == "traced" else "m.pt2"))
    report = audit(str(path), bound="product", verify=False)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert report.exit_code() == 0, report.network.unsupported
    jacobian = torch.autograd.functional.jacobian(model, example.double())
    truth = float(torch.linalg.matrix_norm(jacobian.reshape(-1, example.numel()), ord=2))
    # A difference or a sum of two of x's parts is bounded by the sum of theirs in the product.
    slack = 2.0 if case in SUMS else 1e-4
    assert truth * (1 - 1e-6) <= report.upper_bound <= truth * (1 + slack)


def test_einsum_ranges_on_a_box_hold_the_outputs(tmp_path: Path) -> None:
    """Einsum then Tanh on a box: the einsum's range feeds Tanh's slope. The figure holds against the
    largest Jacobian norm at sampled points of the box (its ranges are not left unbounded)."""
    from onnx import helper

    from tests.builders import graph_model

    weight = (np.abs(np.random.default_rng(1).normal(size=(3, 4, 2))) + 0.2).astype(np.float32)
    nodes = [
        helper.make_node("Einsum", ["x", "w"], ["h"], equation="bhi,hij->bhj"),
        helper.make_node("Tanh", ["h"], ["y"]),
    ]
    model = graph_model(nodes, [1, 3, 4], {"w": weight})
    report = audit(str(save(model, tmp_path)), bound="product", verify=False, input_range=["2:3"])
    assert report.exit_code() == 0 and report.network.scope == "domain"
    w = torch.from_numpy(weight).double()
    rng = torch.Generator().manual_seed(0)
    truth = 0.0
    for _ in range(20):
        x = 2 + torch.rand((1, 3, 4), generator=rng, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda t: torch.tanh(torch.einsum("bhi,hij->bhj", t, w)), x)
        truth = max(truth, float(torch.linalg.matrix_norm(jacobian.reshape(-1, 12), ord=2)))
    global_figure = audit(str(save(model, tmp_path, "global.onnx")), bound="product", verify=False).upper_bound
    assert truth <= report.upper_bound < global_figure


def test_copies_round_their_root_up(tmp_path: Path) -> None:
    """Two Tiles that each copy an entry 3 times copy it 9 times: norm exactly 3. Copies carry no
    float32 margin, so √3·√3 rounded to nearest (2.9999999999999996) would sit below it."""
    nodes = [
        onnx.helper.make_node("Tile", ["x", "repeats"], ["t"]),
        onnx.helper.make_node("Tile", ["t", "repeats"], ["y"]),
    ]
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 18])
    repeats = onnx.numpy_helper.from_array(np.array([1, 3], np.int64), "repeats")
    graph = onnx.helper.make_graph(nodes, "tiles", [x], [y], [repeats])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    for bound in ("product", "recursion"):
        assert audit(str(save(model, tmp_path)), bound=bound).upper_bound >= 3.0


@pytest.mark.parametrize("case", ["where", "max", "maxpool"])
def test_three_copies_are_never_below_root_three(tmp_path: Path, case: str) -> None:
    """An entry copied 3 times by a broadcast (Where, Max) or by overlapping windows (MaxPool k=3,
    s=1) has norm √3 exactly; these ops round nothing (no float32 margin), so the root must be
    rounded up: 1.7320508075688772² < 3 (redteam12)."""
    if case == "maxpool":
        nodes = [onnx.helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[1])]
        shapes, weights = ([1, 1, 5], [1, 1, 3]), {}
    else:
        nodes = [onnx.helper.make_node("Where", ["c", "x", "z"], ["y"])]
        weights = {"c": np.ones((3, 4), bool), "z": np.zeros((3, 4), np.float32)}
        if case == "max":
            nodes = [onnx.helper.make_node("Max", ["x", "m"], ["y"])]
            weights = {"m": np.full((3, 4), -1e30, np.float32)}
        shapes = ([1, 4], [3, 4])
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shapes[0])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shapes[1])
    initializers = [onnx.numpy_helper.from_array(value, name) for name, value in weights.items()]
    model = onnx.helper.make_model(
        onnx.helper.make_graph(nodes, "copies", [x], [y], initializers),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    for bound in ("product", "recursion"):
        figure = audit(str(save(model, tmp_path)), bound=bound).upper_bound
        assert Fraction(figure) ** 2 >= 3
