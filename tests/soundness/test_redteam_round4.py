"""Red-team round 4 (issues 18 and 19): one probe per mechanism, against an independent truth.

Each probe builds a small model in code and checks lipaudit from outside (``audit(...).to_dict()``
or the CLI): a certified figure is at least the truth, or the op is reported unsupported / not
Lipschitz, or the exit code is the one the issue asks for.  The truth never comes from lipaudit:
explicit input pairs run by onnxruntime (or by the saved torch program), a Jacobian from basis
vectors or torch autograd, or a closed form from the cycles of a permutation read off the runtime.
Probes that fail today are marked ``xfail(strict=True)`` with the figure and the truth in the reason.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import Result
from onnx import TensorProto, helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from tests.soundness._oracle import (
    FLOAT,
    assert_sound,
    max_fd_jacobian_norm,
    max_pair_ratio,
    model,
    operator_norm,
    pair_ratio,
    run_audit,
    runtime_function,
    save,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
DOUBLE = TensorProto.DOUBLE

N = 64
SQUARE = [1, 1, N, N]  # 4096 entries: above the recursion's dense limit, so its convolution form


def _ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def _cycle_norm(source: np.ndarray) -> float:
    """‖I − P‖ for y.flat[j] = x.flat[source[j]]: I − P is normal, its norm the largest |1 − ω| over
    the eigenvalues ω of P (the k-th roots of unity of each cycle of length k)."""
    source = np.asarray(source).ravel()
    seen = np.zeros(source.size, dtype=bool)
    best = 0.0
    for start in range(source.size):
        length, j = 0, start
        while not seen[j]:
            seen[j], j, length = True, source[j], length + 1
        if length > 1:
            best = max(best, max(abs(1 - np.exp(2j * math.pi * m / length)) for m in range(length)))
    return best


def _moved_source(proto: onnx.ModelProto, shape) -> np.ndarray:
    """For y = x − P x: the source index of each entry of P x, read off onnxruntime at x = 0, 1, …"""
    n = math.prod(shape)
    x = np.arange(n, dtype=np.float32).reshape(shape)
    moved = x - runtime_function(proto)(x).reshape(shape)
    return moved.reshape(-1).round().astype(np.int64)


def _linear_pairs_truth(proto: onnx.ModelProto, shape, count: int = 8, seed: int = 0) -> float:
    """max ‖f(x) − f(0)‖ / ‖x‖ over random x: a lower bound on the norm of an affine map."""
    rng = np.random.default_rng(seed)
    f = runtime_function(proto)
    return max_pair_ratio(f, [(rng.normal(size=shape), np.zeros(shape)) for _ in range(count)])


def _minus_moved(moves: list[onnx.NodeProto], shape, constants: dict, *, moved: str = "p") -> onnx.ModelProto:
    """y = x − P(x), with P given by ``moves`` (reading x, writing ``moved``)."""
    nodes = [*moves, helper.make_node("Sub", ["x", moved], ["y"])]
    return model(nodes, [("x", FLOAT, list(shape))], [("y", FLOAT, list(shape))], constants)


# ----------------------------------------------------------------------------- entry-moving ops


def _transpose(perm):
    return [helper.make_node("Transpose", ["x"], ["p"], perm=list(perm))], {}


def _flip_slice(axes, steps):
    big = -(2**62)
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["p"])]
    constants = {
        "st": _ints(*[-1] * len(axes)),
        "en": _ints(*[big] * len(axes)),
        "ax": _ints(*axes),
        "sp": _ints(*steps),
    }
    return nodes, constants


def _gather(indices, axis):
    return [helper.make_node("Gather", ["x", "i"], ["p"], axis=axis)], {"i": np.asarray(indices, np.int64)}


def _roll_2d():
    """torch.roll's opset-17 export on both spatial axes: Slice + Concat, twice."""
    nodes = [
        helper.make_node("Slice", ["x", "one", "n", "a3"], ["r1"]),
        helper.make_node("Slice", ["x", "zero", "one", "a3"], ["r0"]),
        helper.make_node("Concat", ["r1", "r0"], ["rolled"], axis=3),
        helper.make_node("Slice", ["rolled", "one", "n", "a2"], ["q1"]),
        helper.make_node("Slice", ["rolled", "zero", "one", "a2"], ["q0"]),
        helper.make_node("Concat", ["q1", "q0"], ["p"], axis=2),
    ]
    constants = {"one": _ints(1), "n": _ints(N), "zero": _ints(0), "a3": _ints(3), "a2": _ints(2)}
    return nodes, constants


