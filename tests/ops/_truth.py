"""Shared truth helpers for the rule tests: materialised operators, audits of tiny models.

Truth is built independently of lipaudit: basis vectors pushed through onnxruntime give an
operator's matrix (float32 arithmetic, float64 assembly) and numpy takes its top singular value.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest

from lipaudit import audit
from lipaudit.compose import FLOAT32_MARGIN
from tests.builders import save, session

RTOL = 1e-5  # the truth comes from float32 onnxruntime outputs
CERT_SLACK = 1e-6  # a certified factor may sit below the float32 truth by rounding only
METHODS = ("auto", "exact", "gram", "power", "frobenius")


def run_audit(model: onnx.ModelProto, directory, method: str = "auto", name: str = "model.onnx"):
    """Audit an in-memory model; shape inference first fills in the output types onnx.checker wants."""
    path = save(onnx.shape_inference.infer_shapes(model), directory, name)
    return audit(str(path), method=method)


def with_margin(value: float) -> float:
    """A certified factor of an op that does float arithmetic: the closed form plus the float32 margin."""
    return value * (1 + FLOAT32_MARGIN)


def is_closed_form(value: float, expected: float, rel: float = 1e-12) -> bool:
    """``value`` is ``expected`` itself (ops exact in float32) or with the float32 margin."""
    return value == pytest.approx(expected, rel=rel) or value == pytest.approx(with_margin(expected), rel=rel)


def top_singular_value(matrix: np.ndarray) -> float:
    """σ_max in float64: eigvalsh of the smaller Gram matrix, or Lanczos for larger operators.

    Lanczos (with full reorthogonalisation, on the sparse nonzeros of the matrix) converges to
    machine precision in a few dozen steps on these operators; its Ritz values never exceed
    λ_max, so any shortfall lies on the safe side of a "certified ≥ truth" check.
    """
    a = np.asarray(matrix, dtype=np.float64)
    m, n = a.shape
    if min(m, n) == 0:
        return 0.0
    if min(m, n) <= 500:
        gram = a.T @ a if n <= m else a @ a.T
        return math.sqrt(max(float(np.linalg.eigvalsh(gram)[-1]), 0.0))
    rows, cols = np.nonzero(a)
    vals = a[rows, cols]

    def gram_times(v):  # AᵀA v
        u = np.bincount(rows, vals * v[cols], minlength=m)
        return np.bincount(cols, vals * u[rows], minlength=n)

    steps = min(n, 120)
    basis = np.zeros((steps + 1, n))
    start = np.random.default_rng(0).normal(size=n)
    basis[0] = start / np.linalg.norm(start)
    alphas, betas = [], []
    for j in range(steps):
        w = gram_times(basis[j])
        alphas.append(float(basis[j] @ w))
        for _ in range(2):
            w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        if beta <= 1e-12 * max(abs(alphas[0]), 1e-300):
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    k = len(alphas)
    tridiagonal = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    return math.sqrt(max(float(np.linalg.eigvalsh(tridiagonal)[-1]), 0.0))


def batched_operator_matrix(model: onnx.ModelProto, input_shape, chunk: int = 1024) -> np.ndarray:
    """Like builders.operator_matrix, for ops that act on each batch item alone (Conv, pools).

    The model's batch dimension is made symbolic and the identity is pushed through in chunks.
    """
    assert input_shape[0] == 1
    batched = copy.deepcopy(model)
    batched.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for out in batched.graph.output:
        out.type.tensor_type.ClearField("shape")
    del batched.graph.value_info[:]
    run = session(batched)
    name = run.get_inputs()[0].name
    n = int(np.prod(input_shape))
    offset = run.run(None, {name: np.zeros(input_shape, np.float32)})[0].astype(np.float64).reshape(1, -1)
    columns = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        eye = np.zeros((stop - start, n), np.float32)
        eye[np.arange(stop - start), np.arange(start, stop)] = 1.0
        out = run.run(None, {name: eye.reshape(stop - start, *input_shape[1:])})[0]
        columns.append(out.astype(np.float64).reshape(stop - start, -1) - offset)
    return np.concatenate(columns, axis=0).T


def assert_equals_truth(value: float, truth: float, rtol: float = RTOL) -> None:
    assert value == pytest.approx(truth, rel=rtol, abs=1e-7), (value, truth)


def assert_certified_bound(layer, truth: float) -> None:
    assert layer.status == "bounded"
    assert layer.certified, layer.method
    assert layer.factor >= truth * (1 - CERT_SLACK), (layer.method, layer.factor, truth)


def check_all_methods(
    model, directory, truth: float, *, exact_methods=("materialized", "exact"), check_names: bool = True
) -> dict:
    """Every --method against the truth; returns {method: layer} for further checks."""
    layers = {}
    for method in METHODS:
        report = run_audit(model, directory, method, name=f"{method}.onnx")
        layer = report.layers[0]
        layers[method] = layer
        assert layer.status == "bounded"
        if method == "power":
            assert layer.method == "power"
            assert not layer.certified
            assert not report.network.certified
            assert layer.factor <= truth * (1 + RTOL), (layer.factor, truth)
            assert layer.factor >= truth * 0.5  # an estimate, but not a useless one
        else:
            assert_certified_bound(layer, truth)
            assert report.network.certified
            assert report.network.upper_bound == pytest.approx(layer.factor)
        if method in ("auto", "exact") and layer.method in exact_methods:
            assert_equals_truth(layer.factor, truth)
        if method in ("gram", "frobenius") and check_names:
            assert method in layer.method, layer.method
    return layers


def rng_array(shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def same_pads(spatial, kernel, strides, dilations, mode: str) -> list[int]:
    """Explicit pads for auto_pad SAME_UPPER / SAME_LOWER, from the ONNX operator spec."""
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends
