"""LRN against onnxruntime (the run) and against the largest Jacobian norm found (the bound)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipaudit import audit
from tests.builders import save, single_node_model


def _lrn_torch(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """ONNX's LRN written out independently: channels i − ⌊(n−1)/2⌋ … i + ⌈(n−1)/2⌉."""
    channels = x.shape[1]
    sums = []
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)
        sums.append((x[:, lo : hi + 1] ** 2).sum(dim=1))
    square_sum = torch.stack(sums, dim=1)
    return x / (bias + alpha / size * square_sum) ** beta


@pytest.mark.parametrize("size,alpha,beta,bias", [(5, 1e-4, 0.75, 2.0), (4, 0.5, 0.75, 1.0), (3, 2.0, 0.5, 0.5)])
def test_lrn_is_bounded_above_its_largest_jacobian(tmp_path, size, alpha, beta, bias) -> None:
    shape = (1, 6, 2, 2)
    model = single_node_model("LRN", list(shape), {}, size=size, alpha=alpha, beta=beta, bias=bias)
    network = audit(save(model, tmp_path)).to_dict()["network"]
    assert network["certified"] and (network["verified"] or size % 2 == 0), network  # onnxruntime: odd sizes
    rng = np.random.default_rng(0)
    largest = 0.0
    for scale in (0.3, 3.0, 30.0):
        for _ in range(3):
            x = torch.tensor(rng.standard_normal(shape) * scale, requires_grad=True)
            for _step in range(12):  # ascend ‖J(x)‖₂
                jac = torch.autograd.functional.jacobian(
                    lambda z: _lrn_torch(z, size, alpha, beta, bias).reshape(-1), x, create_graph=True
                ).reshape(24, 24)
                norm = torch.linalg.matrix_norm(jac, 2)
                largest = max(largest, float(norm))
                (grad,) = torch.autograd.grad(norm, x)
                x = (x + 0.05 * scale * grad / (grad.norm() + 1e-12)).detach().requires_grad_(True)
    assert largest <= network["upper_bound"] <= 3 * largest, (largest, network["upper_bound"])
