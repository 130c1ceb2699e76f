"""The largest singular value over many matrices (frequency blocks), certified, by branch and bound.

The question for a convolution's circulant is max_b σ_max(K_b) over thousands of blocks K_b.
Most blocks cannot be the maximum, and a cheap certified upper bound shows it; only the few that
could still beat the best lower estimate get real work.  Per block, cheapest first:

  1. Frobenius  ‖K‖_F ≥ σ_max, and one Gram step ‖G‖_F^{1/2} ≥ σ_max with G = K Kᴴ (or KᴴK, the
     smaller side) — for convolutions both come for every block at once from the kernel's
     autocorrelation (blocks.py), before any block or Gram matrix is formed.  The first lower
     estimate is the largest row or column norm (‖K e_j‖ ≤ σ_max).
  2. Lanczos on G for a few candidates: a Ritz value θ ≤ λ_max(G) = σ_max² (an estimate).
  3. Cholesky certificate: μ·I − G is positive definite  ⇔  λ_max(G) < μ.  With μ = (L·(1+tol))²,
     L the best lower estimate over all blocks so far, one batched Cholesky (n³/3, cheaper than
     one more Gram step) decides "this block is within tol of the maximum, or below it".  A
     single-precision Cholesky at a slightly lower, rigorously derived threshold (screen_below)
     settles the blocks well below μ first, at about half the cost.
  4. Blocks whose Cholesky fails are above the threshold: Lanczos on them raises L and the test
     is repeated; what still fails after a longer run gets a full Hermitian eigensolver.

A block is pruned at step 1 once its bound is ≤ L·(1+tol).  Every block ends with a
certified figure (Frobenius, Gram, √μ or √λ_max); the result is their maximum, so it is a
certified bound whatever the lower estimates were, and it exceeds max_b σ_max by at most a factor
(1 + tol) (and the rounding margin) because every figure used is ≤ L·(1+tol) or exact.

Rounding (all certified work is float64, unit roundoff u = 2⁻⁵³).  For a block with n = the
smaller side, m = the inner dimension and r = min(m, n):
  * G is computed with |Ĝ − KKᴴ| ≤ γ_m |K||K|ᴴ entrywise, so ‖Ĝ − KKᴴ‖₂ ≤ γ_m‖K‖_F² ≤ γ_m·r·σ_max²;
  * Cholesky that runs to completion on A = μI − Ĝ gives R̂ᴴR̂ = A + ΔA with
    ‖ΔA‖₂ ≤ γ_{n+1}/(1 − γ_{n+1})·tr(A) ≤ ~(n+1)·n·u·μ (Demmel 1989; Higham, Thm 10.5), so
    λ_max(Ĝ) ≤ μ·(1 + ~(n+1)·n·u); Hermitian eigensolvers are backward stable to ~n²·u·‖G‖;
  * when G is assembled from the kernel's autocorrelation (blocks.py), each entry is a sum of
    ≤ m·taps + Δ products of kernel entries and phasors, so |Ĝ − G| ≤ γ_{m+taps+10}·Σ|W_t||W_t'|ᵀ,
    whose norm is ≤ taps·‖W‖_F² ≤ taps·r·σ_max² (Parseval: some frequency has ‖K‖_F ≥ ‖W‖_F);
  * a block formed directly carries the error of its DFT, ≲ (taps + 8)·u·√(taps·r)·σ_max.
``rounding_margin`` adds these up with a factor 16 to spare (complex arithmetic, square roots);
below ~10⁴ rows it is far under the project-wide 1e-6, which is what we then apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

# Relative tolerance of the branch and bound: the result is within (1 + BNB_TOL) of the exact
# maximum (before the rounding margin).
BNB_TOL = 1e-6
LANCZOS_SHORT = 20
LANCZOS_LONG = 80
# Blocks per chunk that get Lanczos before the first Cholesky test.
CANDIDATES = 8
# From this Gram side on, a single-precision Cholesky screen runs before the double one, unless
# its rigorous slack (it must test ~slack below μ) makes it pointless.
SCREEN_SIDE = 32
SCREEN_MAX_SLACK = 0.05
# Lanczos checks its convergence every this many steps.
CHECK_EVERY = 4
# Below this smaller side, a batched eigensolver is as cheap as Lanczos + Cholesky.
EIGEN_SIDE = 16
# Memory for one chunk of blocks and all the work on it (blocks, Gram, Cholesky, Lanczos basis).
WORK_CHUNK_BYTES = 384 * 2**20
UNIT_ROUNDOFF = 2.0**-53
PROJECT_MARGIN = 1e-6


def rounding_margin(n: int, m: int, taps: int = 1, floor: float = PROJECT_MARGIN) -> float:
    """Relative margin on σ_max covering the float64 rounding of the certified figures (see above),
    at least ``floor``."""
    r = min(n, m)
    rel = 16 * UNIT_ROUNDOFF * ((n + 2) ** 2 + (m + taps + 10) * taps * r + (taps + 8) * math.sqrt(taps * r))
    return max(floor, rel)


@dataclass
class BlockSource:
    """Blocks K_b to take the maximum over, known through what the bounds need.

    ``gram(index)``: the Gram matrices on the smaller side, (len, side, side), K Kᴴ when ``left``
    else KᴴK, complex128 or float64, for flat block indices (int64, on ``device``).
    ``profile()``: (‖K_b‖_F, ‖G_b‖_F^{1/2} or None, a lower estimate of σ_max(K_b)) for every
    block, on the CPU; the first two are certified upper bounds (rounding allowed for).
    ``block(i)``: block i itself (m, n), for singular vectors.  ``taps``: how many kernel taps
    were summed into each entry (for the rounding margin).
    """

    count: int
    shape: tuple[int, int]
    left: bool
    gram: Callable[[Tensor], Tensor]
    profile: Callable[[], tuple[Tensor, Tensor | None, Tensor]]
    block: Callable[[int], Tensor]
    device: torch.device
    taps: int = 1


# From this side on, Gram matrices of explicit matrices are formed tile by tile (below).
TILED_GRAM_SIDE = 1024


def gram_matrix(blocks: Tensor, left: bool) -> Tensor:
    """K Kᴴ (left) or KᴴK of a batch, computing only the lower triangle's tiles when large.

    The Gram product is the whole cost of certifying a big dense layer; the lower triangle is
    all Cholesky reads, so 4×4 tiles need 10 of the 16 products (the upper ones are copies).
    """
    x = blocks.mH if left else blocks  # G = xᴴ x
    side = x.shape[-1]
    if side < TILED_GRAM_SIDE:
        return x.mH @ x
    edges = [side * i // 4 for i in range(5)]
    gram = x.new_empty((x.shape[0], side, side))
    for i in range(4):
        rows = slice(edges[i], edges[i + 1])
        for j in range(i + 1):
            cols = slice(edges[j], edges[j + 1])
            tile = x[..., rows].mH @ x[..., cols]
            gram[:, rows, cols] = tile
            if i != j:
                gram[:, cols, rows] = tile.mH
    return gram


def matrix_source(matrices: Tensor) -> BlockSource:
    """A BlockSource over an explicit batch of matrices (b, m, n), real or complex."""
    m, n = matrices.shape[-2:]
    left = m <= n

    def gram(index: Tensor) -> Tensor:
        return gram_matrix(matrices[index], left)

    def profile() -> tuple[Tensor, None, Tensor]:
        squares = matrices.real**2 + matrices.imag**2 if matrices.is_complex() else matrices**2
        rows, cols = squares.sum(-1).amax(-1), squares.sum(-2).amax(-1)
        return squares.sum((-2, -1)).sqrt().cpu(), None, torch.maximum(rows, cols).sqrt().cpu()

    return BlockSource(matrices.shape[0], (m, n), left, gram, profile, lambda i: matrices[i], matrices.device)


@dataclass
class BlockMax:
    """max_b σ_max(K_b): a certified ``upper`` (margin applied), a ``lower`` estimate, and where."""

    upper: float
    lower: float
    argmax: int | None = None
    vector: Tensor | None = None  # a right singular vector estimate of the best block
    stats: dict[str, int] = field(default_factory=dict)
    margin: float = PROJECT_MARGIN

    def summary(self) -> str:
        parts = [f"{v} {k}" for k, v in self.stats.items() if v]
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Batched kernels


def start_vectors(batch: int, n: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> Tensor:
    """The same fixed pseudo-random unit start vector for every block (drawn on the CPU)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        v = torch.complex(v, torch.randn(n, generator=generator, dtype=torch.float64))
    v = (v / torch.linalg.vector_norm(v)).to(device=device, dtype=dtype)
    return v.expand(batch, n).clone()


def lanczos_top(gram: Tensor, steps: int, start: Tensor | None = None, tol: float = 0.0) -> tuple[Tensor, Tensor]:
    """Top Ritz value and vector of each Hermitian positive semidefinite matrix in a batch.

    Plain Lanczos (three-term recurrence, no reorthogonalisation: we only need the top Ritz
    value, which converges first, and a lost orthogonality only repeats converged values),
    at most ``steps`` matrix-vector products, fewer once the top Ritz value of every matrix moved
    by less than ``tol`` (relative) over the last CHECK_EVERY steps.  θ ≤ λ_max up to rounding
    (Cauchy interlacing; Paige's analysis in finite precision): a lower *estimate*, never a bound.
    Returns (θ (B,) float64, Ritz vectors (B, n) of unit length).
    """
    batch, n, _ = gram.shape
    k = max(1, min(steps, n))
    q = start_vectors(batch, n, gram.dtype, gram.device) if start is None else start.to(gram.dtype)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-300)
    basis = gram.new_zeros((batch, k, n))
    alpha = torch.zeros((batch, k), dtype=torch.float64, device=gram.device)
    beta = torch.zeros((batch, max(k - 1, 0)), dtype=torch.float64, device=gram.device)
    scale = gram.diagonal(dim1=-2, dim2=-1).real.sum(-1).clamp_min(1e-300)  # tr G ≥ λ_max
    previous = torch.zeros_like(q)
    last_theta = None
    for j in range(k):
        basis[:, j] = q
        w = (gram @ q.unsqueeze(-1)).squeeze(-1)
        a = (q.conj() * w).sum(-1).real
        alpha[:, j] = a
        if j == k - 1:
            break
        if tol > 0 and j % CHECK_EVERY == CHECK_EVERY - 1:
            theta = _top_ritz(alpha[:, : j + 1], beta[:, :j])
            if last_theta is not None and bool(((theta - last_theta) <= tol * theta).all()):
                k = j + 1
                break
            last_theta = theta
        w = w - a[:, None].to(w.dtype) * q
        if j > 0:
            w = w - beta[:, j - 1, None].to(w.dtype) * previous
        # one local reorthogonalisation against q keeps α honest at no real cost
        w = w - (q.conj() * w).sum(-1, keepdim=True) * q
        b = torch.linalg.vector_norm(w, dim=-1)
        alive = b > 1e-13 * scale
        beta[:, j] = torch.where(alive, b, 0.0)
        previous, q = q, torch.where(alive[:, None], w / b.clamp_min(1e-300)[:, None], 0.0)
    alpha, beta, basis = alpha[:, :k], beta[:, : k - 1], basis[:, :k]
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    top = vectors[:, :, -1].to(basis.dtype)
    ritz = (basis.transpose(1, 2) @ top.unsqueeze(-1)).squeeze(-1)
    ritz = ritz / torch.linalg.vector_norm(ritz, dim=-1, keepdim=True).clamp_min(1e-300)
    return values[:, -1].clamp_min(0.0), ritz


