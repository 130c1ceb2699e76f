"""Certified spectral-norm bounds for matrices known only entrywise: |A_ij| ≤ M_ij.

‖A‖₂ ≤ ‖|A|‖₂ ≤ ‖M‖₂ (the spectral norm is monotone on non-negative matrices), and for a
non-negative M the Collatz–Wielandt inequality bounds ρ(MᵀM) = ‖M‖₂² by max_i (MᵀM v)_i / v_i for
any positive v. A few power iterations make v close to the Perron vector, so the bound is close
to ‖M‖₂ and certified whatever v is.
"""

from __future__ import annotations

import numpy as np
import torch

_ITERATIONS = 30


def nonnegative_norm_bound(matrices: np.ndarray) -> np.ndarray:
    """Upper bounds on ‖M_b‖₂ for a stack (…, m, n) of non-negative matrices, one per matrix."""
    m = torch.as_tensor(np.ascontiguousarray(matrices), dtype=torch.float64)
    if m.numel() == 0:
        return np.zeros(m.shape[:-2])
    if not torch.isfinite(m).all():
        out = np.full(m.shape[:-2], np.inf)
        finite = torch.isfinite(m).flatten(-2).all(-1).numpy()
        if finite.any():
            out[finite] = nonnegative_norm_bound(matrices[finite])
        return out
    # Scale each matrix to max entry 1 so that the iterates neither overflow nor vanish.
    peak = m.flatten(-2).amax(-1).clamp_min(1e-300)
    m = m / peak[..., None, None]
    gram = m.transpose(-1, -2) @ m if m.shape[-1] <= m.shape[-2] else m @ m.transpose(-1, -2)
    v = torch.ones(gram.shape[:-1], dtype=torch.float64)
    for _ in range(_ITERATIONS):
        w = (gram @ v[..., None])[..., 0]
        v = w / w.amax(-1, keepdim=True).clamp_min(1e-300)
        v = v + 1e-12  # keep every entry positive
    ratio = ((gram @ v[..., None])[..., 0] / v).amax(-1)
    bound = torch.sqrt(ratio) * peak * (1 + 1e-9)  # float64 rounding in the products
    return bound.numpy()