def _half_reversal():
    """The first half of the last axis reversed (a negative-step Slice), the second half kept."""
    nodes = [
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["a"]),
        helper.make_node("Slice", ["x", "s2", "e2", "ax"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["p"], axis=3),
    ]
    constants = {
        "st": _ints(N // 2 - 1),
        "en": _ints(-N - 1),
        "ax": _ints(3),
        "sp": _ints(-1),
        "s2": _ints(N // 2),
        "e2": _ints(N),
    }
    return nodes, constants


def _interleave():
    """Concat(x[..., ::-2], x[..., -2::-2]): two step −2 slices that fill the axis again."""
    nodes = [
        helper.make_node("Slice", ["x", "s1", "en", "ax", "sp"], ["a"]),
        helper.make_node("Slice", ["x", "s2", "en", "ax", "sp"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["p"], axis=3),
    ]
    constants = {"s1": _ints(-1), "s2": _ints(-2), "en": _ints(-(2**62)), "ax": _ints(3), "sp": _ints(-2)}
    return nodes, constants


def _space_depth_round_trip():
    """SpaceToDepth, then DepthToSpace in CRD order (SpaceToDepth is DCR): a spatial permutation."""
    nodes = [
        helper.make_node("SpaceToDepth", ["x"], ["d"], blocksize=2),
        helper.make_node("DepthToSpace", ["d"], ["p"], blocksize=2, mode="CRD"),
    ]
    return nodes, {}


def _reshape_after_transpose():
    """Transpose of a 32×128 map, reshaped back to 32×128: the shape is kept, the entries move."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["p"]),
    ]
    return nodes, {"shape": _ints(1, 32, 128)}


_RNG = np.random.default_rng(7)
PERMUTATIONS = {
    "transpose-batch-channel": (_transpose((1, 0, 2, 3)), [8, 8, 8, 8]),
    "transpose-3-cycle": (_transpose((0, 2, 3, 1)), [1, 16, 16, 16]),
    "transpose-then-reshape": (_reshape_after_transpose(), [1, 32, 128]),
    "slice-flip-two-axes": (_flip_slice((2, 3), (-1, -1)), SQUARE),
    "slice-flip-channels": (_flip_slice((1,), (-1,)), [1, 16, 16, 16]),
    "slice-half-reversal": (_half_reversal(), SQUARE),
    "slice-step-minus-2-interleave": (_interleave(), SQUARE),
    "gather-negative-indices": (_gather(-np.arange(1, N + 1), 3), SQUARE),
    "gather-rows": (_gather(_RNG.permutation(N), 2), SQUARE),
    "gather-channels": (_gather(_RNG.permutation(16), 1), [1, 16, 16, 16]),
    "roll-2d-slice-concat": (_roll_2d(), SQUARE),
    "space-to-depth-round-trip": (_space_depth_round_trip(), [1, 4, 32, 32]),
}


@pytest.mark.parametrize("case", sorted(PERMUTATIONS))
def test_shape_keeping_permutations_are_not_the_identity(tmp_path: Path, case: str) -> None:
    (moves, constants), shape = PERMUTATIONS[case]
    proto = _minus_moved(moves, shape, constants)
    truth = _cycle_norm(_moved_source(proto, shape))
    assert truth > 1.0, "the probe must move entries"
    assert_sound(run_audit(proto, tmp_path), truth, allow_error=False)


@pytest.mark.parametrize("verify", [None, False])
def test_gather_elements_with_a_different_permutation_per_row(tmp_path: Path, verify) -> None:
    rng = np.random.default_rng(3)
    index = np.stack([rng.permutation(N) for _ in range(N)]).reshape(SQUARE).astype(np.int64)
    nodes = [helper.make_node("GatherElements", ["x", "i"], ["p"], axis=3)]
    proto = _minus_moved(nodes, SQUARE, {"i": index})
    truth = _cycle_norm(_moved_source(proto, SQUARE))
    assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


@pytest.mark.parametrize("op", ["Gather", "GatherElements"])
def test_a_shape_keeping_gather_with_repeated_indices_is_a_copy(tmp_path: Path, op: str) -> None:
    """Every entry of a row read from its first column: √64 = 8, not a permutation's 1."""
    index = np.zeros(N if op == "Gather" else SQUARE, np.int64)
    nodes = [helper.make_node(op, ["x", "i"], ["y"], axis=3)]
    proto = model(nodes, [("x", FLOAT, SQUARE)], [("y", FLOAT, SQUARE)], {"i": index})
    x = np.zeros(SQUARE)
    x[..., 0] = 1.0
    truth = pair_ratio(runtime_function(proto), x, np.zeros(SQUARE))
    assert truth == pytest.approx(8.0)
    assert_sound(run_audit(proto, tmp_path), truth, allow_error=False)


# ----------------------------------------------------------------------------- combined paths


def _two_paths(kind: str) -> onnx.ModelProto:
    """a(x) − b(x) for two maps of the same shape that are not the same map."""
    rng = np.random.default_rng(11)
    kernel = rng.normal(size=[1, 1, 3, 3]).astype(np.float32)
    pads = {"pads": [1, 1, 1, 1]}
    constants: dict = {"K": kernel}
    out = SQUARE
    if kind == "conv-of-x-minus-conv-of-flipped-x":  # the same kernel on two different inputs
        flip, flip_constants = _flip_slice((3,), (-1,))
        constants.update(flip_constants)
        nodes = [
            *flip,
            helper.make_node("Conv", ["x", "K"], ["a"], **pads),
            helper.make_node("Conv", ["p", "K"], ["b"], **pads),
        ]
    elif kind == "two-gather-permutations":
        constants = {"i1": rng.permutation(N).astype(np.int64), "i2": rng.permutation(N).astype(np.int64)}
        nodes = [
            helper.make_node("Gather", ["x", "i1"], ["a"], axis=3),
            helper.make_node("Gather", ["x", "i2"], ["b"], axis=3),
        ]
    elif kind == "two-slices-of-one-axis":
        constants = {"s0": _ints(0), "e0": _ints(N // 2), "s1": _ints(N // 2), "e1": _ints(N), "ax": _ints(3)}
        nodes = [
            helper.make_node("Slice", ["x", "s0", "e0", "ax"], ["a"]),
            helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["b"]),
        ]
        out = [1, 1, N, N // 2]
    elif kind == "pad-left-minus-pad-right":
        constants = {"pa": _ints(0, 0, 0, 1, 0, 0, 0, 0), "pb": _ints(0, 0, 0, 0, 0, 0, 0, 1)}
        nodes = [helper.make_node("Pad", ["x", "pa"], ["a"]), helper.make_node("Pad", ["x", "pb"], ["b"])]
        out = [1, 1, N, N + 1]
    elif kind == "kernel-minus-its-flip":
        constants["K2"] = kernel[..., ::-1, ::-1].copy()
        nodes = [
            helper.make_node("Conv", ["x", "K"], ["a"], **pads),
            helper.make_node("Conv", ["x", "K2"], ["b"], **pads),
        ]
    elif kind == "same-kernel-other-dilation":
        nodes = [
            helper.make_node("Conv", ["x", "K"], ["a"], **pads),
            helper.make_node("Conv", ["x", "K"], ["b"], pads=[2, 2, 2, 2], dilations=[2, 2]),
        ]
    elif kind == "conv-minus-its-transpose":
        nodes = [
            helper.make_node("Conv", ["x", "K"], ["a"], **pads),
            helper.make_node("Transpose", ["a"], ["b"], perm=[0, 1, 3, 2]),
        ]
    else:
        raise AssertionError(kind)
    nodes.append(helper.make_node("Sub", ["a", "b"], ["y"]))
    return model(nodes, [("x", FLOAT, SQUARE)], [("y", FLOAT, out)], constants)


def _odd_under_flip(shape) -> np.ndarray:
    x = np.random.default_rng(5).normal(size=shape)
    return x - x[..., ::-1]


@pytest.mark.parametrize(
    "kind",
    [
        "conv-of-x-minus-conv-of-flipped-x",
        "two-gather-permutations",
        "pad-left-minus-pad-right",
        "kernel-minus-its-flip",
        "same-kernel-other-dilation",
        "conv-minus-its-transpose",
    ],
)
def test_two_paths_are_merged_only_when_they_are_the_same_map(tmp_path: Path, kind: str) -> None:
    proto = _two_paths(kind)
    f = runtime_function(proto)
    pairs = [(np.random.default_rng(s).normal(size=SQUARE), np.zeros(SQUARE)) for s in range(4)]
    pairs.append((_odd_under_flip(SQUARE), np.zeros(SQUARE)))  # x − flip(x) moves these most
    if kind == "two-slices-of-one-axis":
        x = np.zeros(SQUARE)
        x[..., : N // 2], x[..., N // 2 :] = 1.0, -1.0
        pairs.append((x, np.zeros(SQUARE)))
    truth = max_pair_ratio(f, pairs)
    assert truth > 0.5
    assert_sound(run_audit(proto, tmp_path), truth, allow_error=False)


# ----------------------------------------------------------------------------- residual branches


BRANCH_MOVES = {
    "transpose": (_transpose((0, 1, 3, 2)), 2.0),
    "slice-flip": (_flip_slice((3,), (-1,)), 2.0),
    "slice-flip-two-axes": (_flip_slice((2, 3), (-1, -1)), 2.0),
    "gather": (_gather(np.random.default_rng(2).permutation(N), 2), None),
    "roll": (_roll_2d(), None),
}


def _cli(*args: str) -> Result:
    """`lipaudit check ARGS` in this process (what the entry point runs)."""
    return CliRunner().invoke(app, ["check", *args])


@pytest.mark.parametrize("case", sorted(BRANCH_MOVES))
def test_a_permutation_inside_a_residual_branch_is_not_invertible(tmp_path: Path, case: str) -> None:
    """x + 0.6·(x − P x): the branch has Lip 0.6·‖I − P‖ > 1, so --max-branch-lipschitz 1 fails."""
    (moves, constants), _ = BRANCH_MOVES[case]
    nodes = [
        *moves,
        helper.make_node("Sub", ["x", "p"], ["d"]),
        helper.make_node("Mul", ["d", "c"], ["g"]),
        helper.make_node("Add", ["x", "g"], ["y"]),
    ]
    proto = model(nodes, [("x", FLOAT, SQUARE)], [("y", FLOAT, SQUARE)], {**constants, "c": np.float32(0.6)})
    mover = _minus_moved(moves, SQUARE, constants)
    branch_truth = 0.6 * _cycle_norm(_moved_source(mover, SQUARE))
    assert branch_truth > 1.0
    path = save(proto, tmp_path)
    done = _cli(str(path), "--max-branch-lipschitz", "1", "--format", "json")
    assert done.exit_code == 1, done.output[-400:]
    report = json.loads(done.stdout)
    branches = report["network"]["branches"]
    assert branches, "the residual block must be found"
    assert max(b["bound"] for b in branches) >= branch_truth * (1 - 1e-6), branches
    network_truth = 1.0 + branch_truth  # on the −1 eigenvector of P: (1 + 0.6·2)·x … or its cycle analogue
    if BRANCH_MOVES[case][1] is not None:
        assert report["network"]["upper_bound"] >= network_truth * (1 - 1e-6)


# ----------------------------------------------------------------------------- data-dependent shapes

_ZERO = {"zero": np.float32(0), "one": _ints(1), "two": _ints(2)}


def _count_nodes() -> list[onnx.NodeProto]:
    """k = [number of positive entries of x], as a 1-element int64 tensor."""
    return [
        helper.make_node("Greater", ["x", "zero"], ["g"]),
        helper.make_node("NonZero", ["g"], ["nz"]),
        helper.make_node("Shape", ["nz"], ["s"]),
        helper.make_node("Slice", ["s", "one", "two"], ["k"]),
    ]


def _times_reduced(value: str) -> list[onnx.NodeProto]:
    return [helper.make_node("ReduceSum", [value], ["c"], keepdims=0), helper.make_node("Mul", ["x", "c"], ["y"])]


def _data_shaped(case: str) -> onnx.ModelProto:
    ones = np.ones([1], np.float32)
    if case == "tile-by-count":
        nodes = [*_count_nodes(), helper.make_node("Tile", ["ones", "k"], ["t"]), *_times_reduced("t")]
        constants = {**_ZERO, "ones": ones}
    elif case == "expand-to-count":
        nodes = [*_count_nodes(), helper.make_node("Expand", ["ones", "k"], ["t"]), *_times_reduced("t")]
        constants = {**_ZERO, "ones": ones}
    elif case == "constant-of-shape-count":
        value = helper.make_tensor("v", FLOAT, [1], [1.0])
        nodes = [*_count_nodes(), helper.make_node("ConstantOfShape", ["k"], ["t"], value=value), *_times_reduced("t")]
        constants = dict(_ZERO)
    elif case == "reshape-by-count":
        nodes = [
            *_count_nodes(),
            helper.make_node("Concat", ["k", "minus_one"], ["shape"], axis=0),
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("ReduceMax", ["r"], ["m"], axes=[1], keepdims=0),
            helper.make_node("ReduceSum", ["m"], ["c"], keepdims=0),
            helper.make_node("Mul", ["x", "c"], ["y"]),
        ]
        constants = {**_ZERO, "minus_one": _ints(-1)}
    elif case == "slice-to-count":
        nodes = [
            *_count_nodes(),
            helper.make_node("Slice", ["x", "zero_i", "k", "one"], ["head"]),
            *_times_reduced("head"),
        ]
        constants = {**_ZERO, "zero_i": _ints(0)}
    elif case == "topk-count":
        nodes = [*_count_nodes(), helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1), *_times_reduced("v")]
        constants = dict(_ZERO)
    elif case == "range-sum":
        nodes = [
            helper.make_node("ReduceSum", ["x"], ["t"], keepdims=0),
            helper.make_node("Abs", ["t"], ["limit"]),
            helper.make_node("Range", ["start", "limit", "step"], ["r"]),
            *_times_reduced("r"),
        ]
        constants = {"start": np.float32(0), "step": np.float32(1)}
    elif case == "unique-count":
        nodes = [
            helper.make_node("Floor", ["x"], ["fl"]),
            helper.make_node("Unique", ["fl"], ["u"]),
            helper.make_node("Size", ["u"], ["n"]),
            helper.make_node("Cast", ["n"], ["c"], to=FLOAT),
            helper.make_node("Mul", ["x", "c"], ["y"]),
        ]
        constants = {}
    elif case == "where-on-count":
        nodes = [
            *_count_nodes(),
            helper.make_node("Greater", ["k", "two"], ["many"]),
            helper.make_node("Mul", ["x", "twof"], ["x2"]),
            helper.make_node("Where", ["many", "x", "x2"], ["y"]),
        ]
        constants = {**_ZERO, "twof": np.float32(2)}
    elif case == "resize-by-data-scale":
        # scales = [1, 1, 1, 1 + |x0|]: no comparison and no cast on the way, only float arithmetic
        nodes = [
            helper.make_node("Slice", ["x", "zero_i", "one", "one"], ["x0"]),
            helper.make_node("Reshape", ["x0", "minus_one"], ["x0_flat"]),
            helper.make_node("Abs", ["x0_flat"], ["a"]),
            helper.make_node("Add", ["a", "onef"], ["s"]),
            helper.make_node("Concat", ["three_ones", "s"], ["scales"], axis=0),
            helper.make_node("Resize", ["image", "", "scales"], ["r"], mode="nearest"),
            *_times_reduced("r"),
        ]
        constants = {
            **_ZERO,
            "zero_i": _ints(0),
            "minus_one": _ints(-1),
            "onef": np.ones([1], np.float32),
            "three_ones": np.ones([3], np.float32),
            "image": np.ones([1, 1, 1, 4], np.float32),
        }
    else:
        raise AssertionError(case)
    out_shape = ["a"] if case == "reshape-by-count-flat" else ["a", "b"]
    return model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, out_shape)], constants)


DATA_SHAPED = [
    "tile-by-count",
    "expand-to-count",
    "constant-of-shape-count",
    "reshape-by-count",
    "slice-to-count",
    "topk-count",
    "range-sum",
    "unique-count",
    "where-on-count",
    "resize-by-data-scale",
]


@pytest.mark.parametrize("case", DATA_SHAPED)
@pytest.mark.parametrize("verify", [None, False])
def test_shapes_fed_by_data_are_steps(tmp_path: Path, case: str, verify) -> None:
    """Each model jumps where a count (or a scale) computed from x changes: no figure is right."""
    proto = _data_shaped(case)
    assert_sound(run_audit(proto, tmp_path, verify=verify), math.inf)


def test_the_resize_probe_really_jumps() -> None:
    f = runtime_function(_data_shaped("resize-by-data-scale"))
    x, y = np.array([[0.249, 1, 1, 1]]), np.array([[0.251, 1, 1, 1]])
    assert pair_ratio(f, x, y) > 100


# ----------------------------------------------------------------------------- outputs by position

_W = np.random.default_rng(0).normal(size=[4, 4]).astype(np.float32)
_V = np.random.default_rng(1).normal(size=[4, 4]).astype(np.float32)


def _residual_mlp(outputs: list[str]) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "V"], ["v"]),
        helper.make_node("Add", ["x", "v"], ["r"]),
        helper.make_node("Identity", ["x"], ["same"]),
    ]
    return model(nodes, [("x", FLOAT, [1, 4])], [(o, FLOAT, [1, 4]) for o in outputs], {"W": _W, "V": _V})


OUTPUT_LISTS = [
    ["v", "v"],
    ["x", "v"],
    ["x", "x"],
    ["h", "v"],
    ["v", "x", "v", "x"],
    ["r", "h0", "r"],
    ["r", "r", "r"],
    ["x", "same"],
]


@pytest.mark.parametrize("outputs", OUTPUT_LISTS, ids="+".join)
@pytest.mark.parametrize("settings", [{}, {"bound": "product"}, {"input_range": ["-1:1"]}, {"verify": False}], ids=str)
def test_every_output_position_counts(tmp_path: Path, outputs: list[str], settings: dict) -> None:
    proto = _residual_mlp(outputs)
    truth = max_fd_jacobian_norm(runtime_function(proto), [1, 4], samples=12, scale=1.0)
    if settings.get("input_range"):  # the local truth: Jacobians inside the box only
        rng = np.random.default_rng(0)
        from tests.soundness._oracle import fd_jacobian_norm

        truth = max(fd_jacobian_norm(runtime_function(proto), rng.uniform(-0.9, 0.9, [1, 4])) for _ in range(12))
    assert_sound(run_audit(proto, tmp_path, **settings), truth, allow_error=False, slack=1e-6)


def test_a_graph_without_nodes_that_lists_its_input_twice(tmp_path: Path) -> None:
    proto = model([], [("x", FLOAT, [1, 4])], [("x", FLOAT, [1, 4]), ("x", FLOAT, [1, 4])])
    for settings in ({}, {"bound": "product"}, {"input_range": ["0:1"]}):
        assert_sound(run_audit(proto, tmp_path, **settings), math.sqrt(2), allow_error=False)


