"""The multipliers by a primal-dual interior-point method (docs/design.md ('Semidefinite bound') §4b).

For programs small enough, instead of the first-order method of optimise.py, the program itself,

    minimise ρ  subject to  W(ρ, λ) = −M(ρ, λ) ⪰ 0,  λ ≥ 0,

is solved to a duality gap.  W is affine in x = (ρ, λ): W = −BᵀB + ρE_xᵀE_x + Σ_i λ_i W_i with
W_i = ½(p_i q_iᵀ + q_i p_iᵀ), p_i and q_i the rows of P = E − D_αA and Q = E − D_βA.  The dual has
Z ⪰ 0 (n × n) and s ≥ 0 with tr(E_x Z) = 1 and tr(W_i Z) + s_i = 0; for a dual-feasible (Z, s) the
gap tr(WZ) + λ·s is ρ minus a lower bound on the optimum.  Each iteration linearises WZ = σμI and
λ∘s = σμ with ΔZ symmetrised (the HKM direction); eliminating ΔZ and Δs leaves

    Σ_b [tr(W_a K W_b Z) + δ_ab s_a/λ_a] Δx_b = σμ (tr(W_a K) + 1/λ_a) − c_a,       K = W⁻¹, c = e_ρ,
    ΔZ = σμK − Z − sym(K ΔW Z),      Δs = σμ/λ − s − (s/λ)∘Δλ,

and every tr(W_a K W_b Z) comes from the Gram matrices PKPᵀ, QKQᵀ, PKQᵀ and the same with Z
(``Program.schur``): O(n³) per iteration, no loop over the multipliers.  σ is Mehrotra's, (μ_aff/μ)³
from the predictor (σ = 0), whose second-order terms correct the step; each step goes a fraction
STEP_TO_BOUNDARY of the way to the boundary of W ≻ 0, λ > 0 (primal) and Z ≻ 0, s > 0 (dual).

The primal iterate is strictly feasible from the start (the first-order method's feasible
multipliers) to the end, so the certificate (certify.py) sees a point strictly inside; the iterations
stop on the gap (with the dual residual's share) below GAP·ρ, so the figure is the optimum's to that
tolerance and moves continuously with the weights.  Neurons with α_i = β_i (linear: W_i = p_i p_iᵀ ⪰ 0,
an equality constraint) would take λ_i to infinity; their multipliers stay at EQUALITY_WEIGHT times
the start.  Deterministic: fixed iteration rules, a cap from the caller's budget, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .matrix import Blocks

GAP = 1e-7  # stop when the gap bound on ρ − ρ* is this fraction of ρ
STEP_TO_BOUNDARY = 0.95
STALL = 4  # iterations without a better gap bound (rounding now undoes the progress) before stopping
EQUALITY_WEIGHT = 1e3
BACKTRACKS = 30
LANCZOS = 24  # Lanczos steps for a step's distance to the boundary
# Iterations a program is expected to take (13 to 34 on the digits nets of bench/sdp.py): the cost
# model's multiple of one iteration when choosing between this and the first-order method.
EXPECTED_ITERATIONS = 30


def iteration_cost(n0: int, neurons: int, curved: int) -> float:
    """Floating-point operations of one iteration: W⁻¹ and the Cholesky checks of the new W and Z
    (about 2n³), five n × n products (K·ΔW, K·ΔW·Z twice, the corrector's ΔW·ΔZ: 10n³), the Gram
    matrices of W⁻¹ and Z and the corrector's traces (A·k: 2Nn² each, A·k·Aᵀ: 2N²n), and the Schur
    system's Cholesky factorisation."""
    n = n0 + neurons
    return 12.0 * n**3 + 6.0 * neurons * n**2 + 4.0 * neurons**2 * n + neurons**3 / 3 + 2.0 * curved * n**2


@dataclass
class Solution:
    lam: np.ndarray  # multipliers in the program's scaled units
    rho: float  # the last iterate's ρ (W(ρ, λ) ≻ 0)
    iterations: int
    converged: bool
    earlier: tuple[np.ndarray, ...]  # earlier iterates' λ, latest first (further inside: the certificate's fallback)


class Program:
    """W(ρ, λ) = −M(ρ, λ) and the traces the method needs, in torch float64, the output divided by ``scale``."""

    def __init__(self, blocks: Blocks, scale: float):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
        pre, out = blocks.full()
        out = out / scale
        self.n0 = blocks.input_dim
        self.pre = t(pre)
        self.gram = t(out.T @ out)
        self.alpha, self.beta = t(blocks.alpha), t(blocks.beta)
        self.mid = (self.alpha + self.beta) / 2
        product = blocks.alpha * blocks.beta
        self.curved = torch.from_numpy(np.flatnonzero(product != 0))
        self.ab = t(product)[self.curved]
        self.pre_c = self.pre[self.curved]
        self.any_alpha = bool(np.any(blocks.alpha != 0))

    def matrix(self, rho: float, lam: Tensor) -> Tensor:
        """W = −BᵀB + ρE_xᵀE_x + EᵀΛE − (EᵀΛD_sA + AᵀD_sΛE) + AᵀΛD_αD_βA (matrix.py's M, negated)."""
        w = -self.gram.clone()
        n0 = self.n0
        w.diagonal()[:n0] += rho
        w.diagonal()[n0:] += lam
        half = (lam * self.mid)[:, None] * self.pre
        w[n0:] -= half
        w[:, n0:] -= half.T
        if len(self.curved):
            w += self.pre_c.T @ ((lam[self.curved] * self.ab)[:, None] * self.pre_c)
        return w

    def factor(self, rho: float, lam: Tensor) -> Tensor | None:
        """W's Cholesky factor, or None where W ⊁ 0 or some λ_i ≤ 0 (outside the interior)."""
        if not bool((lam > 0).all()):
            return None
        factor, info = torch.linalg.cholesky_ex(self.matrix(rho, lam))
        return None if int(info) != 0 else factor

    def grams(self, k: Tensor) -> tuple[Tensor, ...]:
        """(PkPᵀ, QkQᵀ, PkQᵀ, (kPᵀ)_x, (kQᵀ)_x, k_xx) for a symmetric n × n matrix k."""
        n0 = self.n0
        ak = self.pre @ k
        r = ak[:, n0:]  # A k Eᵀ
        big_t = ak @ self.pre.T  # A k Aᵀ
        kvv = k[n0:, n0:]
        a, b = self.alpha, self.beta
        b_r = b[:, None] * r
        g_qq = kvv - b_r - b_r.T + (b[:, None] * b[None, :]) * big_t
        x_q = k[:n0, n0:] - ak[:, :n0].T * b[None, :]
        if not self.any_alpha:  # ReLU-like: P = E
            return kvv, g_qq, kvv - b_r.T, k[:n0, n0:], x_q, k[:n0, :n0]
        a_r = a[:, None] * r
        g_pp = kvv - a_r - a_r.T + (a[:, None] * a[None, :]) * big_t
        g_pq = kvv - b_r.T - a_r + (a[:, None] * b[None, :]) * big_t
        x_p = k[:n0, n0:] - ak[:, :n0].T * a[None, :]
        return g_pp, g_qq, g_pq, x_p, x_q, k[:n0, :n0]

    @staticmethod
    def traces(grams: tuple[Tensor, ...], free: Tensor) -> Tensor:
        """(tr(E_x k), tr(W_i k) for i ∈ F) from ``grams(k)``."""
        return torch.cat([torch.trace(grams[5])[None], torch.diagonal(grams[2])[free]])

    def traces_of(self, k: Tensor, free: Tensor) -> Tensor:
        """``traces(grams(k))`` without the N × N Gram matrices: tr(W_i k) = p_iᵀ k q_i
        = k_{v_i v_i} − (α_i + β_i)(Ak)_{i v_i} + α_iβ_i (Ak)_i·A_i."""
        n0 = self.n0
        ak = self.pre @ k
        inner = torch.diagonal(k[n0:, n0:]) - 2 * self.mid * torch.diagonal(ak[:, n0:])
        inner = inner + self.alpha * self.beta * (ak * self.pre).sum(1)
        return torch.cat([torch.trace(k[:n0, :n0])[None], inner[free]])

    @staticmethod
    def schur(first: tuple[Tensor, ...], second: tuple[Tensor, ...], free: Tensor) -> Tensor:
        """tr(W_a k W_b z) over a, b ∈ {ρ} ∪ F from ``grams(k)`` and ``grams(z)`` (symmetric in a, b):
        with W_i = ½(p_i q_iᵀ + q_i p_iᵀ) each trace is a sum of four products of Gram entries."""
        k_pp, k_qq, k_pq, kx_p, kx_q, k_xx = first
        z_pp, z_qq, z_pq, zx_p, zx_q, z_xx = second
        size = 1 + len(free)
        block = (k_pq.T * z_pq + k_qq * z_pp + k_pp * z_qq + k_pq * z_pq.T) / 4
        cross = ((zx_q * kx_p).sum(0) + (zx_p * kx_q).sum(0))[free] / 2
        out = torch.empty(size, size, dtype=torch.float64)
        out[0, 0] = (k_xx * z_xx).sum()
        out[0, 1:] = cross
        out[1:, 0] = cross
        out[1:, 1:] = block[free][:, free]
        return out

    def barrier_derivatives(self, factor: Tensor, lam: Tensor, free: Tensor) -> tuple[Tensor, Tensor]:
        """(∇, ∇²) of −log det W − Σ_F log λ_i over (ρ, λ_F) at the point whose W has Cholesky ``factor``."""
        grams = self.grams(torch.cholesky_inverse(factor))
        grad = -self.traces(grams, free)
        grad[1:] -= 1 / lam[free]
        hess = self.schur(grams, grams, free)
        hess.diagonal()[1:] += 1 / lam[free] ** 2
        return grad, hess


def solve(blocks: Blocks, scale: float, lam: Tensor, rho: float, max_iterations: int) -> Solution:
    """The program from the strictly feasible (ρ, λ) (scaled units), at most ``max_iterations`` iterations."""
    program = Program(blocks, scale)
    free = torch.from_numpy(np.flatnonzero(blocks.alpha != blocks.beta))
    lam = torch.where(torch.from_numpy(blocks.alpha == blocks.beta), lam * EQUALITY_WEIGHT, lam)
    factor = program.factor(rho, lam)
    if factor is None:
        raise ArithmeticError("the interior-point method needs a strictly feasible start")
    nu = blocks.input_dim + blocks.neurons + len(free)
    # The dual start Z = K/t, s = 1/(tλ): the barrier's dual estimate at the t whose Newton decrement
    # is least here (t·e_ρ + ∇ smallest in the Hessian's inverse norm).
    grad, hess = program.barrier_derivatives(factor, lam, free)
    unit = _solver(hess)(torch.nn.functional.one_hot(torch.tensor(0), len(grad)).double())
    t = max(float(-(unit @ grad) / unit[0]), nu / max(abs(rho), 1e-300) * 1e-3)
    k = torch.cholesky_inverse(factor)
    z, s = k / t, 1 / (t * lam[free])
    z_factor, _ = torch.linalg.cholesky_ex(z)
    iterations, converged, best, stalled, history = 0, False, math.inf, 0, []
    while iterations < max_iterations:
        iterations += 1
        k_grams, z_grams = program.grams(k), program.grams(z)
        lam_f = lam[free]
        w = program.matrix(rho, lam)
        gap = float((w * z).sum() + lam_f @ s)
        mu = gap / nu
        residual = -program.traces(z_grams, free)
        residual[0] += 1.0  # c − tr(W_a Z) − s_a, c = e_ρ
        residual[1:] -= s
        # The gap bounds ρ − ρ* where the dual is feasible; its residual r adds about Σ|r_a x_a|.
        bound = gap + float((residual.abs() * torch.cat([torch.tensor([abs(rho)]), lam_f])).sum())
        if bound <= GAP * abs(rho):
            converged = True
            break
        best, stalled = (bound, 0) if bound < best else (best, stalled + 1)
        if stalled >= STALL or not math.isfinite(bound):
            break
        hess = program.schur(k_grams, z_grams, free)
        hess.diagonal()[1:] += s / lam_f
        k_trace = program.traces(k_grams, free)
        k_trace[1:] += 1 / lam_f
        step = _Step(program, free, lam, s, k, z, factor, z_factor, mu, _solver(hess), k_trace)
        predictor = step.direction(0.0)
        dx, d_lam, dw, dz, ds, _ = predictor
        a_p, a_d = step.lengths(d_lam, dw, dz, ds)
        affine = float(((w + a_p * dw) * (z + a_d * dz)).sum() + (lam_f + a_p * d_lam[free]) @ (s + a_d * ds))
        sigma = min(1.0, (max(affine, 0.0) / gap) ** 3)
        dx, d_lam, dw, dz, ds, _ = step.direction(sigma, predictor)
        a_p, a_d = step.lengths(d_lam, dw, dz, ds)
        for _ in range(BACKTRACKS):  # the Lanczos distance to the boundary can come out long
            new_factor = program.factor(rho + a_p * float(dx[0]), lam + a_p * d_lam)
            if new_factor is not None:
                break
            a_p /= 2
        else:
            break
        for _ in range(BACKTRACKS):
            new_z = z + a_d * dz
            new_z = (new_z + new_z.T) / 2
            z_factor, info = torch.linalg.cholesky_ex(new_z)
            if int(info) == 0:
                break
            a_d /= 2
        else:
            break
        history.append(lam.numpy().copy())
        rho, lam, factor = rho + a_p * float(dx[0]), lam + a_p * d_lam, new_factor
        z, s = new_z, s + a_d * ds
        k = torch.cholesky_inverse(factor)
    return Solution(lam.numpy().copy(), rho, iterations, converged, tuple(history[::-2][:2]))


@dataclass
class _Step:
    """One iteration's point (ρ aside) and the factorisations its directions share."""

    program: Program
    free: Tensor
    lam: Tensor
    s: Tensor
    k: Tensor  # W⁻¹
    z: Tensor
    factor: Tensor  # W's Cholesky factor
    z_factor: Tensor
    mu: float
    solve: Callable[[Tensor], Tensor]  # rhs ↦ (Schur system)⁻¹ rhs
    k_trace: Tensor  # tr(W_a K) (+ 1/λ_a)

    def direction(self, sigma: float, predictor=None) -> tuple[Tensor, ...]:
        """(Δx, Δλ, ΔW, ΔZ, Δs, K·ΔW) towards σμ; with Mehrotra's corrector where ``predictor`` is given."""
        free, lam_f, k, z, s, mu = self.free, self.lam[self.free], self.k, self.z, self.s, self.mu
        rhs = sigma * mu * self.k_trace
        rhs[0] -= 1.0  # c = e_ρ
        if predictor is not None:
            # The predictor's second-order terms ΔW·ΔZ and Δλ∘Δs, moved to the right-hand side.
            _, p_lam, _, p_z, p_s, p_kdw = predictor
            second = p_kdw @ p_z
            extra = -(second + second.T) / 2
            product = p_lam[free] * p_s / lam_f
            rhs = rhs + self.program.traces_of(extra, free)
            rhs[1:] -= product
        dx = self.solve(rhs)
        d_lam = torch.zeros_like(self.lam)
        d_lam[free] = dx[1:]
        dw = self.program.matrix(float(dx[0]), d_lam) + self.program.gram
        kdw = k @ dw
        kdwz = kdw @ z
        dz = sigma * mu * k - z - (kdwz + kdwz.T) / 2
        ds = sigma * mu / lam_f - s - s / lam_f * dx[1:]
        if predictor is not None:
            dz, ds = dz + extra, ds - product
        return dx, d_lam, dw, dz, ds, kdw

    def lengths(self, d_lam: Tensor, dw: Tensor, dz: Tensor, ds: Tensor) -> tuple[float, float]:
        """The primal and dual step lengths: STEP_TO_BOUNDARY of the way to the boundary, at most 1."""
        primal = min(_to_boundary(self.factor, dw), _ratio(self.lam[self.free], d_lam[self.free]))
        dual = min(_to_boundary(self.z_factor, dz), _ratio(self.s, ds))
        return min(1.0, STEP_TO_BOUNDARY * primal), min(1.0, STEP_TO_BOUNDARY * dual)


def _solver(hess: Tensor) -> Callable[[Tensor], Tensor]:
    """rhs ↦ hess⁻¹·rhs by Cholesky after a diagonal (Jacobi) scaling: the multipliers' scales differ by
    orders of magnitude and so do the system's rows near the optimum (a tiny ridge where rounding
    leaves it indefinite)."""
    d = 1 / torch.sqrt(torch.diagonal(hess))
    scaled = d[:, None] * hess * d[None, :]
    factor, info = torch.linalg.cholesky_ex(scaled)
    ridge = 1e-14
    while int(info) != 0 and ridge < 1:
        factor, info = torch.linalg.cholesky_ex(scaled + ridge * torch.eye(len(d), dtype=torch.float64))
        ridge *= 100
    return lambda rhs: d * torch.cholesky_solve((d * rhs)[:, None], factor)[:, 0]


def _to_boundary(factor: Tensor, step: Tensor) -> float:
    """The largest α with L Lᵀ + α·step ⪰ 0 (∞ where every α ≥ 0 is), L = ``factor``, from the least
    eigenvalue of L⁻¹·step·L⁻ᵀ by LANCZOS steps of the Lanczos method (full reorthogonalisation, a
    fixed start): a few matrix-vector products instead of forming the matrix and all its eigenvalues,
    which took most of an iteration.  The Ritz value lies above the least eigenvalue, so α may come
    out long; the caller's Cholesky factorisation at the new point catches that."""
    n = factor.shape[0]
    steps = min(n, LANCZOS)
    basis = torch.empty(steps + 1, n, dtype=torch.float64)
    start = torch.cos(torch.arange(n, dtype=torch.float64) * 0.7 + 0.3)  # fixed, not orthogonal to much
    basis[0] = start / start.norm()
    diagonal, off = torch.empty(steps, dtype=torch.float64), torch.zeros(steps, dtype=torch.float64)
    count = steps
    for j in range(steps):
        v = torch.linalg.solve_triangular(factor.T, basis[j, :, None], upper=True)
        v = torch.linalg.solve_triangular(factor, step @ v, upper=False)[:, 0]
        diagonal[j] = basis[j] @ v
        v = v - basis[: j + 1].T @ (basis[: j + 1] @ v)
        v = v - basis[: j + 1].T @ (basis[: j + 1] @ v)
        norm = float(v.norm())
        if j + 1 == steps or norm <= 1e-13 * float(diagonal[: j + 1].abs().max()):
            count = j + 1
            break
        off[j] = norm
        basis[j + 1] = v / norm
    tridiagonal = torch.diag(diagonal[:count]) + torch.diag(off[: count - 1], 1) + torch.diag(off[: count - 1], -1)
    least = float(torch.linalg.eigvalsh(tridiagonal)[0])
    return math.inf if least >= 0 else -1.0 / least


def _ratio(value: Tensor, step: Tensor) -> float:
    falling = step < 0
    return float((-value[falling] / step[falling]).min()) if bool(falling.any()) else math.inf
