"""Dense norms, Gram iteration, power iteration and device choice, against numpy's SVD."""

import math

import numpy as np
import pytest
import torch

from lipaudit.spectral import NormResult, dense, dense_norm, gram_iteration, power_iteration, resolve_device

METHODS = ["auto", "exact", "gram", "power", "frobenius"]


def spectral_norm(matrix) -> float:
    return float(np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)[0])


def matrix_with_spectrum(singular_values, rows, cols, seed=0):
    """U diag(s) Vᵀ with random orthonormal U, V: a matrix whose norm we know in advance."""
    rng = np.random.default_rng(seed)
    k = len(singular_values)
    u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    return (u * np.asarray(singular_values)) @ v.T


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (3, 7), (40, 40), (65, 20)])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_brackets_the_true_norm(shape, method):
    w = np.random.default_rng(sum(shape)).standard_normal(shape)
    truth = spectral_norm(w)
    result = dense_norm(w, method)
    assert isinstance(result, NormResult)
    assert result.frobenius == pytest.approx(np.linalg.norm(w), rel=1e-8)
    assert result.estimate <= truth * (1 + 1e-9)
    if method == "power":
        assert (result.method, result.certified) == ("power", False)
        assert result.value <= truth * (1 + 1e-9)
        return
    assert result.certified
    assert result.value >= truth * (1 - 1e-12)
    if method == "frobenius":
        assert result.method == "frobenius"
        assert result.value == pytest.approx(np.linalg.norm(w), rel=1e-8)
    else:
        assert result.method == ("exact" if method == "auto" else method)
        assert result.value <= truth * (1 + 2e-6)
    if result.gap is not None:
        assert result.gap >= 0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_exact_accepts_any_float_array_or_tensor(dtype):
    w = np.random.default_rng(1).standard_normal((30, 12)).astype(dtype)
    truth = spectral_norm(w)
    for weight in (w, torch.from_numpy(w)):
        value = dense_norm(weight, "exact").value
        assert truth <= value <= truth * (1 + 1e-8)


def test_auto_certifies_large_matrices_by_lanczos_and_cholesky(monkeypatch):
    monkeypatch.setattr(dense, "EXACT_SIDE_LIMIT", 8)
    for spectrum in ([5.0, 4.0, 1.0], [5.0, 5.0 - 1e-9, 5.0 - 2e-9, 1.0]):  # a gap, and a cluster at the top
        w = matrix_with_spectrum(spectrum, 20, 30)
        result = dense_norm(w, "auto")
        assert (result.method, result.certified) == ("lanczos-cholesky", True)
        assert 5.0 <= result.value <= 5.0 * (1 + 3e-6)
        assert result.estimate == pytest.approx(5.0, rel=1e-8) and result.estimate <= 5.0 * (1 + 1e-12)
        assert result.gap == pytest.approx(result.value / result.estimate - 1)


def test_batched_dense_norm_takes_the_largest_group():
    mats = np.stack([matrix_with_spectrum([s, 1.0], 12, 9, seed=i) for i, s in enumerate((2.0, 7.0, 3.0))])
    mats = torch.from_numpy(mats)
    for method in ("exact", "lanczos-cholesky", "gram", "frobenius"):
        result = dense.batched_dense_norm(mats, method)
        assert result.value >= 7.0 * (1 - 1e-12)
        if method != "frobenius":
            assert result.value <= 7.0 * (1 + 3e-6)


def test_power_converges_when_there_is_a_gap():
    w = matrix_with_spectrum([3.0, 1.5, 1.0, 0.5], 50, 40)
    result = dense_norm(w, "power")
    assert result.value == pytest.approx(3.0, rel=1e-6)
    assert result.value <= 3.0 * (1 + 1e-9)


def test_zero_matrix_has_norm_zero():
    for method in METHODS:
        assert dense_norm(np.zeros((4, 3)), method).value == 0.0


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="unknown method"):
        dense_norm(np.eye(3), "nuclear")
    with pytest.raises(ValueError, match="2-D"):
        dense_norm(np.ones(3), "exact")


# ------------------------------------------------------------------ Gram iteration


def test_gram_bound_never_rises_and_tends_to_the_norm():
    w = torch.from_numpy(matrix_with_spectrum([2.0, 1.9, 1.0, 0.3], 25, 15, seed=3))
    bounds = [float(gram_iteration(w, steps, tol=0.0)) for steps in range(12)]
    assert bounds[0] == pytest.approx(float(torch.linalg.matrix_norm(w, "fro")), rel=1e-12)
    assert all(b >= 2.0 * (1 - 1e-12) for b in bounds)
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(bounds, bounds[1:]))
    assert bounds[1] - 2.0 > 10 * (bounds[-1] - 2.0)
    assert bounds[-1] == pytest.approx(2.0, rel=1e-6)


def test_gram_handles_a_repeated_top_singular_value():
    w = torch.from_numpy(matrix_with_spectrum([1e3] * 6 + [1.0], 9, 9, seed=4))
    bound = float(gram_iteration(w))
    assert 1e3 * (1 - 1e-12) <= bound <= 1e3 * (1 + 1e-7)


def test_gram_is_batched_and_handles_complex_and_huge_entries():
    rng = np.random.default_rng(5)
    blocks = rng.standard_normal((6, 5, 8)) + 1j * rng.standard_normal((6, 5, 8))
    blocks[2] *= 1e200  # T_t would overflow after one squaring without the rescaling
    blocks[4] = 0.0
    truth = np.linalg.svd(blocks, compute_uv=False)[:, 0]
    bounds = gram_iteration(torch.from_numpy(blocks)).numpy()
    assert bounds.shape == (6,)
    np.testing.assert_allclose(bounds, truth, rtol=1e-9)
    assert bounds[4] == 0.0


# ------------------------------------------------------------------ power iteration


def test_power_iteration_is_a_deterministic_lower_estimate():
    w = torch.from_numpy(matrix_with_spectrum([4.0, 3.9, 1.0], 12, 10, seed=6))

    def run(seed, iterations=5):
        return power_iteration(lambda v: w @ v, (10,), iterations=iterations, seed=seed)

    assert run(0) == run(0)
    assert run(0) != run(1)
    assert all(run(seed) <= 4.0 * (1 + 1e-12) for seed in range(5))
    assert run(0, iterations=2000) == pytest.approx(4.0, rel=1e-6)


def test_power_iteration_of_the_zero_map_is_zero():
    assert power_iteration(lambda v: 0 * v, (3, 4)) == 0.0


# ------------------------------------------------------------------ devices


def test_cpu_and_auto_resolve_without_notice():
    assert resolve_device("cpu") == (torch.device("cpu"), None)
    assert resolve_device(" CPU ") == (torch.device("cpu"), None)
    device, notice = resolve_device("auto")
    assert notice is None
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_falls_back_to_the_cpu_with_a_notice(name):
    assert resolve_device(name) == (torch.device("cpu"), "CUDA is not available; using the CPU")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu", ""])
def test_unknown_devices_are_a_value_error(name):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dense_norm_on_cuda_matches_the_cpu():
    w = np.random.default_rng(7).standard_normal((64, 48))
    cuda = torch.device("cuda")
    for method in ("exact", "gram", "frobenius"):
        assert dense_norm(w, method, device=cuda).value == pytest.approx(dense_norm(w, method).value, rel=1e-9)
    assert math.isclose(dense_norm(torch.from_numpy(w).to(cuda), "exact").value, spectral_norm(w), rel_tol=1e-6)