def test_a_large_convolution_listed_twice(tmp_path: Path) -> None:
    kernel = np.random.default_rng(4).normal(size=[1, 1, 3, 3]).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1])]
    proto = model(nodes, [("x", FLOAT, SQUARE)], [("c", FLOAT, SQUARE), ("c", FLOAT, SQUARE)], {"K": kernel})
    truth = _linear_pairs_truth(proto, SQUARE)
    single = model(nodes, [("x", FLOAT, SQUARE)], [("c", FLOAT, SQUARE)], {"K": kernel})
    truth = max(truth, math.sqrt(2) * _linear_pairs_truth(single, SQUARE))
    assert_sound(run_audit(proto, tmp_path), truth, allow_error=False)


# ----------------------------------------------------------------------------- memory-mapped models


def _save_external(proto: onnx.ModelProto, directory: Path) -> Path:
    path = directory / "mapped.onnx"
    onnx.save(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mapped.data",
        size_threshold=0,
    )
    return path


def _mapped_cases() -> dict[str, tuple[onnx.ModelProto, float]]:
    rng = np.random.default_rng(9)
    kernel = rng.normal(size=[1, 1, 3, 3]).astype(np.float32)
    conv_transpose = model(
        [
            helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Transpose", ["c"], ["t"], perm=[0, 1, 3, 2]),
            helper.make_node("Sub", ["c", "t"], ["y"]),
        ],
        [("x", FLOAT, SQUARE)],
        [("y", FLOAT, SQUARE)],
        {"K": kernel},
    )
    matmul = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    twice = model(matmul, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4]), ("y", FLOAT, [1, 4])], {"W": _W})
    with_input = model(matmul, [("x", FLOAT, [1, 4])], [("x", FLOAT, [1, 4]), ("y", FLOAT, [1, 4])], {"W": _W})
    reshape_to_own_shape = model(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Shape", ["xw"], ["s"]),
            helper.make_node("Reshape", ["xw", "s"], ["r"]),
            helper.make_node("Add", ["r", "xw"], ["y"]),
        ],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"W": _W},
    )
    count = model(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Greater", ["xw", "zero"], ["g"]),
            helper.make_node("NonZero", ["g"], ["nz"]),
            helper.make_node("Shape", ["nz"], ["s"]),
            helper.make_node("Gather", ["s", "one"], ["k"], axis=0),
            helper.make_node("Cast", ["k"], ["kf"], to=FLOAT),
            helper.make_node("Mul", ["xw", "kf"], ["y"]),
        ],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"W": _W, "zero": np.float32(0), "one": np.int64(1)},
    )
    tiny = rng.normal(size=[4, 4]) * 1e-160
    tiny64 = model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], [("x", DOUBLE, [1, 4])], [("y", DOUBLE, [1, 4])], {"W": tiny}
    )
    return {
        "conv-minus-transpose": (conv_transpose, _linear_pairs_truth(conv_transpose, SQUARE)),
        "output-listed-twice": (twice, operator_norm(twice, [1, 4])),
        "input-as-output": (with_input, operator_norm(with_input, [1, 4])),
        "reshape-to-own-shape": (reshape_to_own_shape, operator_norm(reshape_to_own_shape, [1, 4])),
        "nonzero-count": (count, math.inf),
        "tiny-float64": (tiny64, float(np.linalg.norm(tiny / 1e-160, 2)) * 1e-160),
    }