def _top_ritz(alpha: Tensor, beta: Tensor) -> Tensor:
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return torch.linalg.eigvalsh(tridiagonal)[:, -1]


def certify_below(gram: Tensor, mu: Tensor | float) -> Tensor:
    """True where μ·I − G is (numerically) positive definite, i.e. λ_max(G) < μ up to rounding.

    Works in place on ``gram`` (negated, shifted, then restored bit for bit: the diagonal is
    saved and the negation is exact), so a chunk of Gram matrices is never copied.  Only the
    lower triangle is read (LAPACK/cuSOLVER convention), so the certified matrix is the
    Hermitian one that triangle defines; the rounding analysis in the module docstring is for it.
    """
    mu = torch.as_tensor(mu, dtype=torch.float64, device=gram.device).expand(gram.shape[0])
    diagonal = gram.diagonal(dim1=-2, dim2=-1)
    saved = diagonal.clone()
    gram.neg_()
    diagonal.add_(mu[:, None].to(gram.dtype))
    try:
        _, info = torch.linalg.cholesky_ex(gram)
    finally:
        gram.neg_()
        diagonal.copy_(saved)
    return info == 0


def screen_slack(n: int) -> float:
    """Roughly how far below μ (relative) screen_below must test an n×n block: c·n."""
    u = 2.0**-24
    gamma = 2 * (n + 1) * u / (1 - 2 * (n + 1) * u)
    return gamma * n / max(1e-300, 1 - gamma)


