"""The LipSDP-Neuron matrix M(ρ, λ) and its reduction to the input block (docs/design.md ('Semidefinite bound') §2–§3).

Over z = [x; v] (input, then every neuron's output) with pre-activations u = A z and output y = B z,
neuron i's slope range [α_i, β_i] gives, for any two inputs and their differences Δu, Δv,

    (Δv_i − α_i Δu_i)(β_i Δu_i − Δv_i) ≥ 0,

that is −(P Δz)_i (Q Δz)_i ≥ 0 with P = E − D_α A, Q = E − D_β A (E selects v from z).  With
multipliers λ ≥ 0 (Λ = diag λ) and ρ > 0,

    M(ρ, λ) = BᵀB − ρ E_xᵀE_x − ½(PᵀΛQ + QᵀΛP)
            = BᵀB − ρ E_xᵀE_x − EᵀΛE + (EᵀΛD_sA + AᵀD_sΛE) − Aᵀ Λ D_α D_β A,      D_s = (D_α + D_β)/2,

and M(ρ, λ) ⪯ 0 implies ‖Δy‖² ≤ ρ‖Δx‖² (the S-procedure: ΔzᵀMΔz ≤ 0 and every constraint term is
≥ 0).  Writing M + ρE_xᵀE_x = C = [[C_xx, C_xv], [C_vx, C_vv]], M ⪯ 0 holds iff −C_vv ⪰ 0 and
ρ ≥ λ_max(S(λ)) with S = C_xx + C_vxᵀ(−C_vv)⁻¹C_vx (Schur complement, where −C_vv ≻ 0): for fixed λ
the smallest feasible ρ is an eigenvalue of an n₀ × n₀ matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .network import SdpNetwork


@dataclass(frozen=True)
class Blocks:
    """A and B split into input and neuron columns, the slope ranges, and BᵀB's blocks (float64)."""

    pre_x: np.ndarray  # A_x: N × n0
    pre_v: np.ndarray  # A_v: N × N (strictly lower block-triangular)
    out_x: np.ndarray  # B_x: m × n0
    out_v: np.ndarray  # B_v: m × N
    alpha: np.ndarray
    beta: np.ndarray
    pre_bound: np.ndarray  # Â ≥ |A| (the exact A lies within γ_rounding·Â of the one here)
    out_bound: np.ndarray  # B̂ ≥ |B|, likewise
    rounding: int

    @classmethod
    def of(cls, network: SdpNetwork) -> Blocks:
        pre, out, alpha, beta = network.stacked()
        pre_bound, out_bound = network.magnitudes()
        n0 = network.input_dim
        return cls(
            pre[:, :n0], pre[:, n0:], out[:, :n0], out[:, n0:], alpha, beta, pre_bound, out_bound, network.rounding()
        )

    @property
    def input_dim(self) -> int:
        return int(self.pre_x.shape[1])

    @property
    def neurons(self) -> int:
        return int(self.pre_v.shape[0])

    def full(self) -> tuple[np.ndarray, np.ndarray]:
        """A and B over z = [x; v]."""
        return np.hstack([self.pre_x, self.pre_v]), np.hstack([self.out_x, self.out_v])


def constraint_matrix(blocks: Blocks, rho: float, lam: np.ndarray) -> np.ndarray:
    """M(ρ, λ) in float64 (the plain formula; the certificate bounds its rounding separately)."""
    pre, out = blocks.full()
    n0, n = blocks.input_dim, pre.shape[1]
    select = np.zeros((blocks.neurons, n))
    select[:, n0:] = np.eye(blocks.neurons)
    p = select - blocks.alpha[:, None] * pre
    q = select - blocks.beta[:, None] * pre
    half = p.T @ (lam[:, None] * q)
    m = out.T @ out - (half + half.T) / 2
    m[:n0, :n0] -= rho * np.eye(n0)
    return m