MAPPED = _mapped_cases()


@pytest.mark.parametrize("case", sorted(MAPPED))
def test_a_figure_never_depends_on_the_in_memory_limit(tmp_path: Path, case: str) -> None:
    proto, truth = MAPPED[case]
    path = _save_external(proto, tmp_path)
    whole = run_audit(path, tmp_path)
    mapped = run_audit(path, tmp_path, in_memory_limit=1)
    for outcome in (whole, mapped):
        assert_sound(outcome, truth, allow_error=False)
    assert mapped.network["upper_bound"] == whole.network["upper_bound"]
    assert mapped.network["certified"] == whole.network["certified"]


# ----------------------------------------------------------------------------- aten converters, no verification


class _Wrapper(torch.nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _save_torch(fn: Callable, shape, directory: Path, kind: str) -> Path:
    module = _Wrapper(fn).eval()
    example = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "pt":
            path = directory / "model.pt"
            torch.jit.save(torch.jit.trace(module, example, check_trace=False), str(path))
        elif kind == "pt2":
            path = directory / "model.pt2"
            torch.export.save(torch.export.export(module, (example,)), str(path))
        else:
            path = directory / "model.onnx"
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return path


def _autograd_truth(fn: Callable, shape, samples: int = 6) -> float:
    """max σ_max of the float64 Jacobian at random points (a lower bound for piecewise-smooth maps)."""
    generator = torch.Generator().manual_seed(0)
    best = 0.0
    for _ in range(samples):
        x = torch.randn(*shape, generator=generator, dtype=torch.float64) * 2
        jac = torch.autograd.functional.jacobian(lambda z: fn(z).reshape(-1), x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jac, 2)))
    return best