def screen_below(gram: Tensor, mu: float, trace: Tensor, frobenius: Tensor) -> Tensor:
    """A cheaper test in single precision: True only where λ_max(G) ≤ μ is certain.

    The float64 Gram matrix Ĝ is rounded to single precision (|ΔG| ≤ u₃₂|Ĝ|, so ‖ΔG‖₂ ≤
    u₃₂‖Ĝ‖_F) and Cholesky runs on A = μ₃₂·I − G₃₂.  If it completes, A + E = RᴴR with
    ‖E‖₂ ≤ c·tr(A), c = γ_{2(n+1)}/(1 − γ_{2(n+1)}) in single precision (Demmel; the factor 2 for
    complex arithmetic), so λ_max(Ĝ) ≤ μ₃₂ + u₃₂(‖Ĝ‖_F + μ₃₂ + tr Ĝ) + c·(1+u₃₂)·(n·μ₃₂ − (1−u₃₂)·tr Ĝ).
    We pick μ₃₂ per block so that the right-hand side is ≤ μ.  ``trace`` and ``frobenius`` are
    tr Ĝ and an upper bound on ‖Ĝ‖_F per block.  For n = 64 the threshold is ~0.05 % below μ,
    for n = 512 ~3 %; blocks closer to μ than that go to the float64 test.
    """
    n = gram.shape[-1]
    u = 2.0**-24
    gamma = 2 * (n + 1) * u / (1 - 2 * (n + 1) * u)
    c = gamma * (1 + u) / (1 - gamma)
    numerator = mu - u * (frobenius + trace) + c * (1 - u) * trace
    mu32 = numerator / (1 + u + c * n) * (1 - 4 * u)
    single = gram.to(torch.complex64 if gram.is_complex() else torch.float32)
    diagonal = single.diagonal(dim1=-2, dim2=-1)
    single.neg_()
    diagonal.add_(mu32.to(device=gram.device, dtype=single.real.dtype)[:, None].to(single.dtype))
    _, info = torch.linalg.cholesky_ex(single)
    return (info == 0) & (mu32.to(info.device) > 0)


# ---------------------------------------------------------------------------------------------
# The engine


class _Best:
    """The best lower estimate so far, where it came from, and its top eigenvector of G."""

    def __init__(self) -> None:
        self.value = 0.0
        self.index: int | None = None
        self.vector: Tensor | None = None  # eigenvector of the block's Gram matrix
        self.left = False

    def offer(self, values: Tensor, indices: Tensor, vectors: Tensor | None, left: bool) -> None:
        """values: σ estimates (CPU); vectors: the Gram eigenvectors they came from (or None)."""
        if values.numel() == 0:
            return
        top = int(torch.argmax(values))
        value = float(values[top])
        if value > self.value:
            self.value, self.index, self.left = value, int(indices[top]), left
            self.vector = None if vectors is None else vectors[top].detach().clone()


