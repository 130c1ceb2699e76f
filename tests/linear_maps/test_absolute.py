"""absolute() is the entrywise |A| of each map's own matrix, and terms() bounds the nonzeros per row."""

from __future__ import annotations

import math

import pytest
import torch

from lipaudit.linear_maps import AvgPool, Conv, Dense, Mean, Pad, Permutation, Scale, Slice

torch.manual_seed(0)


def matrix_of(linear, shape):
    """The map's matrix (out entries × in entries), column by column from its forward on the basis."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return linear.forward(basis).reshape(n, -1).T


CASES = [
    (Dense.of(torch.randn(5, 3)), (2, 5)),
    (Scale.of(torch.randn(1, 3, 1, 1)), (1, 3, 2, 2)),
    (Conv.of(torch.randn(4, 2, 3, 3), (5, 5), strides=(2, 1), pads=(1, 0, 1, 1)), (1, 2, 5, 5)),
    (Conv.of(torch.randn(4, 1, 3, 3), (5, 5), groups=2, dilations=(2, 1)), (1, 2, 5, 5)),
    (Conv.of(torch.randn(2, 3, 3, 3), (4, 4), strides=(2, 2), transposed=True), (1, 2, 4, 4)),
    (AvgPool.of((2, 3), (5, 5), strides=(2, 1), pads=(1, 1, 0, 0)), (1, 2, 5, 5)),
    (Mean((1,), True, 4), (2, 4)),
    (Pad.of((0, 1, 0, 2), 2), (2, 3)),
    (Slice(1, 0, 4, 2), (2, 4)),
    (Permutation.of([2, 0, -1, 5, 3, 4], (6,), 6), (6,)),
]


@pytest.mark.parametrize(("linear", "shape"), CASES, ids=lambda c: type(c).__name__ if not isinstance(c, tuple) else "")
def test_absolute_is_the_entrywise_absolute_matrix(linear, shape):
    matrix = matrix_of(linear, shape)
    absolute = matrix_of(linear.absolute(), shape)
    assert torch.allclose(absolute, matrix.abs(), atol=1e-12)
    nonzeros = int((matrix != 0).sum(dim=1).max())
    assert nonzeros <= linear.terms()
