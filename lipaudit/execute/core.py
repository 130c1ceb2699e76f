"""The op registry, the run environment, and the helpers every op family reads its node with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..analyzers.conv_attrs import WindowGeometry, window_geometry
from ..errors import ExecutionError
from ..ir import Node

Args = list  # list[Tensor | None], one per node input ("" → None)
OpFn = Callable[["Env", Node, Args], Any]

_OPS: dict[tuple[str, str], OpFn] = {}


class DuplicateOpError(RuntimeError):
    pass


def op(*op_types: str, domain: str = "") -> Callable[[OpFn], OpFn]:
    """Register ``fn(env, node, args)`` to run each op type: a tensor, or a list for several outputs."""

    def register(fn: OpFn) -> OpFn:
        for op_type in op_types:
            if (domain, op_type) in _OPS:
                raise DuplicateOpError(f"{domain or 'ai.onnx'}::{op_type} already has an executor")
            _OPS[(domain, op_type)] = fn
        return fn

    return register


def supported_ops() -> list[tuple[str, str]]:
    """(domain, op_type) pairs the executor can run."""
    return sorted(_OPS)


def can_execute(node: Node) -> bool:
    return (_domain(node.domain), node.op_type) in _OPS


def lookup(node: Node) -> OpFn:
    return _OPS[(_domain(node.domain), node.op_type)]


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def op_label(node: Node) -> str:
    domain = _domain(node.domain)
    return f"{domain}::{node.op_type}" if domain else node.op_type


@dataclass
class Env:
    opset: int
    dtype: torch.dtype
    device: torch.device


# ---------------------------------------------------------------- reading nodes


def attr(node: Node, name: str, default: Any = None) -> Any:
    return node.attrs.get(name, default)


def ints(t: Tensor | np.ndarray | Sequence[int] | None) -> list[int] | None:
    if t is None:
        return None
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return [int(v) for v in np.asarray(t).reshape(-1)]


def floats(t: Tensor | None) -> list[float] | None:
    if t is None:
        return None
    return [float(v) for v in t.detach().cpu().reshape(-1).tolist()]


def input_or_attr(node: Node, args: Args, index: int, name: str) -> list[int] | None:
    """Attributes that later opsets moved to inputs: whichever the node has."""
    if index < len(args) and args[index] is not None:
        return ints(args[index])
    value = node.attrs.get(name)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def positive_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def same_kind(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """An integer operand of a float one becomes float; otherwise torch's promotion applies."""
    if a.dtype != b.dtype and a.is_floating_point() != b.is_floating_point():
        target = a.dtype if a.is_floating_point() else b.dtype
        return a.to(target), b.to(target)
    return a, b


# ---------------------------------------------------------------- windows (Conv, pooling, Pad)


class _AttrReader:
    """What conv_attrs.window_geometry reads from an analysis context."""

    @staticmethod
    def attr(node: Node, name: str, default: Any = None) -> Any:
        return node.attrs.get(name, default)


def geometry(node: Node, kernel: tuple[int, ...], spatial: tuple[int, ...]) -> WindowGeometry:
    return window_geometry(node, _AttrReader(), kernel, spatial)  # type: ignore[arg-type]


def spatial_fn(family: str, rank: int, node: Node) -> Callable:
    fns = {"conv": (F.conv1d, F.conv2d, F.conv3d), "conv_transpose": (F.conv_transpose1d, F.conv_transpose2d,
                                                                       F.conv_transpose3d),
           "max_pool": (F.max_pool1d, F.max_pool2d, F.max_pool3d)}[family]
    if not 1 <= rank <= 3:
        raise ExecutionError(f"cannot execute {node.op_type} '{node.name}' with {rank} spatial dimensions",
                             node=node.name, op=node.op_type)
    return fns[rank - 1]


def torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX (begin…, end…) over trailing axes → F.pad's (last_begin, last_end, …)."""
    out: list[int] = []
    for begin, end in zip(reversed(list(begins)), reversed(list(ends))):
        out += [int(begin), int(end)]
    return out
