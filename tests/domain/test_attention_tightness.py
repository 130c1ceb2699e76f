"""The per-head attention rule is tight on a small box around real tokens: a self-attention layer
(with its projections), saved by torch.export, gets a local figure within 10× of the Jacobian's
norm at the box's centre, a lower bound on the constant inside the box (issue 22)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lipaudit import audit


class SelfAttention(nn.Module):
    def __init__(self, centre: torch.Tensor, heads: int = 2) -> None:
        super().__init__()
        dim = centre.shape[-1]
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.register_buffer("centre", centre)

    def forward(self, x):
        x = self.centre + x  # the box [−r, r] around the real tokens
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])


def test_local_figure_within_ten_times_the_jacobian_at_the_centre(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SelfAttention(torch.randn(1, 6, 8)).eval()
    zero = torch.zeros(1, 6, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(model, (zero,)), str(tmp_path / "m.pt2"))
    report = audit(str(tmp_path / "m.pt2"), input_range=["-0.01:0.01"], verify=False)
    jacobian = torch.autograd.functional.jacobian(model, zero).reshape(-1, zero.numel())
    lower = torch.linalg.matrix_norm(jacobian, ord=2).item()
    assert report.upper_bound is not None
    assert lower <= report.upper_bound <= 10 * lower, (report.upper_bound, lower)