def _work_chunk(source: BlockSource) -> int:
    m, n = source.shape
    side = min(m, n)
    per_block = 16 * (min(m * n, 2 * side * side) + 3 * side * side + (LANCZOS_LONG + 4) * side)
    return max(1, WORK_CHUNK_BYTES // per_block)


def max_singular_value(source: BlockSource, mode: str = "bnb", *, tol: float = BNB_TOL) -> BlockMax:
    """max over the source's blocks of σ_max, certified.

    mode 'bnb': the branch and bound above, within (1 + tol) of the exact maximum.
    mode 'exact': every block through the eigensolver (the reference the branch and bound is
    checked against).  mode 'gram': Gram iteration per block, blocks dropped once their bound is
    below the best lower estimate (1+tol).  mode 'frobenius': the largest Frobenius norm.
    ``vector`` of the result is a unit right singular vector estimate of the best block.
    """
    if mode not in ("bnb", "exact", "gram", "frobenius"):
        raise ValueError(f"unknown block mode {mode!r}")
    m, n = source.shape
    side = min(m, n)
    margin = rounding_margin(side, max(m, n), source.taps)
    stats: dict[str, int] = {"blocks": source.count}
    if source.count == 0 or side == 0:
        return BlockMax(0.0, 0.0, None, None, stats, margin)
    frobenius, gram_figure, lower = source.profile()
    best = _Best()
    best.offer(lower, torch.arange(source.count), None, False)
    if mode == "frobenius":
        return BlockMax(float(frobenius.max()) * (1 + margin), best.value, best.index, None, stats, margin)
    if side == 1:
        # A single row or column: its Frobenius norm is its singular value.
        top = int(torch.argmax(frobenius))
        block = source.block(top)
        vector = block[0].conj() if m == 1 else torch.ones(1, dtype=block.dtype, device=block.device)
        vector = vector / torch.linalg.vector_norm(vector).clamp_min(1e-300)
        stats["exact: rank one"] = source.count
        value = float(frobenius[top])
        return BlockMax(value * (1 + margin), value, top, vector, stats, margin)

    threshold = lambda: best.value * (1 + tol)  # noqa: E731
    certified = 0.0  # the largest certified figure of any block handled so far
    # The cheap per-block bound: Frobenius, or one Gram step where the source has it.
    cheap = frobenius if gram_figure is None else torch.minimum(frobenius, gram_figure)
    pruned = cheap <= threshold() if mode != "exact" else torch.zeros(source.count, dtype=torch.bool)
    _count(stats, "pruned: Frobenius/Gram", int(pruned.sum()))
    if pruned.any():
        certified = float(cheap[pruned].max())
    order = torch.argsort(cheap[~pruned], descending=True)
    survivors = torch.arange(source.count)[~pruned][order]
    chunk = _work_chunk(source)
    # A small first chunk: the largest blocks by Frobenius norm set the lower estimate early.
    bounds = [0, min(len(survivors), max(1, min(chunk, 64)))]
    while bounds[-1] < len(survivors):
        bounds.append(min(len(survivors), bounds[-1] + chunk))
    for start, stop in zip(bounds, bounds[1:]):
        index = survivors[start:stop]
        if mode != "exact":
            keep = cheap[index] > threshold()
            if not keep.all():
                _count(stats, "pruned: Frobenius/Gram", int((~keep).sum()))
                certified = max(certified, float(cheap[index[~keep]].max()))
                index = index[keep]
            if index.numel() == 0:
                continue
        gram, left = source.gram(index.to(source.device)), source.left
        if mode == "exact" or side <= EIGEN_SIDE:
            values = torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0.0).sqrt()
            best.offer(values.cpu(), index, None, left)
            certified = max(certified, float(values.max()))
            _count(stats, "exact: eigensolver", index.numel())
            continue
        if gram_figure is None:
            gram_bound = _frobenius_sqrt(gram).cpu()
            keep = gram_bound > threshold()
            if not keep.all():
                _count(stats, "pruned: Frobenius/Gram", int((~keep).sum()))
                certified = max(certified, float(gram_bound[~keep].max()))
                index, gram, gram_bound = index[keep], gram[keep.to(gram.device)], gram_bound[keep]
            if index.numel() == 0:
                continue
        else:
            gram_bound = gram_figure[index]
        if mode == "gram":
            certified = max(certified, _gram_refine(gram, index, left, best, tol, stats))
        else:
            certified = max(certified, _certify(gram, gram_bound, left, index, best, tol, stats))
    best_vector = _best_right_vector(source, best)
    stats = {k: v for k, v in stats.items() if v}
    return BlockMax(max(certified, best.value) * (1 + margin), best.value, best.index, best_vector, stats, margin)


def _frobenius_sqrt(gram: Tensor) -> Tensor:
    """‖G‖_F^{1/2} per matrix of a batch (one Gram step's bound on σ_max of the block)."""
    flat = torch.view_as_real(gram) if gram.is_complex() else gram
    return flat.reshape(gram.shape[0], -1).pow(2).sum(-1).sqrt().sqrt()


def _count(stats: dict[str, int], key: str, amount: int) -> None:
    stats[key] = stats.get(key, 0) + amount


def _best_right_vector(source: BlockSource, best: _Best) -> Tensor | None:
    """A unit right singular vector of the best block (its Gram eigenvector, or computed now)."""
    if best.index is None:
        return None
    block = source.block(best.index)
    vector, left = best.vector, best.left
    if vector is None:
        left = source.left
        gram = block @ block.mH if left else block.mH @ block
        vector = torch.linalg.eigh(gram)[1][:, -1]
    if left:
        vector = block.mH @ vector.to(block.dtype)
    return vector / torch.linalg.vector_norm(vector).clamp_min(1e-300)


