"""Linear maps between two values of a Network, kept in a form whose norm can be certified.

A map A from an *anchor* value s to a value y comes in one of three forms:

  DenseMap   the matrix itself, built by pushing the anchor's basis vectors through the nodes
             (float64, every crop and padding exactly as the network has it).  Norm: dense_norm
             (singular values in float64 with a margin, or Lanczos + a Cholesky certificate).
  ConvMap    a convolution with a composite kernel: y[:, j] = Σ_t K[:, :, t]·s̃[:, σ·j + t + o]
             per spatial axis, with s̃ the anchor extended by zeros — i.e. P_yᵀ·T·P_s, with T a
             true (shift-invariant, unpadded) strided convolution on ℤ^D, P_s the embedding of
             the anchor's grid and P_yᵀ the crop to y's grid.  Norm: conv_norm on the equivalent
             padded convolution (the circulant / polyphase bound, certified).
  ScalarMap  nothing but an upper bound on the norm (the product of the factors so far).

Every form carries ``cheap``, the product of the certified norms of what it was built from
(submultiplicativity and the triangle inequality make it an upper bound), and ``ops``, how many
norm-bearing factors were multiplied into it (its exact norm can only beat ``cheap`` when ops ≥ 2
or a sum was taken).

The convolution form lives in conv_maps.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..spectral import dense_norm

# Relative tolerance of the branch and bound for chain norms (conv_norm's and dense_norm's tol): the
# figure is certified whatever the tolerance; a recursion needs no more than three digits of each.
CHAIN_TOL = 1e-3


def rounding_allowance(ops: int, width: int, cheap: float) -> float:
    """What the float64 arithmetic that built a map's matrix or kernel may have moved its norm by.

    Each of the ``ops`` factors was applied in float64 with sums of at most ``width`` products,
    so its computed image differs from the exact one by γ_width·|W|·|x| entrywise, ≤ width^1.5·u
    times the factor's norm in ℓ2; through the rest of the chain that is at most
    Σ_ops width^1.5·u·(product of the norms) = ops·width^1.5·u·cheap (Higham, §3.5).  Added to a
    measured norm, this makes it a bound on the exact map's norm.
    """
    return ops * width**1.5 * 2.0**-52 * cheap


class LinearMap:
    cheap: float
    ops: int
    summed: bool

    def exact_norm(self) -> float:
        raise NotImplementedError

    def cost(self) -> float:
        """Rough number of operations ``exact_norm`` takes (for the work budget)."""
        return 0.0

    @property
    def improvable(self) -> bool:
        """Whether measuring the map as a whole can beat ``cheap``."""
        return self.ops >= 2 or self.summed

    def norm(self) -> float:
        """A certified upper bound: the exact figure where it can help, never above ``cheap``."""
        if not self.improvable:
            return self.cheap
        return min(self.cheap, self.exact_norm())


# ---------------------------------------------------------------------------------------------
# Product bound only


@dataclass
class ScalarMap(LinearMap):
    cheap: float
    ops: int = 0
    summed: bool = False

    def exact_norm(self) -> float:
        return self.cheap

    @property
    def improvable(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------------
# Explicit matrices


@dataclass
class ShapeOnlyDense(LinearMap):
    """A DenseMap whose columns were never computed: only their count and size, and the product
    figure.  What a dry run and a term nobody will measure need; it is never measured."""

    rows: int
    size: int
    cheap: float
    ops: int = 0
    summed: bool = False

    def exact_norm(self) -> float:
        raise RuntimeError("a shape-only map has no columns to measure")

    def cost(self) -> float:
        return float(self.rows) * self.size * min(self.rows, self.size)

    def norm(self) -> float:
        return self.cheap


@dataclass
class DenseMap(LinearMap):
    """Column i of the matrix is ``columns[i]``: the image of the anchor's i-th basis vector."""

    columns: Tensor  # (n_anchor, *shape of y)
    cheap: float
    ops: int = 0
    summed: bool = False
    _exact: float | None = field(default=None, repr=False)

    @classmethod
    def identity(cls, shape: tuple[int, ...]) -> DenseMap:
        n = math.prod(shape)
        return cls(torch.eye(n, dtype=torch.float64).reshape(n, *shape), 1.0)

    def exact_norm(self) -> float:
        if self._exact is None:
            matrix = self.columns.reshape(self.columns.shape[0], -1)
            value = dense_norm(matrix, tol=CHAIN_TOL).value if matrix.numel() else 0.0
            self._exact = value + rounding_allowance(self.ops, max(matrix.shape), self.cheap)
        return self._exact

    def cost(self) -> float:
        n, m = self.columns.shape[0], self.columns[0].numel()
        return float(n) * m * min(n, m)
