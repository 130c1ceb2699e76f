"""Class 8: degenerate but valid models, corrupt weights and out-of-range attributes.

Each must give a clear result: a sound figure, an "unbounded"/"unsupported" verdict with a reason,
or one clean error line (exit 2).  An "internal error" (any other exception) is a bug.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from lipaudit.cli.app import app
from tests.soundness._oracle import (
    FLOAT,
    assert_no_certified_figure,
    assert_sound,
    model,
    operator_norm,
    run_audit,
    save,
)

runner = CliRunner()


def _check_cli(path: Path, *args: str):
    return runner.invoke(app, ["check", str(path), "--color", "never", *args])


def _assert_clean_cli(result) -> None:
    """Exit 0–3, no escaped exception, no "internal error"; an error is one line plus an optional hint."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2, 3), (result.exit_code, result.output)
    assert "internal error" not in result.stderr, result.stderr
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("lipaudit: error:")]
        assert len(errors) == 1, result.stderr


# --------------------------------------------------------------------------- ε = 0 normalisations


def _normalisation(op: str, epsilon: float):
    if op == "LayerNormalization":
        return model(
            [helper.make_node(op, ["x", "g", "b"], ["y"], axis=-1, epsilon=epsilon)],
            [("x", FLOAT, [1, 4])],
            [("y", FLOAT, [1, 4])],
            {"g": np.ones(4, np.float32), "b": np.zeros(4, np.float32)},
        )
    attrs = {"num_groups": 2} if op == "GroupNormalization" else {}
    return model(
        [helper.make_node(op, ["x", "g", "b"], ["y"], epsilon=epsilon, **attrs)],
        [("x", FLOAT, [1, 2, 4])],
        [("y", FLOAT, [1, 2, 4])],
        {"g": np.ones(2, np.float32), "b": np.zeros(2, np.float32)},
        opset=21 if op == "GroupNormalization" else 17,
    )


@pytest.mark.parametrize("op", ["LayerNormalization", "InstanceNormalization", "GroupNormalization"])
def test_normalisation_with_epsilon_zero(tmp_path: Path, op: str) -> None:
    """(x − μ)/σ with nothing added to σ has no global Lipschitz constant."""
    proto = _normalisation(op, 0.0)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), math.inf)
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


def _batchnorm(var: list[float], epsilon: float, conv: bool):
    parameters = {
        "s": np.ones(2, np.float32),
        "b": np.zeros(2, np.float32),
        "mu": np.zeros(2, np.float32),
        "v": np.array(var, np.float32),
    }
    nodes = [
        helper.make_node("BatchNormalization", ["h" if conv else "x", "s", "b", "mu", "v"], ["y"], epsilon=epsilon)
    ]
    if conv:
        nodes.insert(0, helper.make_node("Conv", ["x", "w"], ["h"]))
        parameters["w"] = np.random.default_rng(0).normal(size=(2, 2, 1, 1)).astype(np.float32)
    return model(nodes, [("x", FLOAT, [1, 2, 3, 3])], [("y", FLOAT, [1, 2, 3, 3])], parameters)


@pytest.mark.parametrize("conv", [False, True])
def test_batchnorm_with_epsilon_zero_and_a_zero_variance(tmp_path: Path, conv: bool) -> None:
    """γ·(x − μ)/√0: the runtime returns ±inf/NaN; no figure can be certified."""
    proto = _batchnorm([0.0, 1.0], 0.0, conv)
    for verify in (None, False):
        assert_no_certified_figure(run_audit(proto, tmp_path, verify=verify))
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


@pytest.mark.parametrize("conv", [False, True])
def test_batchnorm_with_epsilon_zero_and_positive_variances(tmp_path: Path, conv: bool) -> None:
    proto = _batchnorm([0.25, 4.0], 0.0, conv)
    truth = operator_norm(proto, [1, 2, 3, 3])
    assert_sound(run_audit(proto, tmp_path), truth)


# --------------------------------------------------------------------------- unusual Constant nodes


@pytest.mark.parametrize("attribute, value", [("value_string", "hello"), ("value_strings", ["a", "b"])])
def test_string_constants_beside_the_network(tmp_path: Path, attribute: str, value) -> None:
    nodes = [helper.make_node("Constant", [], ["label"], **{attribute: value}), helper.make_node("Relu", ["x"], ["y"])]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])])
    assert_sound(run_audit(proto, tmp_path), 1.0)
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


def test_sparse_constant_as_a_multiplier(tmp_path: Path) -> None:
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("values", FLOAT, [2], [3.0, 5.0]), helper.make_tensor("indices", 7, [2], [0, 2]), [4]
    )
    nodes = [helper.make_node("Constant", [], ["c"], sparse_value=sparse), helper.make_node("Mul", ["x", "c"], ["y"])]
    proto = model(nodes, [("x", FLOAT, [4])], [("y", FLOAT, [4])])
    truth = operator_norm(proto, [4])
    assert truth == pytest.approx(5.0)
    assert_sound(run_audit(proto, tmp_path), truth)
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


