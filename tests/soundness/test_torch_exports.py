"""Class 6 (torch): aten ops whose extra arguments change the function must keep them or refuse.

Each module is saved twice, as lipaudit users do: torch.jit.trace + torch.jit.save, and
torch.onnx.export(dynamo=False).  The truth is the saved program's own function: the traced module
for TorchScript, onnxruntime for the ONNX file (the exporter may drop an argument; the ONNX
file's function is then what counts).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.soundness._oracle import assert_sound, max_pair_ratio, run_audit, runtime_function

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

SHAPE = (1, 4)
HALF_MIDPOINT = 1.0 + 2.0**-11  # halfway between 1 and the next float16


class Wrapper(nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _save(fn: Callable, directory: Path, kind: str) -> Path:
    module = Wrapper(fn).eval()
    example = torch.randn(*SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "torchscript":
            path = directory / "model.pt"
            torch.jit.save(torch.jit.trace(module, example, check_trace=False), str(path))
        else:
            path = directory / "model.onnx"
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return path


def _saved_function(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The saved program, run by its own runtime."""
    if path.suffix == ".onnx":
        return runtime_function(onnx.load(str(path)))
    loaded = torch.jit.load(str(path))

    def f(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.as_tensor(np.asarray(x, np.float32))).double().numpy().ravel()

    return f


def _slope_on_a_grid(f: Callable[[np.ndarray], np.ndarray]) -> float:
    """Largest secant slope of an elementwise function over [-8, 8], four entries at a time (steps of 1e-2)."""
    grid = np.linspace(-8, 8, 1600).astype(np.float32)
    values = np.concatenate([f(chunk.reshape(SHAPE)) for chunk in grid.reshape(-1, 4)])
    rounding = 4 * 2.0**-24 * (np.abs(values[1:]) + np.abs(values[:-1]))  # float32 outputs, a few ulps each
    return float(np.max((np.abs(np.diff(values)) - rounding) / np.diff(grid.astype(np.float64))))


def _check(fn: Callable, tmp_path: Path, kind: str, truth_of: Callable[[Callable], float], slack: float = 0.0) -> None:
    path = _save(fn, tmp_path, kind)
    truth = truth_of(_saved_function(path))
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, verify=verify), truth, slack=slack)


def _jump_at(point: float, width: float = 1e-4) -> Callable[[Callable], float]:
    """Truth for a function with a jump at `point`: inf when the pair across it shows one, else the grid slope."""

    def truth_of(f: Callable) -> float:
        ratio = max_pair_ratio(f, [(np.full(SHAPE, point - width), np.full(SHAPE, point + width))])
        return math.inf if ratio > 100 else _slope_on_a_grid(f)

    return truth_of


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("threshold", [0.5, -1.0])
def test_softplus_threshold_jumps(tmp_path: Path, kind: str, threshold: float) -> None:
    """torch's softplus switches to x above the threshold: a jump of log(1 + e^t) − t there."""
    _check(lambda x: F.softplus(x, beta=1.0, threshold=threshold), tmp_path, kind, _jump_at(threshold), slack=1e-3)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_softplus_with_beta(tmp_path: Path, kind: str) -> None:
    """beta = 2, threshold = 1: the jump sits at x = 1/2."""
    _check(lambda x: F.softplus(x, beta=2.0, threshold=1.0), tmp_path, kind, _jump_at(0.5), slack=1e-3)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("cast", ["half", "to_float16", "bfloat16"])
def test_low_precision_round_trips_round(tmp_path: Path, kind: str, cast: str) -> None:
    casts = {
        "half": lambda x: x.half().float(),
        "to_float16": lambda x: x.to(torch.float16).to(torch.float32),
        "bfloat16": lambda x: x.to(torch.bfloat16).float(),
    }
    midpoint = HALF_MIDPOINT if cast != "bfloat16" else 1.0 + 2.0**-8

    def truth_of(f: Callable) -> float:
        below, above = np.full(SHAPE, midpoint - 2.0**-22), np.full(SHAPE, midpoint + 2.0**-22)
        assert max_pair_ratio(f, [(below, above)]) > 100
        return math.inf

    _check(casts[cast], tmp_path, kind, truth_of)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("low, high, gain", [(-2.0, 3.0, 1.0), (-0.5, 0.5, 5.0), (1.0, 4.0, 1.0)])
def test_hardtanh_with_custom_bounds(tmp_path: Path, kind: str, low: float, high: float, gain: float) -> None:
    _check(lambda x: gain * F.hardtanh(x, low, high), tmp_path, kind, _slope_on_a_grid, slack=1e-5)


@pytest.mark.parametrize("alpha, scale, input_scale", [(1.0, 1.0, 3.0), (1.0, 4.0, 1.0), (2.0, 1.5, 2.0)])
def test_elu_with_scale_and_input_scale(tmp_path: Path, alpha: float, scale: float, input_scale: float) -> None:
    """aten::elu(x, α, scale, input_scale): slope scale on x > 0, up to scale·α·input_scale below 0."""
    _check(
        lambda x: torch.ops.aten.elu(x, alpha, scale, input_scale),
        tmp_path,
        "torchscript",
        _slope_on_a_grid,
        slack=1e-3,
    )


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_rrelu_in_eval_mode(tmp_path: Path, kind: str) -> None:
    """Eval-mode rrelu is a leaky ReLU with slope (lower + upper)/2 = 3 below 0."""
    _check(lambda x: F.rrelu(x, 2.0, 4.0, training=False), tmp_path, kind, _slope_on_a_grid, slack=1e-5)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_celu_with_a_negative_alpha(tmp_path: Path, kind: str) -> None:
    def truth_of(f: Callable) -> float:
        assert max_pair_ratio(f, [(np.full(SHAPE, -8.0), np.full(SHAPE, -8.01))]) > 1000
        return math.inf

    _check(lambda x: F.celu(x, alpha=-1.0), tmp_path, kind, truth_of)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_threshold_jumps(tmp_path: Path, kind: str) -> None:
    """F.threshold(x, 1, −5): x above 1, −5 at or below it."""
    try:
        path = _save(lambda x: F.threshold(x, 1.0, -5.0), tmp_path, kind)
    except Exception as error:  # the ONNX exporter refuses a non-zero threshold
        pytest.skip(f"{kind} export refused: {type(error).__name__}")
    assert max_pair_ratio(_saved_function(path), [(np.full(SHAPE, 0.999), np.full(SHAPE, 1.001))]) > 100
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, verify=verify), math.inf)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_dropout_forced_into_training_mode(tmp_path: Path, kind: str) -> None:
    """F.dropout(training=True) inside an eval module stays random after export."""
    path = _save(lambda x: F.dropout(x, 0.5, training=True), tmp_path, kind)
    for verify in (None, False):
        assert_sound(run_audit(path, tmp_path, verify=verify), math.inf)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", ["leaky_relu_7", "elu_neg", "selu", "hardsigmoid", "relu6", "clamp_reversed"])
def test_plain_activations_stay_sound(tmp_path: Path, kind: str, name: str) -> None:
    functions = {
        "leaky_relu_7": lambda x: F.leaky_relu(x, 7.0),
        "elu_neg": lambda x: F.elu(x, alpha=-2.0),
        "selu": F.selu,
        "hardsigmoid": F.hardsigmoid,
        "relu6": F.relu6,
        "clamp_reversed": lambda x: torch.clamp(x, min=2.0, max=1.0),
    }
    _check(functions[name], tmp_path, kind, _slope_on_a_grid, slack=1e-4)
