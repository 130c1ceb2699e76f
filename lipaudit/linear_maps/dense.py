"""Matrices, scalings, sums, concatenations and means as typed linear maps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import torch
from torch import Tensor

from ..spectral import dense_norm
from ..spectral.dense import SVD_MARGIN
from ..spectral.scaling import product_up, root_sum_squares
from .base import SUM_MARGIN, Linear, Shape, f64


@dataclass(eq=False)
class MatrixMap(Linear):
    """A map by one constant matrix: its norm is the matrix's, which costs an SVD's work (Dense and
    LeftDense differ only in the axis the matrix acts on)."""

    matrix: Tensor

    @classmethod
    def of(cls, matrix) -> Self:
        m = f64(matrix)
        if m.ndim != 2:
            raise ValueError(f"a dense map needs a matrix, got shape {tuple(m.shape)}")
        return cls(m)

    def norm(self) -> float:
        return dense_norm(self.matrix).value

    def cost(self) -> float:
        n, m = self.matrix.shape
        return float(n) * m * min(n, m)

    def absolute(self) -> Self:
        return type(self)(self.matrix.abs())


@dataclass(eq=False)
class Dense(MatrixMap):
    """y = x @ matrix on the last axis; matrix (n_in, n_out) (Gemm with transB: B.T)."""

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        shape = shapes[0]
        if not shape or shape[-1] != self.matrix.shape[0]:
            raise ValueError(f"dense matrix {tuple(self.matrix.shape)} does not act on the last axis of {shape}")
        return tuple(shape[:-1]) + (int(self.matrix.shape[1]),)

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0] @ self.matrix.to(dtype=xs[0].dtype, device=xs[0].device)

    def terms(self) -> int:
        return int(self.matrix.shape[0])


@dataclass(eq=False)
class LeftDense(MatrixMap):
    """y = matrix @ x with the constant on the left, matrix (k, n) acting on axis −2 of x (…, n, m):
    I ⊗ matrix on the flat vector, so its norm is ‖matrix‖₂ (torch.export writes an adaptive
    average pool with unequal windows as one such product per spatial axis)."""

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        shape = shapes[0]
        if len(shape) < 2 or shape[-2] != self.matrix.shape[1]:
            raise ValueError(f"matrix {tuple(self.matrix.shape)} does not act on axis −2 of {shape}")
        return tuple(shape[:-2]) + (int(self.matrix.shape[0]), int(shape[-1]))

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.matmul(self.matrix.to(dtype=xs[0].dtype, device=xs[0].device), xs[0])

    def terms(self) -> int:
        return int(self.matrix.shape[1])


@dataclass(eq=False)
class Scale(Linear):
    """y = x * factor, the factor broadcast against x (Mul by a constant, folded BatchNorm)."""

    factor: Tensor

    @classmethod
    def of(cls, factor) -> Scale:
        return cls(f64(factor))

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        shape = tuple(shapes[0])
        if tuple(torch.broadcast_shapes(self.factor.shape, shape)) != shape:
            raise ValueError(
                f"scale factor of shape {tuple(self.factor.shape)} would broadcast {shape} to a larger shape"
            )
        return shape

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0] * self.factor.to(dtype=xs[0].dtype, device=xs[0].device)

    def norm(self) -> float:
        return float(self.factor.abs().max()) if self.factor.numel() else 0.0

    def absolute(self) -> Scale:
        return Scale(self.factor.abs())

    def channel_factor(self, shape: Shape) -> Tensor | None:
        if len(shape) < 3:
            return None
        f = self.factor
        full = f.reshape((1,) * (len(shape) - f.ndim) + tuple(f.shape))
        if any(size != 1 for axis, size in enumerate(full.shape) if axis != 1):
            return None
        return full.reshape(-1).expand(shape[1]).clone() if full.shape[1] == 1 else full.reshape(-1)


@dataclass(eq=False)
class Sum(Linear):
    """y = Σ c_i·x_i over values of one shape (Add: 1, 1; Sub: 1, −1)."""

    coefficients: tuple[float, ...]
    arity = 0

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        if len(self.coefficients) != len(shapes) or not shapes:
            raise ValueError("a sum needs one coefficient per input")
        if len({tuple(s) for s in shapes}) != 1:
            raise ValueError(
                f"sum of values with different shapes {sorted(set(map(tuple, shapes)))}: broadcast them first"
            )
        return tuple(shapes[0])

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0] * self.coefficients[0]
        for c, other in zip(self.coefficients[1:], xs[1:]):
            out = out + c * other
        return out

    def rule(self, bounds: Sequence[float], norm: float | None = None) -> float:
        """‖Σ c_iΔx_i‖ ≤ Σ |c_i|·‖Δx_i‖ (triangle inequality)."""
        return math.fsum(product_up(abs(c), b) for c, b in zip(self.coefficients, bounds)) * SUM_MARGIN

    def rule_slopes(self, bounds: Sequence[float], norm: float | None = None) -> list[float]:
        return [abs(c) for c in self.coefficients]

    def absolute(self) -> Sum:
        return Sum(tuple(abs(c) for c in self.coefficients))

    def terms(self) -> int:
        return len(self.coefficients)


@dataclass(eq=False)
class Concat(Linear):
    """Concatenation along ``axis`` (an axis of the value, batch excluded)."""

    axis: int
    arity = 0

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        first = tuple(shapes[0])
        a = self.axis
        return first[:a] + (sum(s[a] for s in shapes),) + first[a + 1 :]

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=self.axis + 1)

    def rule(self, bounds: Sequence[float], norm: float | None = None) -> float:
        """‖(Δx_i)_i‖ = √(Σ ‖Δx_i‖²)."""
        return root_sum_squares(bounds) * SUM_MARGIN

    def rule_slopes(self, bounds: Sequence[float], norm: float | None = None) -> list[float]:
        total = root_sum_squares(bounds)
        return [b / total if total > 0 else 0.0 for b in bounds]


@dataclass(eq=False)
class Mean(Linear):
    """ReduceMean over ``axes`` (GlobalAveragePool: the spatial axes) of ``count`` entries each:
    norm 1/√count (a mean of n entries is ⟨x, 1/n⟩, norm √n/n)."""

    axes: tuple[int, ...]
    keepdims: bool
    count: int

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        return tuple(1 if a in self.axes else n for a, n in enumerate(shapes[0]) if self.keepdims or a not in self.axes)

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].mean(dim=[a + 1 for a in self.axes], keepdim=self.keepdims)

    def norm(self) -> float:
        return SVD_MARGIN / math.sqrt(self.count)

    def terms(self) -> int:
        return self.count + 1  # the sum, then the division


@dataclass(eq=False)
class AxisSum(Mean):
    """ReduceSum over ``axes`` of ``count`` entries each: norm √count (⟨x, 1⟩ over each group)."""

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].sum(dim=[a + 1 for a in self.axes], keepdim=self.keepdims)

    def norm(self) -> float:
        return SVD_MARGIN * math.sqrt(self.count)

    def terms(self) -> int:
        return self.count
