"""Independent lower bounds for torch modules: the Jacobian's spectral norm at random points."""

from __future__ import annotations

import torch
from torch import nn


def max_jacobian_norm(model: nn.Module, shape: tuple[int, ...], samples: int, seed: int) -> float:
    """max over random inputs of ‖J(x)‖₂, in float64 (any such value is ≤ the Lipschitz constant)."""
    model = model.double()
    generator = torch.Generator().manual_seed(seed)
    best = 0.0
    for _ in range(samples):
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2
        jacobian = torch.autograd.functional.jacobian(model, x).reshape(-1, x.numel())
        best = max(best, torch.linalg.matrix_norm(jacobian, ord=2).item())
    return best
