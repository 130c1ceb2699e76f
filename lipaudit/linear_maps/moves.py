"""Maps that move entries without weights: reshapes, permutations, slices and zero pads (norm ≤ 1).

A Permutation is its own type: a reshape is the identity on the flat vector, a permutation is not,
and nothing here takes one for the other (docs/design.md, "Entry-moving ops").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spectral.scaling import sqrt_up
from .base import Linear, Shape, torch_pad


@dataclass(eq=False)
class Reshape(Linear):
    """The same entries in the same (row-major) order, another shape: the identity on the flat vector."""

    shape: Shape
    isometry = True

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        if math.prod(self.shape) != math.prod(shapes[0]):
            raise ValueError(f"cannot reshape {tuple(shapes[0])} to {self.shape}")
        return self.shape

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].reshape(xs[0].shape[0], *self.shape)

    def norm(self) -> float:
        return 1.0


@dataclass(eq=False)
class _Gather(Linear):
    """y.flat[j] = x.flat[index[j]], or 0 where index[j] = −1 (the moves that read one source entry
    per output entry; what each source may feed is the subclass's)."""

    index: Tensor  # int64, one per output entry
    shape: Shape
    in_size: int

    @staticmethod
    def _checked(index, shape: Sequence[int], in_size: int) -> tuple[Tensor, Shape]:
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        shape = tuple(int(s) for s in shape)
        if index.numel() != math.prod(shape):
            raise ValueError(f"a gather onto {shape} needs {math.prod(shape)} indices, got {index.numel()}")
        if index.numel() and (int(index.min()) < -1 or int(index.max()) >= in_size):
            raise ValueError("a gather index points outside its input")
        return index, shape

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        if math.prod(shapes[0]) != self.in_size:
            raise ValueError(f"a gather from {self.in_size} entries reads a value of shape {tuple(shapes[0])}")
        return self.shape

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        flat = x.reshape(x.shape[0], -1)
        index = self.index.to(x.device)
        if bool((index < 0).any()):
            flat = torch.cat([flat, flat.new_zeros((flat.shape[0], 1))], dim=1)
            index = torch.where(index < 0, self.in_size, index)
        return flat[:, index].reshape(x.shape[0], *self.shape)


@dataclass(eq=False)
class Permutation(_Gather):
    """y.flat[j] = x.flat[index[j]], or 0 where index[j] = −1: a partial permutation (every source
    entry lands at most once), so its norm is 1 (0 when it keeps nothing).

    It is the identity only when ``index`` is 0, 1, …, n−1 over all n entries (``is_identity``); a
    transpose that keeps the shape, a reversal or a roll is not."""

    _identity: bool | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, index, shape: Sequence[int], in_size: int) -> Permutation:
        index, shape = cls._checked(index, shape, in_size)
        kept = index[index >= 0]
        if kept.numel() != torch.unique(kept).numel():
            raise ValueError("a permutation moves one entry to two places: that is a copy, not a permutation")
        return cls(index, shape, int(in_size))

    @classmethod
    def of_axes(cls, in_shape: Sequence[int], perm: Sequence[int]) -> Permutation:
        """The Transpose of a value of ``in_shape`` by ``perm``."""
        n = math.prod(in_shape)
        order = torch.arange(n, dtype=torch.int64).reshape(tuple(in_shape)).permute(*perm)
        return cls.of(order.reshape(-1), tuple(order.shape), n)

    @property
    def is_identity(self) -> bool:
        if self._identity is None:
            n = self.index.numel()
            self._identity = n == self.in_size and bool(torch.equal(self.index, torch.arange(n, dtype=torch.int64)))
        return self._identity

    @property
    def isometry(self) -> bool:  # type: ignore[override]
        return self.index.numel() == self.in_size and bool((self.index >= 0).all())

    def norm(self) -> float:
        return 1.0 if bool((self.index >= 0).any()) else 0.0


@dataclass(eq=False)
class Pick(_Gather):
    """y.flat[j] = x.flat[index[j]], or 0 where index[j] = −1, an entry possibly taken several times
    (a Gather with repeated indices, Expand, Tile, a wrap/reflect/edge Pad). Its matrix has one 1 per
    row, so AᵀA = diag(c) with c_i the times entry i is taken: the norm is exactly √(max c_i).
    Never a Permutation (which moves each entry at most once)."""

    @classmethod
    def of(cls, index, shape: Sequence[int], in_size: int) -> Pick:
        index, shape = cls._checked(index, shape, in_size)
        return cls(index, shape, int(in_size))

    def norm(self) -> float:
        kept = self.index[self.index >= 0]
        return sqrt_up(int(torch.bincount(kept).max())) if kept.numel() else 0.0


@dataclass(eq=False)
class Slice(Linear):
    """x[start:stop:step] along one axis (step ≥ 1; a negative step is a Permutation)."""

    axis: int
    start: int
    stop: int
    step: int = 1

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError("slice steps must be positive (a negative-step slice is a Permutation)")

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        shape = tuple(shapes[0])
        a = self.axis
        return shape[:a] + (len(range(self.start, self.stop, self.step)),) + shape[a + 1 :]

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        index = [slice(None)] * x.ndim
        index[self.axis + 1] = slice(self.start, self.stop, self.step)
        return x[tuple(index)]

    def norm(self) -> float:
        return 1.0


@dataclass(eq=False)
class Pad(Linear):
    """Zero padding, ONNX amounts: ``begins`` and ``ends`` per axis (a constant fill value is an
    offset: it cancels in differences)."""

    begins: Shape
    ends: Shape

    @classmethod
    def of(cls, pads: Sequence[int], rank: int) -> Pad:
        pads = tuple(int(p) for p in pads)
        if len(pads) != 2 * rank or min(pads, default=0) < 0:
            raise ValueError(f"pad needs {2 * rank} non-negative amounts, got {pads}")
        return cls(pads[:rank], pads[rank:])

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        return tuple(n + b + e for n, b, e in zip(shapes[0], self.begins, self.ends))

    def forward(self, *xs: Tensor) -> Tensor:
        return F.pad(xs[0], torch_pad((0, *self.begins), (0, *self.ends)))

    def norm(self) -> float:
        return 1.0
