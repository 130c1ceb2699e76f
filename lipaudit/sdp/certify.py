"""A rigorous proof, in float64, that M(ρ', λ) ⪯ 0 for given multipliers (docs/design.md ('Semidefinite bound') §5).

The optimiser's multipliers are only floating-point numbers; this module turns them into a
certificate or refuses.  Three steps, each with an a-priori rounding bound:

1. Ã = fl(−M(ρ', λ)) is computed from the network's float64 matrices (float32 weights are exact in
   float64).  Every entry of −M is a sum of products evaluated along at most K = N + m + 16 + r
   rounded operations (N neurons, m outputs, r those behind a matrix of the network that was itself
   computed, such as the products of an eliminated residual stream: network.Connection), so
   |Ã − (−M)| ≤ γ_K·G entrywise, with G the same expression on absolute values (with the
   connections' magnitudes in place of |A|, |B|) and
   γ_k = k·u/(1 − k·u), u = 2⁻⁵³ (Higham, *Accuracy and Stability*, §3.1).  Hence
   ‖Ã − (−M)‖₂ ≤ e := γ_K (1 + γ_K)(1 + γ_n)·max_i Σ_j Ĝ_ij (a symmetric matrix's 2-norm is at
   most its ∞-norm; Ĝ, the computed G, is within a factor 1 + γ_K of G; the row sum within 1 + γ_n).
2. A is Ã with its diagonal lowered by e (rounded down).  If A is positive definite then
   −M ⪰ A + (diag(Ã − A) − ‖Ã + M‖₂)·I ≻ 0.
3. A is proved positive definite by Rump's criterion (S. M. Rump, "Verification of positive
   definiteness", BIT 46:433–452, 2006, Corollary 2.4, with the constants as formally proved in
   Coq by the ValidSDP library's ``corollary_2_4_with_c_upper_bound``): for symmetric A ∈ Fⁿˣⁿ with
   0 ≤ a_ii ≤ maxdiag, 4(n + 2)u < 1 and

        c ≥ ½·γ_{2(n+1)}·tr(A) + 4·η·n·(2(n + 1) + maxdiag),      η = 2⁻¹⁰⁷⁴ (underflow unit),

   if floating-point Cholesky of Ã_c (A with each diagonal entry replaced by a float ≤ a_ii − c)
   runs to completion with a positive diagonal, then A is positive definite.  LAPACK's dpotrf (via
   torch.linalg.cholesky_ex on the CPU, float64) is such a Cholesky: a conventional (non-Strassen)
   algorithm in IEEE binary64 with round-to-nearest, for which the backward-error bound behind the
   criterion holds whatever the summation order and with or without fused multiply-adds.

The figure returned is √ρ' rounded up.  Only the λ ≥ 0 and ρ' > 0 given here matter: how they were
found (optimise.py) plays no part in the proof.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .matrix import Blocks, constraint_matrix

UNIT = 2.0**-53  # unit roundoff of binary64, round to nearest
ETA = 2.0**-1074  # smallest positive subnormal
SAFETY = 1.01  # on the rounding of the constants themselves (each within a few units of roundoff)


def gamma(k: int) -> float:
    if 2 * k * UNIT >= 1:
        raise ArithmeticError("matrix too large for the a-priori rounding bounds")
    return k * UNIT / (1 - k * UNIT)


@dataclass(frozen=True)
class Certificate:
    figure: float  # √ρ' rounded up: a certified ℓ2 Lipschitz bound
    rho: float
    shift: float  # the c + e subtracted from the diagonal before the Cholesky factorisation
    size: int

    def describe(self) -> str:
        return (
            f"−M(ρ', λ) ≻ 0 proved in float64: Cholesky of the {self.size}×{self.size} matrix shifted by "
            f"{self.shift:.3g} (a-priori bound on forming M, plus Rump 2006 Cor. 2.4) succeeded"
        )


def negated_matrix(blocks: Blocks, rho: float, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fl(−M(ρ, λ)), Ĝ): the matrix as computed, and the absolute-value expression bounding its error."""
    # Negation is exact: this is the computed M's negative, entry for entry.
    value = -constraint_matrix(blocks, rho, lam)
    n0, n = blocks.input_dim, value.shape[0]
    select = np.zeros((blocks.neurons, n))
    select[:, n0:] = np.eye(blocks.neurons)
    p_abs = select + np.abs(blocks.alpha)[:, None] * blocks.pre_bound
    q_abs = select + np.abs(blocks.beta)[:, None] * blocks.pre_bound
    half_abs = p_abs.T @ (lam[:, None] * q_abs)
    bound = (half_abs + half_abs.T) / 2 + blocks.out_bound.T @ blocks.out_bound
    bound[np.diag_indices(n0)] += rho
    # Exactly symmetric: one triangle, mirrored (whichever triangle dpotrf reads, it is this matrix).
    upper = np.triu(value)
    return upper + np.triu(value, 1).T, bound


def certify(blocks: Blocks, rho: float, lam: np.ndarray) -> Certificate | None:
    """A proof that ‖Δy‖ ≤ √ρ·‖Δx‖ from M(ρ, λ) ⪯ 0, or None where the proof does not go through."""
    lam = np.asarray(lam, dtype=np.float64)
    if not (rho > 0 and math.isfinite(rho)) or lam.shape != (blocks.neurons,) or not np.all(lam >= 0):
        return None
    if not np.all(np.isfinite(lam)):
        return None
    matrix, bound = negated_matrix(blocks, rho, lam)
    n = matrix.shape[0]
    if 4 * (n + 2) * UNIT >= 1 or not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(bound))):
        return None
    depth = blocks.neurons + out_rows(blocks) + 16 + blocks.rounding
    error = gamma(depth) * (1 + gamma(depth)) * (1 + gamma(n)) * SAFETY * float(np.max(bound.sum(axis=1)))
    diagonal = np.nextafter(np.diagonal(matrix) - error, -np.inf)
    if not np.all(diagonal >= 0):
        return None
    trace = float(diagonal.sum()) * (1 + gamma(n))
    shift = SAFETY * (0.5 * gamma(2 * (n + 1)) * trace + 4 * ETA * n * (2 * (n + 1) + float(diagonal.max())))
    shifted = matrix.copy()
    shifted[np.diag_indices(n)] = np.nextafter(diagonal - shift, -np.inf)
    factor, info = torch.linalg.cholesky_ex(torch.from_numpy(shifted))
    if int(info) != 0 or not (bool(torch.isfinite(factor).all()) and bool((torch.diagonal(factor) > 0).all())):
        return None
    figure = float(np.nextafter(math.sqrt(rho), math.inf))
    return Certificate(figure=figure, rho=rho, shift=shift + error, size=n)


def out_rows(blocks: Blocks) -> int:
    return int(blocks.out_x.shape[0])
