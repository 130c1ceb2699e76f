"""What an op's ``run`` works with: the run environment and helpers for reading tensor arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ExecutionError
from ..ir import Node

Args = list  # list[Tensor | None], one per node input ("" → None)


# The torch function an op class keeps as ``fn = staticmethod(...)``. Protocols, not Callables: mypy
# binds a Callable class attribute as a method (dropping its first parameter), a Protocol it does not.
class UnaryTensorFn(Protocol):
    def __call__(self, x: Tensor, /) -> Tensor: ...


class BinaryTensorFn(Protocol):
    def __call__(self, a: Tensor, b: Tensor, /) -> Tensor: ...


class Runs(Protocol):
    """Anything with an op's ``run``: what the helpers that evaluate an op need of it (so they need
    not import the registry that imports them)."""

    def run(self, env: Env, node: Node, args: list[Any]) -> Any: ...


class ReduceTensorFn(Protocol):
    def __call__(self, x: Tensor, axes: tuple[int, ...], /) -> Tensor: ...


@dataclass
class Env:
    """Float values are computed in ``dtype`` (float32 to compare with a runtime, float64 for lower
    bounds); integer and boolean values keep theirs."""

    opset: int
    dtype: torch.dtype
    device: torch.device


@overload
def ints(t: Tensor | np.ndarray | Sequence[int]) -> list[int]: ...
@overload
def ints(t: None) -> None: ...
@overload
def ints(t: Tensor | np.ndarray | Sequence[int] | None) -> list[int] | None: ...
def ints(t: Tensor | np.ndarray | Sequence[int] | None) -> list[int] | None:
    if t is None:
        return None
    if isinstance(t, Tensor):
        # .tolist(), not .numpy(): inside torch.func transforms (the lower bound's Jacobians) a
        # tensor has no storage numpy could read.
        return [int(v) for v in t.detach().cpu().reshape(-1).tolist()]
    return [int(v) for v in np.asarray(t).reshape(-1)]


@overload
def floats(t: Tensor) -> list[float]: ...
@overload
def floats(t: None) -> None: ...
@overload
def floats(t: Tensor | None) -> list[float] | None: ...
def floats(t: Tensor | None) -> list[float] | None:
    if t is None:
        return None
    return [float(v) for v in t.detach().cpu().reshape(-1).tolist()]


def input_or_attr(node: Node, args: Args, index: int, name: str) -> list[int] | None:
    """Attributes that later opsets moved to inputs: whichever the node has."""
    if index < len(args) and args[index] is not None:
        return ints(args[index])
    if not node.has_attr(name):
        return None
    return list(node.attr_ints(name))


def required_input_or_attr(node: Node, args: Args, index: int, name: str) -> list[int]:
    """``input_or_attr`` for what the op's schema requires (Reshape's shape, Slice's starts)."""
    found = input_or_attr(node, args, index, name)
    if found is None:
        raise cannot_run(node, f"without its {name}")
    return found


def positive_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def same_kind(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """An integer operand of a float one becomes float; otherwise torch's promotion applies."""
    if a.dtype != b.dtype and a.is_floating_point() != b.is_floating_point():
        target = a.dtype if a.is_floating_point() else b.dtype
        return a.to(target), b.to(target)
    return a, b


def cannot_run(node: Node, why: str) -> ExecutionError:
    return ExecutionError(f"cannot execute {node.op_type} '{node.name}' {why}", node=node.name, op=node.op_type)


def spatial_fn(family: str, rank: int, node: Node) -> Callable[..., Tensor]:
    by_family: dict[str, tuple[Callable[..., Tensor], Callable[..., Tensor], Callable[..., Tensor]]] = {
        "conv": (F.conv1d, F.conv2d, F.conv3d),
        "conv_transpose": (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d),
        "max_pool": (F.max_pool1d, F.max_pool2d, F.max_pool3d),
    }
    fns = by_family[family]
    if not 1 <= rank <= 3:
        raise cannot_run(node, f"with {rank} spatial dimensions")
    return fns[rank - 1]


def torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX (begin…, end…) over trailing axes → F.pad's (last_begin, last_end, …)."""
    out: list[int] = []
    for begin, end in zip(reversed(list(begins)), reversed(list(ends))):
        out += [int(begin), int(end)]
    return out