@pytest.mark.parametrize("attribute, value, truth", [("value_float", 2.5, 2.5), ("value_floats", [1.0, -4.0], 4.0)])
def test_float_constants(tmp_path: Path, attribute: str, value, truth: float) -> None:
    nodes = [helper.make_node("Constant", [], ["c"], **{attribute: value}), helper.make_node("Mul", ["x", "c"], ["y"])]
    proto = model(nodes, [("x", FLOAT, [2])], [("y", FLOAT, [2])])
    assert operator_norm(proto, [2]) == pytest.approx(truth)
    assert_sound(run_audit(proto, tmp_path), truth)


# --------------------------------------------------------------------------- NaN / Inf in initializers


def _corrupt(case: str, bad: float):
    rng = np.random.default_rng(0)
    if case == "matmul_weight":
        weight = rng.normal(size=(4, 4)).astype(np.float32)
        weight[1, 2] = bad
        return model(
            [helper.make_node("MatMul", ["x", "corrupt_tensor"], ["y"])],
            [("x", FLOAT, [1, 4])],
            [("y", FLOAT, [1, 4])],
            {"corrupt_tensor": weight},
        )
    if case == "add_bias":
        bias = np.ones(4, np.float32)
        bias[3] = bad
        return model(
            [helper.make_node("Add", ["x", "corrupt_tensor"], ["y"])],
            [("x", FLOAT, [1, 4])],
            [("y", FLOAT, [1, 4])],
            {"corrupt_tensor": bias},
        )
    if case == "conv_weight":
        weight = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
        weight[0, 1, 1, 1] = bad
        return model(
            [helper.make_node("Conv", ["x", "corrupt_tensor"], ["y"], pads=[1, 1, 1, 1])],
            [("x", FLOAT, [1, 2, 4, 4])],
            [("y", FLOAT, [1, 2, 4, 4])],
            {"corrupt_tensor": weight},
        )
    if case == "batchnorm_var":
        var = np.ones(2, np.float32)
        var[0] = bad
        return model(
            [helper.make_node("BatchNormalization", ["x", "s", "b", "mu", "corrupt_tensor"], ["y"])],
            [("x", FLOAT, [1, 2, 3, 3])],
            [("y", FLOAT, [1, 2, 3, 3])],
            {
                "s": np.ones(2, np.float32),
                "b": np.zeros(2, np.float32),
                "mu": np.zeros(2, np.float32),
                "corrupt_tensor": var,
            },
        )
    raise AssertionError(case)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case", ["matmul_weight", "add_bias", "conv_weight", "batchnorm_var"])
def test_non_finite_initializer_is_one_clean_line_naming_it(tmp_path: Path, case: str, bad: float) -> None:
    path = save(_corrupt(case, bad), tmp_path)
    for flags in ((), ("--no-verify",)):
        result = _check_cli(path, *flags)
        _assert_clean_cli(result)
        assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
        first = result.stderr.strip().splitlines()[0]
        assert first.startswith("lipaudit: error:") and "corrupt_tensor" in first, result.stderr


# --------------------------------------------------------------------------- out-of-range attributes

CONV_WEIGHT = np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [0, 0]},
        {"strides": [-1, -1]},
        {"kernel_shape": [0, 0]},
        {"kernel_shape": [-3, -3]},
        {"dilations": [0, 0]},
        {"pads": [-1, -1, -1, -1]},
        {"group": 0},
        {"group": -1},
        {"pads": [10**9] * 4},
    ],
    ids=lambda a: "-".join(f"{k}={v[0] if isinstance(v, list) else v}" for k, v in a.items()),
)
def test_conv_attribute_out_of_range(tmp_path: Path, attrs: dict) -> None:
    proto = model(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)],
        [("x", FLOAT, [1, 1, 5, 5])],
        [("y", FLOAT, ["n", "c", "h", "w"])],
        {"w": CONV_WEIGHT},
    )
    for verify in (None, False):
        assert_no_certified_figure(run_audit(proto, tmp_path, verify=verify))
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [2, 2], "strides": [0, 0]},
        {"kernel_shape": [2, 2], "strides": [-1, -1]},
        {"kernel_shape": [0, 0]},
        {"kernel_shape": [-2, -2]},
        {"kernel_shape": [10**9, 10**9]},
        {"kernel_shape": [2, 2], "pads": [-1, -1, -1, -1]},
    ],
    ids=lambda a: "-".join(f"{k}={v[0]}" for k, v in a.items()),
)
def test_pool_attribute_out_of_range(tmp_path: Path, op: str, attrs: dict) -> None:
    proto = model(
        [helper.make_node(op, ["x"], ["y"], **attrs)],
        [("x", FLOAT, [1, 1, 5, 5])],
        [("y", FLOAT, ["n", "c", "h", "w"])],
    )
    for verify in (None, False):
        assert_no_certified_figure(run_audit(proto, tmp_path, verify=verify))
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


def test_maxpool_dilation_zero(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[0, 0])],
        [("x", FLOAT, [1, 1, 5, 5])],
        [("y", FLOAT, ["n", "c", "h", "w"])],
    )
    for verify in (None, False):
        assert_no_certified_figure(run_audit(proto, tmp_path, verify=verify))


