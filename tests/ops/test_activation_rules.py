"""Activation constants against sup |f′| computed here, and the fusion of spelled-out activations.

For each op, the reference function is written out below in torch (float64) from the ONNX
definition, checked against onnxruntime on a grid (so the reference is the op lipaudit reads),
and differentiated with autograd on a fine grid.  The factor must be at least the largest slope
found, and within 1e-3 of it: the constants in docs/design.md are sup |f′| rounded up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import helper

from tests.builders import graph_model, session, single_node_model
from tests.ops._truth import run_audit, with_margin

GRID = torch.linspace(-30.0, 30.0, 1_200_001, dtype=torch.float64)  # step 5e-5
CHECK_GRID = np.linspace(-12.0, 12.0, 4801, dtype=np.float32)

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


def f32(value: float) -> float:
    return float(np.float32(value))


def sup_slope(fn) -> float:
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    return float(grad.abs().max())


def silu(x):
    return x * torch.sigmoid(x)


def gelu_erf(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def mish(x):
    return x * torch.tanh(torch.nn.functional.softplus(x))


def softsign(x):
    return x / (1 + x.abs())


def leaky(alpha):
    return lambda x: torch.where(x >= 0, x, alpha * x)


def elu(alpha):
    return lambda x: torch.where(x > 0, x, alpha * (torch.exp(torch.clamp(x, max=0)) - 1))


def celu(alpha):
    return lambda x: torch.clamp(x, min=0) + torch.clamp(alpha * (torch.exp(torch.clamp(x, max=0) / alpha) - 1), max=0)


def hard_sigmoid(alpha, beta):
    return lambda x: torch.clamp(alpha * x + beta, 0, 1)


def shrink(lambd, bias):
    return lambda x: torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


# (op, attrs, opset, reference, expected factor)
ACTIVATIONS = [
    ("Relu", {}, 17, torch.relu, 1.0),
    ("Tanh", {}, 17, torch.tanh, 1.0),
    ("Softplus", {}, 17, torch.nn.functional.softplus, 1.0),
    ("Softsign", {}, 17, softsign, 1.0),
    ("Sigmoid", {}, 17, torch.sigmoid, 0.25),
    ("LeakyRelu", {}, 17, leaky(0.01), 1.0),
    ("LeakyRelu", {"alpha": 0.2}, 17, leaky(0.2), 1.0),
    ("LeakyRelu", {"alpha": 3.0}, 17, leaky(3.0), 3.0),
    ("LeakyRelu", {"alpha": -2.5}, 17, leaky(-2.5), 2.5),
    ("LeakyRelu", {"alpha": 1.3}, 17, leaky(f32(1.3)), 1.3),
    ("HardSigmoid", {}, 17, hard_sigmoid(f32(0.2), 0.5), 0.2),  # the default is float32 0.2 > 0.2
    # Attributes are float32: the op's slope is float32(0.7) = 0.69999998…, not 0.7.
    ("HardSigmoid", {"alpha": 0.7, "beta": 0.1}, 17, hard_sigmoid(f32(0.7), f32(0.1)), 0.7),
    ("HardSigmoid", {"alpha": -1.5, "beta": 0.5}, 17, hard_sigmoid(-1.5, 0.5), 1.5),
    ("Elu", {}, 17, elu(1.0), 1.0),
    ("Elu", {"alpha": 2.0}, 17, elu(2.0), 2.0),
    ("Elu", {"alpha": 0.5}, 17, elu(0.5), 1.0),
    ("Elu", {"alpha": 1.7}, 17, elu(f32(1.7)), 1.7),
    ("Selu", {}, 17, lambda x: SELU_GAMMA * elu(SELU_ALPHA)(x), SELU_GAMMA * SELU_ALPHA),
    ("Selu", {"alpha": 0.5, "gamma": 2.0}, 17, lambda x: 2.0 * elu(0.5)(x), 2.0),
    ("Celu", {"alpha": 2.0}, 17, celu(2.0), 1.0),
    ("Gelu", {}, 20, gelu_erf, 1.1290),
    ("Gelu", {"approximate": "tanh"}, 20, gelu_tanh, 1.1290),
    ("Mish", {}, 18, mish, 1.0886),
    ("HardSwish", {}, 14, lambda x: x * torch.clamp(x / 6 + 0.5, 0, 1), 1.5),
    ("Erf", {}, 17, torch.erf, 2 / math.sqrt(math.pi)),
    ("Abs", {}, 17, torch.abs, 1.0),
    ("Neg", {}, 17, torch.neg, 1.0),
    ("Sin", {}, 17, torch.sin, 1.0),
    ("Atan", {}, 17, torch.atan, 1.0),
    ("Asinh", {}, 17, torch.asinh, 1.0),
    ("Shrink", {"lambd": 0.5, "bias": 0.5}, 17, shrink(0.5, 0.5), 1.0),  # bias ≠ lambd jumps: unbounded
]


@pytest.mark.parametrize(
    "op,attrs,opset,reference,expected",
    ACTIVATIONS,
    ids=[f"{a[0]}{'-' + '-'.join(f'{k}{v}' for k, v in a[1].items()) if a[1] else ''}" for a in ACTIVATIONS],
)
def test_activation_constant_is_sup_of_slope(tmp_path, op, attrs, opset, reference, expected):
    model = single_node_model(op, [CHECK_GRID.size], opset=opset, **attrs)
    # The reference is the op onnxruntime runs ...
    ours = reference(torch.from_numpy(CHECK_GRID.astype(np.float64))).numpy()
    theirs = session(model).run(None, {"x": CHECK_GRID})[0].astype(np.float64)
    np.testing.assert_allclose(theirs, ours, rtol=2e-5, atol=2e-5)
    # ... and the factor is its largest slope, rounded up.
    slope = sup_slope(reference)
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.status == "bounded" and layer.certified
    assert layer.factor >= slope, (layer.factor, slope)
    assert layer.factor - slope <= 1e-3, (layer.factor, slope)
    assert layer.factor == pytest.approx(expected, abs=1e-3)


def test_known_slope_maxima():
    """Guards the grid: the sups quoted in docs/design.md."""
    assert sup_slope(gelu_erf) == pytest.approx(1.128904, abs=2e-6)
    assert sup_slope(gelu_tanh) == pytest.approx(1.128993, abs=2e-5)
    assert sup_slope(silu) == pytest.approx(1.099839, abs=2e-6)
    assert sup_slope(mish) == pytest.approx(1.088498, abs=2e-6)


@pytest.mark.parametrize(
    "slope,expected",
    [
        (np.array([0.25], np.float32), 1.0),
        (np.array([0.1, -3.0, 2.0], np.float32), 3.0),
        (np.array([[0.5], [1.75]], np.float32), 1.75),
    ],
)
def test_prelu(tmp_path, slope, expected):
    shape = [2, 3] if slope.ndim == 1 else [2, 4]
    model = single_node_model("PRelu", shape, {"slope": slope})
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.factor == pytest.approx(expected)
    # Finite differences through onnxruntime never beat it.
    x = np.random.default_rng(0).normal(size=(200, *shape)).astype(np.float32)
    run = session(model)
    for a in x:
        h = np.float32(1e-2) * np.sign(a)
        b = a - h  # moves every entry towards zero, staying on one side of the kink mostly
        diff = run.run(None, {"x": a})[0] - run.run(None, {"x": b})[0]
        assert np.linalg.norm(diff) <= layer.factor * np.linalg.norm(a - b) * (1 + 1e-4)


def test_prelu_with_variable_slope_is_unbounded(tmp_path):
    nodes = [helper.make_node("PRelu", ["x", "x"], ["y"])]
    report = run_audit(graph_model(nodes, [3], {}), tmp_path)
    assert report.layers[0].status == "unbounded"


def test_clip_is_one(tmp_path):
    model = single_node_model("Clip", [5], {"lo": np.array(-1.0, np.float32), "hi": np.array(2.0, np.float32)})
    assert run_audit(model, tmp_path).layers[0].factor == 1.0


def test_clip_with_a_variable_bound_counts_its_copies(tmp_path):
    """max(x, lo) with lo = −Σx broadcast to every entry: lo moves all n outputs at once.

    At x = (−1, …, −1) every entry is clipped to lo = 16, so along v = (1, …, 1) the output
    moves by 16·‖Δx‖: the Lipschitz constant is at least n = 16, not 1 + √n.
    """
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Neg", ["total"], ["lo"]),
        helper.make_node("Clip", ["x", "lo", ""], ["y"]),
    ]
    model = graph_model(nodes, [16], {})
    run = session(model)
    x = -np.ones(16, np.float32)
    step = np.full(16, 1e-3, np.float32)
    measured = np.linalg.norm(run.run(None, {"x": x + step})[0] - run.run(None, {"x": x})[0]) / np.linalg.norm(step)
    assert measured == pytest.approx(16.0, rel=1e-2)
    report = run_audit(model, tmp_path)
    assert report.network.upper_bound >= measured * (1 - 1e-6), (report.network.upper_bound, measured)


# ---------------------------------------------------------------------------------------------
# Softmax and LogSoftmax (not elementwise: the norm of the Jacobian)


def jacobian_norm(fn, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(fn, x)
    return float(torch.linalg.matrix_norm(jac.reshape(x.numel(), x.numel()), ord=2))


def test_softmax_is_one_half(tmp_path):
    model = single_node_model("Softmax", [2, 5], axis=-1)
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.factor == with_margin(0.5) and layer.certified

    def fn(x):
        return torch.softmax(x, dim=-1)

    rng = np.random.default_rng(0)
    worst = max(
        jacobian_norm(fn, torch.tensor(rng.normal(scale=s, size=(2, 5)))) for s in (0.1, 1, 3, 10) for _ in range(25)
    )
    assert worst <= 0.5 + 1e-12
    # Two equal entries far above the rest reach 1/2.
    peak = torch.tensor([[9.0, 9.0, -9.0, -9.0, -9.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert jacobian_norm(fn, peak) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("shape,axis,opset,n", [([2, 5], -1, 17, 5), ([2, 3, 4], 1, 17, 3), ([2, 3, 4], 1, 11, 12)])
def test_log_softmax_bounds_its_jacobian(tmp_path, shape, axis, opset, n):
    """J = I − 1pᵀ is a projection with norm √n·‖p‖ < √n: the factor must be at least √n."""
    model = single_node_model("LogSoftmax", shape, opset=opset, axis=axis)
    layer = run_audit(model, tmp_path).layers[0]
    assert layer.certified
    assert math.sqrt(n) <= layer.factor <= with_margin(math.sqrt(n)) * (1 + 1e-9)
    if opset >= 13:

        def fn(x):
            return torch.log_softmax(x, dim=axis)
    else:  # opset < 13: the input is coerced to 2-D at `axis`

        def fn(x):
            return torch.log_softmax(x.reshape(shape[0], -1), dim=1).reshape(shape)

    spike = torch.zeros(shape, dtype=torch.float64)
    spike[(0,) * len(shape)] = 40.0  # p → e₁ in the first group
    assert jacobian_norm(fn, spike) <= layer.factor
    assert jacobian_norm(fn, spike) == pytest.approx(math.sqrt(n), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Spelled-out activations are fused


def _sigmoid_gate(x_first: bool):
    mul_inputs = ["x", "s"] if x_first else ["s", "x"]
    return [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", mul_inputs, ["y"])], {}


def _gelu_half_first():  # 0.5·x, then · (1 + erf(x/√2)): Keras / HF order
    return [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["x", "half"], ["h"]),
        helper.make_node("Mul", ["h", "a"], ["y"]),
    ], {}


def _gelu_half_last():  # (x · (1 + erf(x·(1/√2)))) · 0.5: torch.onnx order, with Mul by 1/√2 and 1 + e
    return [
        helper.make_node("Mul", ["x", "inv_sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["one", "e"], ["a"]),
        helper.make_node("Mul", ["a", "x"], ["m"]),
        helper.make_node("Mul", ["half", "m"], ["y"]),
    ], {}


def _gelu_cdf_first():  # x · (0.5 · (1 + erf(x/√2))): "cdf = …; return x * cdf" (original BERT)
    return [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["a", "half"], ["cdf"]),
        helper.make_node("Mul", ["x", "cdf"], ["y"]),
    ], {}


def _softsign(one_first: bool):
    add_inputs = ["one", "a"] if one_first else ["a", "one"]
    return [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Add", add_inputs, ["d"]),
        helper.make_node("Div", ["x", "d"], ["y"]),
    ], {}


def _mish():
    return [
        helper.make_node("Softplus", ["x"], ["sp"]),
        helper.make_node("Tanh", ["sp"], ["t"]),
        helper.make_node("Mul", ["x", "t"], ["y"]),
    ], {}


def _hardswish():
    return [
        helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["g", "x"], ["y"]),
    ], {}


SCALARS = {
    "sqrt2": np.array(math.sqrt(2), np.float32),
    "inv_sqrt2": np.array(1 / math.sqrt(2), np.float32),
    "one": np.array(1.0, np.float32),
    "half": np.array(0.5, np.float32),
}

# (name, build, fused op, reference)
FUSED = [
    ("silu-x-first", lambda: _sigmoid_gate(True), "Silu", silu),
    ("silu-gate-first", lambda: _sigmoid_gate(False), "Silu", silu),
    ("gelu-half-first", _gelu_half_first, "Gelu", gelu_erf),
    ("gelu-half-last", _gelu_half_last, "Gelu", gelu_erf),
    ("gelu-cdf-first", _gelu_cdf_first, "Gelu", gelu_erf),
    ("softsign", lambda: _softsign(False), "Softsign", softsign),
    ("softsign-one-first", lambda: _softsign(True), "Softsign", softsign),
    ("mish", _mish, "Mish", mish),
    ("hardswish", _hardswish, "HardSwish", lambda x: x * torch.clamp(x / 6 + 0.5, 0, 1)),
]


@pytest.mark.parametrize(
    "name,build,fused_op,reference", [f if hasattr(f, "marks") else pytest.param(*f, id=f[0]) for f in FUSED]
)
def test_spelled_out_activation_is_fused(tmp_path, name, build, fused_op, reference):
    nodes, _ = build()
    used = {i for node in nodes for i in node.input}
    model = graph_model(nodes, [CHECK_GRID.size], {k: v for k, v in SCALARS.items() if k in used})
    # The pattern computes the activation we think it does ...
    ours = reference(torch.from_numpy(CHECK_GRID.astype(np.float64))).numpy()
    theirs = session(model).run(None, {"x": CHECK_GRID})[0].astype(np.float64)
    np.testing.assert_allclose(theirs, ours, rtol=2e-5, atol=2e-5)
    # ... and is analysed as that one op, with its constant.
    report = run_audit(model, tmp_path)
    assert [layer.op for layer in report.layers] == [fused_op]
    assert report.layers[0].status == "bounded"
    assert not report.network.unbounded
    bound = report.network.upper_bound
    assert bound is not None and report.network.certified
    slope = sup_slope(reference)
    assert slope <= bound <= slope + 1e-3


def test_gate_with_another_reader_is_not_fused(tmp_path):
    """If the Sigmoid output is used elsewhere, fusing would drop a reader: the Mul stays unbounded."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Add", ["m", "s"], ["y"]),
    ]
    report = run_audit(graph_model(nodes, [4], {}), tmp_path)
    assert "Mul" in [b.op for b in report.network.unbounded]
    assert report.network.upper_bound is None
