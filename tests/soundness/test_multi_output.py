"""Class 4: every output of a multi-output node is bounded by its own rule, or the node is reported.

An output without a rule (MaxPool's Indices, LayerNormalization's Mean and InvStdDev, Dropout's
mask, BatchNormalization's training outputs, TopK's indices…) must never inherit the first output's factor.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.soundness._oracle import (
    FLOAT,
    INT64,
    assert_no_certified_figure,
    assert_sound,
    fd_jacobian_norm,
    max_pair_ratio,
    model,
    operator_norm,
    run_audit,
    runtime_function,
)


def _argmax_swap_pair(shape, delta=1e-3):
    """Two points δ apart on which the argmax of the first 2×2 window (and of the first row) swaps."""
    x = np.zeros(shape)
    x.flat[0], x.flat[1] = delta / 2, -delta / 2
    y = x.copy()
    y.flat[0], y.flat[1] = -delta / 2, delta / 2
    return x, y


@pytest.mark.parametrize("cast", [True, False])
def test_maxpool_indices_are_a_step_function(tmp_path: Path, cast: bool) -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2])]
    if cast:
        nodes.append(helper.make_node("Cast", ["idx"], ["y"], to=FLOAT))
        outputs = [("y", FLOAT, [1, 1, 2, 2])]
    else:
        outputs = [("idx", INT64, [1, 1, 2, 2])]
    proto = model(nodes, [("x", FLOAT, [1, 1, 4, 4])], outputs)
    jump = max_pair_ratio(runtime_function(proto), [_argmax_swap_pair((1, 1, 4, 4))])
    assert jump > 100
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), math.inf)


def test_maxpool_values_and_indices_together(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Cast", ["idx"], ["i"], to=FLOAT),
    ]
    proto = model(nodes, [("x", FLOAT, [1, 1, 4, 4])], [("p", FLOAT, [1, 1, 2, 2]), ("i", FLOAT, [1, 1, 2, 2])])
    assert max_pair_ratio(runtime_function(proto), [_argmax_swap_pair((1, 1, 4, 4))]) > 100
    assert_sound(run_audit(proto, tmp_path, verify=False), math.inf)


def test_torch_exported_maxpool_with_indices(tmp_path: Path) -> None:
    """torch.onnx.export of max_pool2d(return_indices=True): the ONNX MaxPool gets an Indices output."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class PoolWithIndices(nn.Module):
        def forward(self, x):
            values, indices = nn.functional.max_pool2d(x, 2, return_indices=True)
            return values + indices.float()

    path = tmp_path / "pool_indices.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(PoolWithIndices(), (torch.randn(1, 1, 4, 4),), str(path), dynamo=False, opset_version=17)
    import onnx

    proto = onnx.load(str(path))
    assert max_pair_ratio(runtime_function(proto), [_argmax_swap_pair((1, 1, 4, 4))]) > 100
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, verify=verify), math.inf)


def _layer_norm(outputs: list[str], graph_outputs):
    node = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], outputs, axis=-1, epsilon=1.0)
    return model(
        [node],
        [("x", FLOAT, [1, 4])],
        graph_outputs,
        {"gamma": np.full(4, 1e-3, np.float32), "beta": np.zeros(4, np.float32)},
    )


def test_layernorm_mean_output(tmp_path: Path) -> None:
    """Mean = (Σx)/4 is linear with norm 1/2, however small γ makes the normalised output."""
    proto = _layer_norm(["normalised", "mean"], [("mean", FLOAT, [1, 1])])
    truth = operator_norm(proto, [1, 4])
    assert truth == pytest.approx(0.5, rel=1e-6)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth)


def test_layernorm_inv_std_dev_output(tmp_path: Path) -> None:
    """InvStdDev = (var + ε)^(-1/2): slope σ/(√n·(σ²+ε)^(3/2)), about 0.19 at σ² = ε/2 (n = 4, ε = 1)."""
    proto = _layer_norm(["normalised", "mean", "inv_std"], [("inv_std", FLOAT, [1, 1])])
    a = math.sqrt(0.5)
    truth = fd_jacobian_norm(runtime_function(proto), np.array([[a, -a, a, -a]]), eps=1e-3)
    assert truth == pytest.approx(math.sqrt(0.5) / (2 * 1.5**1.5), rel=1e-2)
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=1e-2)


def test_dropout_mask_in_training_mode_is_random(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Dropout", ["x", "ratio", "training"], ["d", "mask"]),
        helper.make_node("Cast", ["mask"], ["y"], to=FLOAT),
    ]
    proto = model(
        nodes,
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 4])],
        {"ratio": np.array(0.5, np.float32), "training": np.array(True)},
    )
    for verify in (None, False):
        assert_no_certified_figure(run_audit(proto, tmp_path, verify=verify))


def test_dropout_mask_in_inference_mode_is_constant(tmp_path: Path) -> None:
    """In inference the mask is all true: y = x and the mask add nothing beyond 1."""
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"]), helper.make_node("Cast", ["mask"], ["m"], to=FLOAT)]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4]), ("m", FLOAT, [1, 4])])
    truth = operator_norm(proto, [1, 4])
    assert truth == pytest.approx(1.0)
    assert_sound(run_audit(proto, tmp_path), truth)