def test_constant_node_without_a_value(tmp_path: Path) -> None:
    """onnx.checker lets a Constant with no attribute through; onnxruntime refuses it."""
    nodes = [helper.make_node("Constant", [], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])])
    assert_no_certified_figure(run_audit(proto, tmp_path))
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


def test_initializer_whose_dims_disagree_with_its_data(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"bias": np.ones(4, np.float32)},
    )
    proto.graph.initializer[0].dims[:] = [3]  # 4 values stored: onnx.checker only checks "too small"
    assert_no_certified_figure(run_audit(proto, tmp_path))
    _assert_clean_cli(_check_cli(save(proto, tmp_path, "cli.onnx")))


def test_layernorm_axis_out_of_range_does_not_crash_the_process(tmp_path: Path) -> None:
    """axis = 2³¹ with the Mean output used: onnx shape inference segfaults on it (exit 139), so this
    runs the CLI in a subprocess; lipaudit must validate before handing the model to native code."""
    import subprocess
    import sys

    proto = model(
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean"], axis=2**31)],
        [("x", FLOAT, [2, 4])],
        [("mean", FLOAT, [2, 1])],
        {"g": np.ones(4, np.float32), "b": np.zeros(4, np.float32)},
    )
    path = save(proto, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "lipaudit", "check", str(path), "-f", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1, 2, 3), f"exit status {done.returncode}: {done.stderr[-500:]}"
    assert "internal error" not in done.stderr, done.stderr


@pytest.mark.parametrize("spelling", ["add", "where", "where-constant-node"])
@pytest.mark.parametrize("box", [None, "x=-1:1"], ids=["global", "domain"])
def test_minus_infinity_added_before_a_softmax_is_a_mask(tmp_path: Path, box, spelling) -> None:
    """−∞ in a weight that reaches a Softmax only through an Add or a Where's branch is an
    attention mask, as the ONNX exporters write a causal one (the legacy one as an Add of an
    initializer or a Where of a Constant node, dynamo as a Where of an initializer): those
    entries' probabilities are 0 and do not move."""
    closed = np.array([[False, True, False, True, False]])
    if spelling == "add":
        nodes = [helper.make_node("Add", ["x", "mask"], ["s"])]
        weights = {"mask": np.where(closed, -np.inf, 0.0).astype(np.float32)}
    else:
        nodes = [helper.make_node("Where", ["closed", "mask", "x"], ["s"])]
        weights = {"closed": closed}
        minus_infinity = np.array(-np.inf, np.float32)
        if spelling == "where":
            weights["mask"] = minus_infinity
        else:
            value = numpy_helper.from_array(minus_infinity, "mask")
            nodes.insert(0, helper.make_node("Constant", [], ["mask"], value=value))
    proto = model(
        [*nodes, helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
        [("x", FLOAT, [1, 5])],
        [("y", FLOAT, [1, 5])],
        weights,
    )
    outcome = run_audit(proto, tmp_path, input_range=[box] if box else None)
    assert outcome.network["upper_bound"] is not None, outcome.network
    # the softmax of the three open entries: its Jacobian diag(p) − ppᵀ peaks at 1/2 (p = (½, ½, 0))
    assert_sound(outcome, 0.5 if box is None else _softmax_sup_on_box(3, 1.0), allow_error=False)


@pytest.mark.parametrize("form", ["value", "sparse_value"])
def test_a_constant_node_holding_nan_is_one_clean_line_naming_it(tmp_path: Path, form: str) -> None:
    """A Constant node is a weight like an initializer: NaN in one, dense or sparse, is refused by
    name (it used to reach the SVD, whose failure to converge leaked out)."""
    value = numpy_helper.from_array(np.array([[1.0, np.nan], [0.5, 2.0]], np.float32), "w")
    if form == "sparse_value":
        values = numpy_helper.from_array(np.array([1.0, np.nan], np.float32), "w")
        indices = numpy_helper.from_array(np.array([0, 1], np.int64), "w_indices")
        value = helper.make_sparse_tensor(values, indices, [2, 2])
    constant = helper.make_node("Constant", [], ["w"], **{form: value})
    proto = model(
        [constant, helper.make_node("MatMul", ["x", "w"], ["y"])],
        [("x", FLOAT, [1, 2])],
        [("y", FLOAT, [1, 2])],
        {},
    )
    result = _check_cli(save(proto, tmp_path, "nan_constant.onnx"))
    _assert_clean_cli(result)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "lipaudit: error: the weight 'w' holds NaN or Inf values"


def _softmax_sup_on_box(n: int, radius: float) -> float:
    """The largest ‖diag(p) − ppᵀ‖₂ found at points of [−radius, radius]ⁿ (a lower bound of the truth)."""
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(2000):
        z = rng.uniform(-radius, radius, size=n)
        p = np.exp(z - z.max())
        p /= p.sum()
        best = max(best, float(np.linalg.norm(np.diag(p) - np.outer(p, p), 2)))
    return best
