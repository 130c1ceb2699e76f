"""Branch and bound over blocks: Lanczos, the Cholesky certificates, and the engine's modes."""

import pytest
import torch

from lipaudit.spectral import bnb
from lipaudit.spectral.bnb import (
    BNB_TOL,
    certify_below,
    lanczos_top,
    matrix_source,
    max_singular_value,
    rounding_margin,
    screen_below,
)


def random_blocks(count, m, n, seed=0, complex_=True, decay=None):
    """A batch of matrices; ``decay`` gives block b the scale decay**b (a peaked spectrum over blocks)."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randn(count, m, n, generator=generator, dtype=torch.float64)
    if complex_:
        blocks = torch.complex(blocks, torch.randn(count, m, n, generator=generator, dtype=torch.float64))
    if decay is not None:
        blocks = blocks * (decay ** torch.arange(count, dtype=torch.float64))[:, None, None]
    return blocks


def exact(blocks):
    return float(torch.linalg.svdvals(blocks)[:, 0].max())


def gram_of(blocks):
    return blocks @ blocks.mH


# ------------------------------------------------------------------ kernels


def test_lanczos_is_a_lower_estimate_that_converges():
    gram = gram_of(random_blocks(6, 40, 60, seed=1))
    top = torch.linalg.eigvalsh(gram)[:, -1]
    previous = torch.zeros(6, dtype=torch.float64)
    for steps in (2, 5, 10, 40):
        theta, vectors = lanczos_top(gram, steps)
        assert torch.all(theta <= top * (1 + 1e-10))
        assert torch.all(theta >= previous * (1 - 1e-10))
        previous = theta
        torch.testing.assert_close(torch.linalg.vector_norm(vectors, dim=-1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(theta, top, rtol=1e-9, atol=0)


def test_lanczos_survives_an_invariant_subspace_and_zero_blocks():
    gram = torch.zeros(3, 5, 5, dtype=torch.float64)
    gram[0] = torch.diag(torch.tensor([4.0, 1.0, 0.0, 0.0, 0.0]))
    gram[1] = torch.eye(5) * 2.0
    theta, _ = lanczos_top(gram, 10)
    torch.testing.assert_close(theta, torch.tensor([4.0, 2.0, 0.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_cholesky_certificate_decides_exactly_and_leaves_the_gram_untouched():
    gram = gram_of(random_blocks(8, 12, 20, seed=2))
    before = gram.clone()
    top = torch.linalg.eigvalsh(gram)[:, -1]
    assert torch.all(certify_below(gram, top * (1 + 1e-9)))
    assert not torch.any(certify_below(gram, top * (1 - 1e-9)))
    assert torch.equal(gram, before)  # restored bit for bit
    mixed = torch.where(torch.arange(8) % 2 == 0, top * 1.01, top * 0.99)
    assert torch.equal(certify_below(gram, mixed), torch.arange(8) % 2 == 0)


@pytest.mark.parametrize("n", [16, 64, 200])
def test_single_precision_screen_never_certifies_a_block_above_the_threshold(n):
    gram = gram_of(random_blocks(10, n, n + 7, seed=n))
    top = torch.linalg.eigvalsh(gram)[:, -1]
    trace = gram.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    frobenius = torch.linalg.matrix_norm(gram, ord="fro")
    for ratio in (0.999999, 0.99, 0.9):
        mu = float(top.max()) * ratio
        ok = screen_below(gram, mu, trace, frobenius)
        assert not torch.any(ok & (top > mu)), ratio
    # far below the threshold everything passes
    assert torch.all(screen_below(gram, float(top.max()) * 1.5, trace, frobenius))


def test_rounding_margin_is_at_least_the_project_margin_and_grows_with_size():
    assert rounding_margin(4, 4) == bnb.PROJECT_MARGIN
    assert rounding_margin(10**5, 10**5, 9) > rounding_margin(10**4, 10**4, 9) > bnb.PROJECT_MARGIN


# ------------------------------------------------------------------ the engine


@pytest.mark.parametrize(
    "shape, complex_",
    [
        ((40, 24, 24), True),
        ((30, 48, 20), True),
        ((25, 20, 70), False),
        ((12, 3, 5), True),
        ((60, 1, 9), True),
        ((9, 6, 1), False),
    ],
)
def test_every_mode_bounds_the_maximum_and_bnb_matches_exact_within_its_tolerance(shape, complex_):
    blocks = random_blocks(*shape, seed=sum(shape), complex_=complex_)
    truth = exact(blocks)
    source = matrix_source(blocks)
    results = {mode: max_singular_value(source, mode) for mode in ("bnb", "exact", "gram", "frobenius")}
    for mode, result in results.items():
        assert result.upper >= truth, mode
        assert result.lower <= truth * (1 + 1e-9), mode
    assert results["exact"].upper == pytest.approx(truth * (1 + results["exact"].margin), rel=1e-12)
    assert results["bnb"].upper <= truth * (1 + BNB_TOL) * (1 + results["bnb"].margin) * (1 + 1e-12)
    assert results["gram"].upper <= truth * (1 + 1e-5)
    assert results["frobenius"].upper >= results["gram"].upper * (1 - 1e-12)
    # the best block and a unit right singular vector for it
    best = results["bnb"]
    block = blocks[best.argmax]
    assert float(torch.linalg.vector_norm(block @ best.vector.to(block.dtype))) == pytest.approx(best.lower, rel=1e-6)


def test_clustered_maxima_across_blocks_are_still_resolved_within_tolerance():
    # Every block has nearly the same top singular value: nothing can be pruned cheaply and the
    # Lanczos estimates must be sharpened for the Cholesky tests to pass.
    base = random_blocks(1, 64, 64, seed=3)[0]
    u, s, vh = torch.linalg.svd(base)
    s[0] = s[1] * (1 + 1e-7)  # a tiny gap at the top of each block
    perturb = 1 + 1e-6 * torch.arange(50, dtype=torch.float64)
    blocks = torch.stack([(u * (s * p)) @ vh for p in perturb])
    truth = exact(blocks)
    result = max_singular_value(matrix_source(blocks), "bnb")
    assert truth <= result.upper <= truth * (1 + BNB_TOL) * (1 + result.margin) * (1 + 1e-12)
    assert result.argmax is not None and result.lower >= truth * (1 - 1e-5)


def test_peaked_spectra_are_pruned_by_the_cheap_bounds():
    blocks = random_blocks(200, 16, 16, seed=4, decay=0.8)
    result = max_singular_value(matrix_source(blocks), "bnb")
    assert result.stats.get("pruned: Frobenius/Gram", 0) > 150
    assert result.upper >= exact(blocks)
    assert result.argmax == 0


def test_chunked_equals_unchunked(monkeypatch):
    blocks = random_blocks(90, 40, 56, seed=5)
    whole = {mode: max_singular_value(matrix_source(blocks), mode) for mode in ("bnb", "exact", "gram")}
    monkeypatch.setattr(bnb, "WORK_CHUNK_BYTES", 1)  # one block per chunk
    for mode, result in whole.items():
        chunked = max_singular_value(matrix_source(blocks), mode)
        tolerance = 1e-12 if mode == "exact" else 2 * BNB_TOL if mode == "bnb" else 1e-6
        assert chunked.upper == pytest.approx(result.upper, rel=tolerance), mode
        assert chunked.upper >= exact(blocks)


def test_zero_blocks_and_unknown_modes():
    zero = torch.zeros(4, 3, 5, dtype=torch.float64)
    for mode in ("bnb", "exact", "gram", "frobenius"):
        assert max_singular_value(matrix_source(zero), mode).upper == 0.0
    with pytest.raises(ValueError, match="unknown block mode"):
        max_singular_value(matrix_source(zero), "svd")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_engine_on_cuda_matches_the_cpu():
    blocks = random_blocks(40, 48, 64, seed=6)
    for mode in ("bnb", "exact", "gram", "frobenius"):
        on_cpu = max_singular_value(matrix_source(blocks), mode).upper
        on_gpu = max_singular_value(matrix_source(blocks.cuda()), mode).upper
        assert on_gpu == pytest.approx(on_cpu, rel=2 * BNB_TOL)
        assert on_gpu >= exact(blocks)