def _near_pairs_truth(fn: Callable, shape, count: int = 300) -> float:
    """max ‖f(x) − f(y)‖/‖x − y‖ over close pairs: unbounded for a map whose output order jumps."""
    generator = torch.Generator().manual_seed(0)
    best = 0.0
    with torch.no_grad():
        for _ in range(count):
            x = torch.randn(*shape, generator=generator)
            y = x + 1e-3 * torch.randn(*shape, generator=generator)
            best = max(best, float((fn(x) - fn(y)).norm() / (x - y).norm()))
    return best


_MIX = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
_KERNEL = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(2))


def _conv(x):
    return F.conv2d(x, _KERNEL.to(x.dtype), padding=1)


ATEN = {
    "topk-unsorted": (lambda x: torch.topk(x @ _MIX.to(x.dtype), 3, dim=1, sorted=False).values, (1, 6)),
    "topk-smallest": (lambda x: torch.topk(x @ _MIX.to(x.dtype), 3, dim=1, largest=False).values, (1, 6)),
    "topk-axis-0": (lambda x: torch.topk((x @ _MIX.to(x.dtype)).reshape(3, 2), 2, dim=0).values, (1, 6)),
    "rsub-alpha": (lambda x: torch.rsub(x, 2.0 * x.sum(), alpha=3.0), (1, 6)),
    "rsub-alpha-tensor": (lambda x: torch.rsub(x * 0.1, x, alpha=5.0), (1, 6)),
    "sub-alpha": (lambda x: torch.sub(x * 0.1, x, alpha=5.0), (1, 6)),
    "add-negative-alpha": (lambda x: torch.add(x * 0.1, x, alpha=-5.0), (1, 6)),
    "nearest-1.5": (lambda x: F.interpolate(_conv(x), scale_factor=1.5, mode="nearest"), (1, 1, 4, 5)),
    "nearest-0.6": (lambda x: F.interpolate(_conv(x), scale_factor=0.6, mode="nearest"), (1, 1, 4, 5)),
    "nearest-2.5x1.3": (lambda x: F.interpolate(_conv(x), scale_factor=(2.5, 1.3), mode="nearest"), (1, 1, 4, 5)),
    "nearest-exact-1.5": (lambda x: F.interpolate(_conv(x), scale_factor=1.5, mode="nearest-exact"), (1, 1, 4, 5)),
    "nearest-size": (lambda x: F.interpolate(_conv(x), size=(7, 3), mode="nearest"), (1, 1, 4, 5)),
    "bilinear-1.5": (
        lambda x: F.interpolate(_conv(x), scale_factor=1.5, mode="bilinear", align_corners=False),
        (1, 1, 4, 5),
    ),
    "bilinear-1.7-corners": (
        lambda x: F.interpolate(_conv(x), scale_factor=1.7, mode="bilinear", align_corners=True),
        (1, 1, 4, 5),
    ),
    "bilinear-recomputed-scale": (
        lambda x: F.interpolate(_conv(x), scale_factor=1.5, mode="bilinear", recompute_scale_factor=True),
        (1, 1, 4, 5),
    ),
    "bicubic-1.5": (
        lambda x: F.interpolate(_conv(x), scale_factor=1.5, mode="bicubic", align_corners=False),
        (1, 1, 4, 5),
    ),
    "bilinear-antialias": (
        lambda x: F.interpolate(_conv(x), scale_factor=0.4, mode="bilinear", antialias=True),
        (1, 1, 4, 5),
    ),
    "area-0.5": (lambda x: F.interpolate(_conv(x), scale_factor=0.5, mode="area"), (1, 1, 4, 5)),
}