def _batchnorm_parameters(channels: int = 2):
    return {
        "scale": np.ones(channels, np.float32),
        "bias": np.zeros(channels, np.float32),
        "mean": np.zeros(channels, np.float32),
        "var": np.ones(channels, np.float32),
    }


def test_batchnorm_with_training_outputs_before_opset_14(tmp_path: Path) -> None:
    """Opsets 9–13 mark training by the extra outputs: Y is normalised by the batch's own statistics."""
    node = helper.make_node(
        "BatchNormalization",
        ["x", "scale", "bias", "mean", "var"],
        ["y", "running_mean", "running_var", "saved_mean", "saved_var"],
        epsilon=1e-5,
    )
    proto = model([node], [("x", FLOAT, [2, 2, 3, 3])], [("y", FLOAT, [2, 2, 3, 3])], _batchnorm_parameters(), opset=12)
    point = np.random.default_rng(0).normal(size=(2, 2, 3, 3)) * 1e-2
    truth = fd_jacobian_norm(runtime_function(proto), point, eps=1e-4)
    assert truth > 10  # ≈ 1/σ_batch: the inference formula's 1/√(1 + ε) is far off
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=1e-2)


@pytest.mark.parametrize("output", ["y", "running_mean"])
def test_batchnorm_training_mode_outputs(tmp_path: Path, output: str) -> None:
    node = helper.make_node(
        "BatchNormalization",
        ["x", "scale", "bias", "mean", "var"],
        ["y", "running_mean", "running_var"],
        epsilon=1e-5,
        training_mode=1,
    )
    shape = {"y": [2, 2, 3, 3], "running_mean": [2]}[output]
    proto = model([node], [("x", FLOAT, [2, 2, 3, 3])], [(output, FLOAT, shape)], _batchnorm_parameters(), opset=15)
    point = np.random.default_rng(0).normal(size=(2, 2, 3, 3)) * 1e-2
    truth = fd_jacobian_norm(runtime_function(proto), point, eps=1e-4)
    assert truth > 0
    for verify in (None, False):
        assert_sound(run_audit(proto, tmp_path, verify=verify), truth, slack=1e-2)


def test_topk_indices_are_a_step_function(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["values", "indices"]),
        helper.make_node("Cast", ["indices"], ["y"], to=FLOAT),
    ]
    proto = model(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 2])], {"k": np.array([1], np.int64)})
    assert max_pair_ratio(runtime_function(proto), [_argmax_swap_pair((1, 4))]) > 100
    assert_sound(run_audit(proto, tmp_path, verify=False), math.inf)


def test_topk_values_are_one_lipschitz(tmp_path: Path) -> None:
    proto = model(
        [helper.make_node("TopK", ["x", "k"], ["y", "indices"])],
        [("x", FLOAT, [1, 4])],
        [("y", FLOAT, [1, 2])],
        {"k": np.array([2], np.int64)},
    )
    truth = fd_jacobian_norm(runtime_function(proto), np.array([[3.0, -1.0, 2.0, 0.5]]), eps=1e-3)
    assert truth == pytest.approx(1.0, rel=1e-3)
    assert_sound(run_audit(proto, tmp_path, verify=False), truth, slack=1e-3)


def test_split_outputs_each_keep_their_entries(tmp_path: Path) -> None:
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1)]
    proto = model(
        nodes,
        [("x", FLOAT, [1, 6])],
        [("a", FLOAT, [1, 1]), ("b", FLOAT, [1, 2]), ("c", FLOAT, [1, 3])],
        {"sizes": np.array([1, 2, 3], np.int64)},
    )
    truth = operator_norm(proto, [1, 6])
    assert truth == pytest.approx(1.0)
    assert_sound(run_audit(proto, tmp_path), truth)


@pytest.mark.parametrize("name", ["max_pool_indices", "max_dim_indices", "native_layer_norm_rstd", "var_mean_var"])
def test_torchscript_multi_output_ops(tmp_path: Path, name: str) -> None:
    """The aten ops with several outputs, traced and saved: an index or a variance is never bounded by 1."""
    torch = pytest.importorskip("torch")
    from torch import nn

    functions = {
        "max_pool_indices": (lambda x: nn.functional.max_pool2d(x, 2, return_indices=True)[1].float(), (1, 1, 4, 4)),
        "max_dim_indices": (lambda x: torch.max(x, dim=1)[1].float(), (1, 4)),
        "native_layer_norm_rstd": (lambda x: torch.native_layer_norm(x, [4], None, None, 1.0)[2], (1, 4)),
        "var_mean_var": (lambda x: torch.var_mean(x, dim=1)[0], (1, 4)),
    }
    fn, shape = functions[name]

    class Wrapper(nn.Module):
        def forward(self, x):
            return fn(x)

    path = tmp_path / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(Wrapper(), torch.randn(*shape), check_trace=False), str(path))

    def f(x):
        with torch.no_grad():
            return fn(torch.as_tensor(np.asarray(x, np.float32))).double().numpy().ravel()

    if name == "native_layer_norm_rstd":
        a = math.sqrt(0.5)
        truth = fd_jacobian_norm(f, np.array([[a, -a, a, -a]]), eps=1e-3)
        slack = 1e-2
    elif name == "var_mean_var":
        truth = math.inf  # a variance grows quadratically
        slack = 0.0
    else:
        assert max_pair_ratio(f, [_argmax_swap_pair(shape)]) > 100
        truth, slack = math.inf, 0.0
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, verify=verify), truth, slack=slack)
