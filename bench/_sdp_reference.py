"""LipSDP-Neuron solved by cvxpy with an open solver: the reference value for bench/sdp.py and tests/sdp.

Bench-only (the `bench` extra): not sound by itself (the solver's tolerance decides the figure), used
only to check that lipaudit.sdp's certified figure reaches the optimum.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from lipaudit.sdp.matrix import Blocks
from lipaudit.sdp.network import SdpNetwork


def cvxpy_lipsdp(network: SdpNetwork, solver: str = "SCS", eps: float = 1e-6) -> float:
    """√ρ* of min ρ s.t. M(ρ, λ) ⪯ 0, λ ≥ 0 (docs/design.md ('Semidefinite bound')), by cvxpy."""
    import cvxpy as cp

    blocks = Blocks.of(network)
    pre, out = blocks.full()
    n0, neurons = blocks.input_dim, blocks.neurons
    n = n0 + neurons
    # Scale the output so that ρ is of order 1 (interior-point tolerances are absolute).
    scale = max(float(np.linalg.norm(out, 2)), 1e-300)
    out = out / scale
    select = np.zeros((neurons, n))
    select[:, n0:] = np.eye(neurons)
    p = select - blocks.alpha[:, None] * pre
    q = select - blocks.beta[:, None] * pre
    # M is affine in (ρ, λ): M = BᵀB − ρ E_xᵀE_x − Σ_i λ_i·sym(p_i q_iᵀ)/… as one sparse linear map of
    # λ (cvxpy's own canonicalisation of Pᵀ diag(λ) Q takes gigabytes on a few hundred neurons).
    columns = []
    for i in range(neurons):
        outer = np.outer(p[i], q[i])
        columns.append(sparse.csc_matrix(-(outer + outer.T).reshape(-1, 1) / 2))
    linear = sparse.hstack(columns).tocsc()
    rho = cp.Variable()
    lam = cp.Variable(neurons, nonneg=True)
    e_x = np.zeros((n, n))
    e_x[:n0, :n0] = np.eye(n0)
    m = out.T @ out - rho * e_x + cp.reshape(linear @ lam, (n, n), order="C")
    problem = cp.Problem(cp.Minimize(rho), [(m + m.T) / 2 << 0])
    # SCS (first-order, sparse) is the one that handles a few hundred neurons in seconds here; Clarabel
    # (interior point) takes a minute at a hundred.  Tolerances well under the 1% the comparison needs.
    options = {"eps_abs": eps, "eps_rel": eps, "max_iters": 200_000} if solver == "SCS" else {}
    problem.solve(solver=solver, **options)
    if rho.value is None:
        raise RuntimeError(f"cvxpy/{solver} found no solution: {problem.status}")
    return float(np.sqrt(max(float(rho.value), 0.0))) * scale