def _certify(
    gram: Tensor, gram_bound: Tensor, left: bool, index: Tensor, best: _Best, tol: float, stats: dict[str, int]
) -> float:
    """Steps 3–5 on one chunk; returns the largest certified figure among its blocks.

    Lanczos runs first on a few candidates only (the largest Gram bounds); a single-precision
    Cholesky screen then certifies the blocks well below the threshold, the double-precision
    test the rest, and only the blocks above the threshold (the candidates for the maximum) get
    more Lanczos steps, restarted from their Ritz vectors.
    """
    # The first chunk sets the lower estimate, sharply (a failed Cholesky costs as much as ~20
    # Lanczos steps); later chunks only check their own largest blocks.
    count = CANDIDATES if best.index is None or best.vector is None else 2
    candidates = torch.argsort(gram_bound, descending=True)[:count].to(gram.device)
    values, vectors = lanczos_top(gram[candidates], LANCZOS_LONG, tol=tol / 8)
    best.offer(values.sqrt().cpu(), index[candidates.cpu()], vectors, left)
    figure = 0.0
    mu = (best.value * (1 + tol)) ** 2
    pending = torch.arange(index.numel(), device=gram.device)
    # The single-precision slack assumes a plain Cholesky; a GPU's blocked one runs through GEMMs
    # whose precision modes we do not control, so only the CPU screens in float32.
    if (
        gram.device.type == "cpu"
        and gram.shape[-1] >= SCREEN_SIDE
        and screen_slack(gram.shape[-1]) < SCREEN_MAX_SLACK
        and index.numel() > count
    ):
        trace = gram.diagonal(dim1=-2, dim2=-1).real.sum(-1).clamp_min(0.0)
        ok = screen_below(gram, mu, trace, (gram_bound**2).to(gram.device))
        if ok.any():
            _count(stats, "certified: Cholesky f32", int(ok.sum()))
            figure = math.sqrt(mu)
        pending = pending[~ok]
    starts: Tensor | None = None
    for steps in (LANCZOS_SHORT, LANCZOS_LONG, None):
        if pending.numel() == 0:
            return figure
        mu = (best.value * (1 + tol)) ** 2
        subset = gram if pending.numel() == gram.shape[0] else gram[pending]
        ok = certify_below(subset, mu)
        if ok.any():
            _count(stats, "certified: Cholesky f64", int(ok.sum()))
            figure = max(figure, math.sqrt(mu))
        pending = pending[~ok]
        if starts is not None:
            starts = starts[~ok]
        if pending.numel() == 0 or steps is None:
            break
        # Above the threshold: candidates for the maximum.  Sharpen them and test again.
        values, starts = lanczos_top(gram[pending], steps, start=starts, tol=tol / 8)
        best.offer(values.sqrt().cpu(), index[pending.cpu()], starts, left)
        _count(stats, "refined: Lanczos", pending.numel())
    if pending.numel() == 0:
        return figure
    # Still above every threshold we could set: the exact eigenvalue settles it.
    exact, eigvectors = torch.linalg.eigh(gram[pending])
    top = exact[:, -1].clamp_min(0.0)
    best.offer(top.sqrt().cpu(), index[pending.cpu()], eigvectors[:, :, -1], left)
    _count(stats, "exact: eigensolver", pending.numel())
    return max(figure, float(top.max().sqrt()))


def _gram_refine(
    gram: Tensor,
    index: Tensor,
    left: bool,
    best: _Best,
    tol: float,
    stats: dict[str, int],
    max_steps: int = 40,
    log_tol: float = 1e-8,
) -> float:
    """Gram iteration continued from G = T₂ per block, a block leaving once its bound ≤ L·(1+tol).

    In log space as in dense.gram_iteration: the bound after t squarings of G is
    ‖G^{2^t}‖_F^{1/2^{t+1}}; blocks stop on their own once a step gains less than ``log_tol``.
    """
    values, vectors = lanczos_top(gram, LANCZOS_SHORT)
    best.offer(values.sqrt().cpu(), index, vectors, left)
    frob = _frobenius_sqrt(gram) ** 2
    alive = frob > 0
    log_bound = torch.where(alive, torch.log(torch.where(alive, frob, 1.0)) / 2, -math.inf)
    g = gram / torch.where(alive, frob, 1.0)[:, None, None]
    active = torch.nonzero(alive).flatten()
    steps = 0
    for step in range(1, max_steps + 1):
        limit = math.log(best.value * (1 + tol)) if best.value > 0 else -math.inf
        active = active[log_bound[active] > limit]
        if active.numel() == 0:
            break
        h = g[active] @ g[active]  # Hermitian: GᴴG = G²
        f = torch.linalg.matrix_norm(h, ord="fro")
        safe = torch.where(f > 0, f, 1.0)
        gain = torch.log(safe) / 2.0 ** (step + 1)
        log_bound[active] = log_bound[active] + gain
        g[active] = h / safe[:, None, None]
        steps += int(active.numel())
        active = active[gain.abs() > log_tol]
    _count(stats, "Gram steps", steps)
    return float(torch.exp(log_bound.max()))