class SchurObjective:
    """λ ↦ the eigenvalues of S(λ) in torch float64 (differentiable), or None where −C_vv is not
    positive definite (then no ρ makes M(ρ, λ) ⪯ 0 strictly)."""

    def __init__(self, blocks: Blocks, scale: float = 1.0):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        # The output is divided by ``scale``: ρ then comes out divided by scale², λ likewise.
        with np.errstate(over="ignore"):  # past float64 the check below refuses the program
            out_x, out_v = blocks.out_x / scale, blocks.out_v / scale
        largest = max(np.abs(out_x).max(initial=0.0), np.abs(out_v).max(initial=0.0))
        if largest and not 2.0**-450 <= largest <= 2.0**450:
            # Its Gram matrices would overflow, or underflow to a program that moves less than the
            # network (weights 1e-100·1e-100 → ReLU → 1e100·1e100 scaled by the warm start).
            raise ArithmeticError("the output weights leave float64's range once squared")
        self.pre_x, self.pre_v = t(blocks.pre_x), t(blocks.pre_v)
        self.mid = t((blocks.alpha + blocks.beta) / 2)
        with np.errstate(over="ignore"):  # an inf Gram entry fails the certificate; no warning to stderr
            self.gram_xx = t(out_x.T @ out_x)
            self.gram_vx = t(out_v.T @ out_x)
            self.gram_vv = t(out_v.T @ out_v)
        product = blocks.alpha * blocks.beta
        self.curved = np.flatnonzero(product != 0)  # neurons whose AᵀΛD_αD_βA term is not zero
        self.ab = t(product[self.curved])
        self.pre_x_c, self.pre_v_c = t(blocks.pre_x[self.curved]), t(blocks.pre_v[self.curved])
        self.neurons = blocks.neurons
        self.output_scale = scale

    def blocks(self, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(C_xx, C_vx, C_vv) at λ."""
        weighted = lam * self.mid
        c_xx = self.gram_xx
        c_vx = self.gram_vx + weighted[:, None] * self.pre_x
        # gram_vv − diag(λ) + H + Hᵀ, H = diag(w)·A_v, in that order (the same floats as written out),
        # with one N × N temporary besides the result: this is memory-bound and runs every evaluation.
        half = weighted[:, None] * self.pre_v
        c_vv = self.gram_vv.clone()
        c_vv.diagonal().sub_(lam)
        c_vv = c_vv.add_(half).add_(half.T)
        if len(self.curved):
            w = (lam[self.curved] * self.ab)[:, None]
            c_xx = c_xx - self.pre_x_c.T @ (w * self.pre_x_c)
            c_vx = c_vx - self.pre_v_c.T @ (w * self.pre_x_c)
            c_vv = c_vv - self.pre_v_c.T @ (w * self.pre_v_c)
        return c_xx, c_vx, c_vv

    def eigenvalues(self, lam: Tensor) -> Tensor | None:
        found = self._reduce(lam)
        return None if found is None else found[0]

    def _reduce(self, lam: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """(eigenvalues of S, eigenvectors, Y = (−C_vv)⁻¹C_vx, C_vx) or None where −C_vv ⋡ 0."""
        c_xx, c_vx, c_vv = self.blocks(lam)
        factor, info = torch.linalg.cholesky_ex(-c_vv)
        if int(info) != 0:
            return None
        half = torch.linalg.solve_triangular(factor, c_vx, upper=False)
        s = c_xx + half.T @ half
        mu, vectors = torch.linalg.eigh((s + s.T) / 2)
        if not bool(torch.isfinite(mu).all()):
            return None
        y = torch.linalg.solve_triangular(factor.T, half, upper=True)
        return mu, vectors, y, c_vx

    def smoothed(self, lam: Tensor, temperature: float) -> tuple[float, float, Tensor] | None:
        """(f_t(λ), λ_max(S(λ)), ∇_λ f_t) with f_t the log-sum-exp of S's eigenvalues at temperature t
        (optimise.py), or None where −C_vv(λ) is not positive definite.

        The gradient is written out (docs/design.md ('Semidefinite bound') §4) rather than taken by autograd, whose
        Cholesky backward costs three times the factorisation: with G = ∂f/∂S = V diag(softmax) Vᵀ,
        Y = (−C_vv)⁻¹C_vx and R = A_x + A_v·Y (row i: the neuron's pre-activation seen through S),

            ∂f/∂λ_i = −(YG)_i·Y_i + 2 s_i (YG)_i·R_i − α_iβ_i R_i G R_iᵀ.
        """
        found = self._reduce(lam)
        if found is None:
            return None
        mu, vectors, y, _ = found
        top = mu.max()
        weights = torch.softmax(temperature * (mu - top), dim=0)
        value = top + torch.log(torch.exp(temperature * (mu - top)).sum()) / temperature
        g = (vectors * weights) @ vectors.T
        yg = y @ g
        r = self.pre_x + self.pre_v @ y
        grad = -(yg * y).sum(1) + 2 * self.mid * (yg * r).sum(1)
        if len(self.curved):
            rc = r[self.curved]
            grad[self.curved] -= self.ab * ((rc @ g) * rc).sum(1)
        return float(value), float(top), grad