@pytest.mark.parametrize("kind", ["pt", "pt2"])
@pytest.mark.parametrize("case", sorted(ATEN))
def test_aten_converters_without_verification(tmp_path: Path, case: str, kind: str) -> None:
    fn, shape = ATEN[case]
    # sorted=False leaves the order to the backend: the truth is the saved program's pairs and Jacobians
    truth = max(_autograd_truth(fn, shape), _near_pairs_truth(fn, shape)) if case == "topk-unsorted" else None
    path = _save_torch(fn, shape, tmp_path, kind)
    assert_sound(run_audit(path, tmp_path, verify=False), truth if truth is not None else _autograd_truth(fn, shape))


# ----------------------------------------------------------------------------- norm scaling


def _float64(nodes, constants, shape=(1, 4)) -> onnx.ModelProto:
    return model(nodes, [("x", DOUBLE, list(shape))], [("y", DOUBLE, list(shape))], constants)


def _scaled_cases() -> dict[str, tuple[onnx.ModelProto, float, list]]:
    rng = np.random.default_rng(6)
    tiny, huge, cancel = rng.normal(size=[4, 4]) * 1e-160, rng.normal(size=[4, 4]) * 1e150, rng.normal(size=[4, 4])
    kernel = rng.normal(size=[1, 1, 3, 3])
    matmul = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    conv = [helper.make_node("Conv", ["x", "K"], ["y"], pads=[1, 1, 1, 1])]
    chain = [helper.make_node("Mul", ["x", "a"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["y"])]
    small_conv = [1, 1, 8, 8]
    return {
        "matmul-1e-160": (_float64(matmul, {"W": tiny}), float(np.linalg.norm(tiny / 1e-160, 2)) * 1e-160, [1, 4]),
        "matmul-1e150": (_float64(matmul, {"W": huge}), float(np.linalg.norm(huge / 1e150, 2)) * 1e150, [1, 4]),
        "scale-1e-160-then-1e160": (
            _float64(chain, {"a": np.array(1e-160), "W": cancel * 1e160}),
            float(np.linalg.norm(cancel, 2)),
            [1, 4],
        ),
        "conv-1e-160": (_float64(conv, {"K": kernel * 1e-160}, small_conv), None, small_conv),
        "conv-1e150": (_float64(conv, {"K": kernel * 1e150}, small_conv), None, small_conv),
    }


SCALED = _scaled_cases()


def _scaled_truth(case: str) -> float:
    proto, truth, shape = SCALED[case]
    if truth is not None:
        return truth
    scale = 1e-160 if "1e-160" in case else 1e150
    weight = onnx.numpy_helper.to_array(proto.graph.initializer[0]) / scale
    unit = model(
        [helper.make_node("Conv", ["x", "K"], ["y"], pads=[1, 1, 1, 1])],
        [("x", FLOAT, shape)],
        [("y", FLOAT, shape)],
        {"K": weight.astype(np.float32)},
    )
    return operator_norm(unit, shape) * scale * (1 - 1e-6)  # the runtime's own Jacobian, rescaled


@pytest.mark.parametrize("case", sorted(SCALED))
def test_tiny_and_huge_float64_weights_without_verification(tmp_path: Path, case: str) -> None:
    proto = SCALED[case][0]
    assert_sound(run_audit(proto, tmp_path, verify=False), _scaled_truth(case), allow_error=False)


def test_huge_float64_weights_pass_the_default_verification(tmp_path: Path) -> None:
    proto = SCALED["matmul-1e150"][0]
    outcome = run_audit(proto, tmp_path)
    assert outcome.error is None, outcome.describe()
    assert_sound(outcome, _scaled_truth("matmul-1e150"))


def test_a_figure_that_overflows_is_not_certified(tmp_path: Path) -> None:
    chain = [helper.make_node("Mul", ["x", "a"], ["h"]), helper.make_node("Mul", ["h", "a"], ["y"])]
    proto = _float64(chain, {"a": np.array(1e200)})
    assert_sound(run_audit(proto, tmp_path, verify=False), math.inf)


# ----------------------------------------------------------------------------- contradictions


def test_a_lower_bound_above_the_upper_bound_exits_2(tmp_path: Path) -> None:
    """relu(x + 3e7) in float32: the runtime rounds x + 3e7 to even numbers, so two inputs achieve a
    ratio above lipaudit's real-arithmetic figure; the run must exit 2 with both figures."""
    nodes = [helper.make_node("Add", ["x", "b"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])], {"b": np.full([1, 4], 3e7, np.float32)})
    done = _cli(str(save(proto, tmp_path)), "--lower-bound", "--samples", "4", "--format", "json")
    assert done.exit_code == 2, (done.exit_code, done.output[-300:])
    message = done.output
    assert '"certified"' not in done.stdout  # no report, so no certified figure
    assert "lower bound" in message and "upper bound" in message
    figures = [float(word) for word in message.replace(",", " ").split() if word[:1].isdigit()]
    assert len(figures) >= 2 and max(figures) > min(figures)


