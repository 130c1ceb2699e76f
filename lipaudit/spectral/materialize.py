"""The exact norm of a small linear operator, by building its Gram matrix from basis vectors.

For an operator A: R^n → R^m we build the Gram matrix on the smaller side, AᵀA (n×n) or AAᵀ
(m×m), one chunk of basis vectors at a time, and take its largest eigenvalue.  That needs only
min(m, n)² numbers in memory, never the m×n matrix, and a symmetric eigensolver is several times
faster than an SVD.  The top eigenvalue of a float64 symmetric matrix is accurate to a modest
multiple of 2⁻⁵³·‖G‖, so σ_max = √λ_max is accurate to about 1e-13 relative.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .power import forward_and_adjoint

# Memory for one chunk of basis vectors pushed through the operator (input and output copies).
CHUNK_BYTES = 256 * 2**20


def operator_gram(forward: Callable[[Tensor], Tensor], input_shape: tuple[int, ...],
                  output_shape: tuple[int, ...], *, device: torch.device,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Gram matrix of the smaller side of the linear map ``forward``.

    ``forward`` takes a batch (B, *input_shape) to (B, *output_shape).
    """
    n_in, n_out = math.prod(input_shape), math.prod(output_shape)
    on_input_side = n_in <= n_out
    side = n_in if on_input_side else n_out
    bytes_per_vector = 4 * (n_in + n_out) * torch.finfo(dtype).bits // 8
    chunk = max(1, min(side, CHUNK_BYTES // bytes_per_vector))
    gram = torch.empty((side, side), device=device, dtype=dtype)
    for start in range(0, side, chunk):
        stop = min(side, start + chunk)
        basis = torch.zeros((stop - start, side), device=device, dtype=dtype)
        rows = torch.arange(stop - start, device=device)
        basis[rows, rows + start] = 1.0
        if on_input_side:  # AᵀA e_i for input basis vectors e_i
            _, columns = forward_and_adjoint(forward, basis.reshape(-1, *input_shape))
        else:  # A Aᵀ e_j for output basis vectors e_j: the adjoint first, at any point (here 0)
            zero = torch.zeros((stop - start, *input_shape), device=device, dtype=dtype)
            _, pulled_back = forward_and_adjoint(forward, zero, basis.reshape(-1, *output_shape))
            with torch.no_grad():
                columns = forward(pulled_back)
        gram[:, start:stop] = columns.reshape(stop - start, side).T
    return (gram + gram.T) / 2  # exact symmetry, removing rounding noise


def materialized_norm(forward: Callable[[Tensor], Tensor], input_shape: tuple[int, ...],
                      output_shape: tuple[int, ...], *, device: torch.device) -> float:
    """σ_max of the operator, computed in float64 (no margin applied)."""
    gram = operator_gram(forward, input_shape, output_shape, device=device)
    if gram.numel() == 0:
        return 0.0
    top = float(torch.linalg.eigvalsh(gram)[-1])
    return math.sqrt(max(top, 0.0))
