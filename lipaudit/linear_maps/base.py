"""The interface every typed linear map has, and the answer of an op that has none."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..spectral.scaling import product_up

# Sums and products of a few hundred positive floats: relative rounding far below this.
SUM_MARGIN = 1.0 + 1e-12

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Barrier:
    """An op the recursion does not look through, and why (it keeps its certified factor)."""

    reason: str


class Linear:
    """A linear map of one or several tensors (biases and other offsets left out: they cancel in
    differences, so they never change a Lipschitz constant)."""

    # 1: reads one value and has an operator norm; 0: reads any number (a join: Sum, Concat).
    arity: ClassVar[int] = 1
    # Norm exactly 1 on every input, and composing with it moves no norm (Reshape, Permutation).
    isometry: ClassVar[bool] = False

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        raise NotImplementedError

    def forward(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def norm(self) -> float:
        """A certified upper bound on the ℓ2 operator norm (unary maps)."""
        raise NotImplementedError(f"{type(self).__name__} reads several values: it has a rule, not a norm")

    def rule(self, bounds: Sequence[float], norm: float | None = None) -> float:
        """The product bound at this map from its inputs' bounds (docs/design.md, "Product bound");
        ``norm``: the caller's certified norm of a unary map, when it has one."""
        return product_up(self.norm() if norm is None else norm, bounds[0])

    def rule_slopes(self, bounds: Sequence[float], norm: float | None = None) -> list[float]:
        """∂ rule / ∂ bound of each input."""
        return [self.norm() if norm is None else norm]

    def cost(self) -> float:
        """Rough number of operations ``norm`` takes (the product's own work, for a work budget)."""
        return 0.0

    def absolute(self) -> Linear:
        """The map |A| whose coefficients are the absolute values of this one's: |A·x| ≤ |A|·|x|
        entrywise, which carries error and radius bounds through the map.  Maps that only move,
        select or average entries are their own."""
        return self

    def terms(self) -> int:
        """The most products summed into one output entry (a count of rounded operations per entry:
        forward in floating point is within γ_terms·|A|·|x| of the exact map)."""
        return 1

    def conv_form(self, shape: Shape) -> tuple[Tensor, tuple, tuple, tuple, int] | None:
        """(weight, strides, pads, dilations, groups) when the map, making a value of ``shape``, is
        a forward convolution with zero padding, else None (the recursion's convolution form
        composes only those)."""
        return None

    def channel_factor(self, shape: Shape) -> Tensor | None:
        """The per-channel factor when the map multiplies each channel of an (N, C, *S) value by a
        constant, else None."""
        return None


def f64(array) -> Tensor:
    """A float64 CPU copy of anything array-like."""
    if isinstance(array, Tensor):
        return array.detach().to(dtype=torch.float64, device="cpu")
    return torch.from_numpy(np.array(array, dtype=np.float64))


def torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX-order (begin, end) amounts per axis in F.pad's order (last axis first)."""
    order: list[int] = []
    for begin, end in reversed(list(zip(begins, ends))):
        order += [int(begin), int(end)]
    return order


def count(shape: Shape) -> int:
    return math.prod(shape)