# ----------------------------------------------------------------------------- determinism


def _small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return x + self.b(torch.relu(self.a(x)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.block = nn.Conv2d(3, 8, 3, padding=1), Block(8)
            self.down, self.fc = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            x = self.block(torch.relu(self.stem(x)))
            return self.fc(torch.relu(self.down(x)).flatten(1))

    return Net().eval()


def _figures_by_setting(tmp_path: Path) -> dict[str, float]:
    module = _small_resnet()
    example = torch.randn(1, 3, 16, 16)
    paths = {"onnx": tmp_path / "m.onnx", "pt": tmp_path / "m.pt", "pt2": tmp_path / "m.pt2"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(paths["onnx"]), dynamo=False, opset_version=17, input_names=["x"])
        torch.jit.save(torch.jit.trace(module, example), str(paths["pt"]))
        torch.export.save(torch.export.export(module, (example,)), str(paths["pt2"]))
    figures = {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            figures[f"threads={count}"] = run_audit(paths["onnx"], tmp_path, verify=False).network["upper_bound"]
    finally:
        torch.set_num_threads(threads)
    for kind, path in paths.items():
        figures[kind] = run_audit(path, tmp_path, verify=False).network["upper_bound"]
    done = _cli(str(paths["onnx"]), "--no-verify", "--workers", "2", "--format", "json")
    figures["workers=2"] = json.loads(done.stdout)["network"]["upper_bound"]
    return figures


@pytest.mark.slow  # three exports, five audits and two worker processes: minutes on a loaded machine
def test_the_figure_is_the_same_for_threads_workers_and_formats(tmp_path: Path) -> None:
    """Issue 18: equal to 1e-9 relative for 1 or N threads, --workers N, and ONNX/.pt/.pt2 twins."""
    figures = _figures_by_setting(tmp_path)
    reference = figures["onnx"]
    assert all(abs(v - reference) <= 1e-9 * reference for v in figures.values()), figures


@pytest.mark.slow
def test_the_work_budget_bounds_the_recursion_on_two_slices(tmp_path: Path) -> None:
    import time

    proto = _two_paths("two-slices-of-one-axis")
    path = save(proto, tmp_path)
    started = time.perf_counter()
    product = run_audit(path, tmp_path, verify=False, bound="product")
    product_seconds = time.perf_counter() - started
    started = time.perf_counter()
    recursion = run_audit(path, tmp_path, verify=False)
    recursion_seconds = time.perf_counter() - started
    assert_sound(recursion, math.sqrt(2), allow_error=False)
    assert_sound(product, math.sqrt(2), allow_error=False)
    assert recursion_seconds <= 3 * product_seconds + 5.0, (recursion_seconds, product_seconds)


@pytest.mark.parametrize("moved", ["transpose", "slice-flip"])
@pytest.mark.parametrize("mix", ["conv-1x1", "reduce-sum"])
def test_a_permutation_stacked_on_channels_then_mixed(tmp_path: Path, moved: str, mix: str) -> None:
    """Concat([x, P x], channels) then a channel map with weights (1, −1): x − P x through the stack."""
    moves, constants = BRANCH_MOVES[moved][0]
    if mix == "conv-1x1":
        tail = [helper.make_node("Conv", ["c", "W"], ["y"])]
        constants = {**constants, "W": np.array([1, -1], np.float32).reshape(1, 2, 1, 1)}
        stacked = ["x", "p"]
    else:
        tail = [helper.make_node("ReduceSum", ["c", "channel"], ["y"], keepdims=1)]
        moves = [*moves, helper.make_node("Mul", ["p", "minus_one"], ["q"])]
        constants = {**constants, "minus_one": np.float32(-1), "channel": _ints(1)}
        stacked = ["x", "q"]
    nodes = [*moves, helper.make_node("Concat", stacked, ["c"], axis=1), *tail]
    proto = model(nodes, [("x", FLOAT, SQUARE)], [("y", FLOAT, SQUARE)], constants)
    x = np.random.default_rng(8).normal(size=SQUARE)
    x = x - (np.swapaxes(x, -1, -2) if moved == "transpose" else x[..., ::-1])  # P x = −x
    truth = pair_ratio(runtime_function(proto), x, np.zeros(SQUARE))
    assert truth == pytest.approx(2.0, rel=1e-5)
    assert_sound(run_audit(proto, tmp_path), truth, allow_error=False)
