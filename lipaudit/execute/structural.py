"""Ops that move, copy, select or relabel entries: shapes, casts, Slice/Split/Concat, Gather, Pad."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ExecutionError
from ..ir import Node
from .core import Env, attr, floats, input_or_attr, ints, op, positive_axis, torch_pads


@op("Identity")
def _identity(env, node, args):
    return args[0]


@op("Reshape")
def _reshape(env, node, args):
    x = args[0]
    target = input_or_attr(node, args, 1, "shape")
    if not attr(node, "allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


@op("Flatten")
def _flatten(env, node, args):
    x = args[0]
    axis = positive_axis(int(attr(node, "axis", 1)), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


@op("Transpose")
def _transpose(env, node, args):
    x = args[0]
    perm = attr(node, "perm") or list(reversed(range(x.dim())))
    return x.permute(*[int(p) for p in perm])


@op("Squeeze")
def _squeeze(env, node, args):
    x = args[0]
    axes = input_or_attr(node, args, 1, "axes")
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    drop = {positive_axis(a, x.dim()) for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


@op("Unsqueeze")
def _unsqueeze(env, node, args):
    x = args[0]
    axes = input_or_attr(node, args, 1, "axes") or []
    rank = x.dim() + len(axes)
    inserted = {positive_axis(a, rank) for a in axes}
    dims = iter(x.shape)
    return x.reshape([1 if i in inserted else next(dims) for i in range(rank)])


@op("Dropout")
def _dropout(env, node, args):
    x = args[0]
    training = args[2] if len(args) > 2 else None
    if training is not None and bool(training.reshape(-1)[0]):
        raise ExecutionError(f"cannot execute Dropout '{node.name}' in training mode (it is random)",
                             node=node.name, op=node.op_type)
    return [x, torch.ones(x.shape, dtype=torch.bool, device=x.device)][: max(1, len(node.outputs))]


_ONNX_TO_TORCH = {2: torch.uint8, 3: torch.int8, 4: torch.int64, 5: torch.int16, 6: torch.int32, 7: torch.int64,
                  9: torch.bool, 12: torch.int64, 13: torch.int64}
_HALF = {10: torch.float16, 16: torch.bfloat16}
_FLOATS = (1, 11)  # FLOAT, DOUBLE: computed in the executor's dtype


def _cast_to(env: Env, node: Node, x: Tensor, onnx_type: int) -> Tensor:
    if onnx_type in _FLOATS:
        return x.to(env.dtype)
    if onnx_type in _HALF:
        return x.to(_HALF[onnx_type]).to(env.dtype)  # round as the runtime does, compute as we do
    if onnx_type in _ONNX_TO_TORCH:
        return x.to(_ONNX_TO_TORCH[onnx_type])
    raise ExecutionError(f"cannot execute Cast '{node.name}' to ONNX type {onnx_type}", node=node.name,
                         op=node.op_type)


@op("Cast")
def _cast(env, node, args):
    return _cast_to(env, node, args[0], int(attr(node, "to")))


@op("CastLike")
def _cast_like(env, node, args):
    target = args[1]
    if target.is_floating_point():
        return args[0].to(env.dtype)
    return args[0].to(target.dtype)


@op("DepthToSpace")
def _depth_to_space(env, node, args):
    x = args[0]
    b, c, h, w = x.shape
    bs = int(attr(node, "blocksize"))
    if attr(node, "mode", "DCR") == "CRD":
        t = x.reshape(b, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        t = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return t.reshape(b, c // (bs * bs), h * bs, w * bs)


@op("SpaceToDepth")
def _space_to_depth(env, node, args):
    x = args[0]
    b, c, h, w = x.shape
    bs = int(attr(node, "blocksize"))
    t = x.reshape(b, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return t.reshape(b, c * bs * bs, h // bs, w // bs)


def _slice_indices(size: int, start: int, end: int, step: int) -> range:
    if step == 0:
        raise ValueError("Slice step 0")
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    return range(start, end, step)


@op("Slice")
def _slice(env, node, args):
    x = args[0]
    starts = input_or_attr(node, args, 1, "starts")
    ends = input_or_attr(node, args, 2, "ends")
    axes = input_or_attr(node, args, 3, "axes") or list(range(len(starts)))
    steps = input_or_attr(node, args, 4, "steps") or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = positive_axis(axis, x.dim())
        indices = _slice_indices(x.shape[axis], start, end, step)
        if step > 0:
            x = x.narrow(axis, indices.start, len(indices)) if step == 1 else \
                x[(slice(None),) * axis + (slice(indices.start, indices.stop, step),)]
        else:
            x = x.index_select(axis, torch.tensor(list(indices), dtype=torch.long, device=x.device))
    return x


@op("Split")
def _split(env, node, args):
    x = args[0]
    axis = positive_axis(int(attr(node, "axis", 0)), x.dim())
    sizes = input_or_attr(node, args, 1, "split")
    count = len(node.outputs)
    if not sizes:
        length = x.shape[axis]
        if "num_outputs" in node.attrs:
            count = int(node.attrs["num_outputs"])
            chunk = -(-length // count)
            sizes = [min(chunk, max(0, length - i * chunk)) for i in range(count)]
        else:
            sizes = [length // count] * count
    return list(torch.split(x, sizes, dim=axis))


@op("Concat")
def _concat(env, node, args):
    present = [a for a in args if a is not None]
    axis = positive_axis(int(attr(node, "axis")), present[0].dim())
    if any(a.is_floating_point() for a in present):
        present = [a.to(env.dtype) if not a.is_floating_point() else a for a in present]
    return torch.cat(present, dim=axis)


@op("Expand")
def _expand(env, node, args):
    x, shape = args[0], ints(args[1])
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))
    return x.expand(target)


@op("Tile")
def _tile(env, node, args):
    return args[0].repeat(*ints(args[1]))


@op("Gather")
def _gather(env, node, args):
    x, indices = args[0], args[1].long()
    axis = positive_axis(int(attr(node, "axis", 0)), x.dim())
    indices = torch.where(indices < 0, indices + x.shape[axis], indices)
    picked = x.index_select(axis, indices.reshape(-1))
    return picked.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:]))


def _pad_index(length: int, begin: int, end: int, mode: str) -> np.ndarray:
    source = np.arange(length)
    source = source[max(-begin, 0): len(source) - max(-end, 0)]
    numpy_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode]
    if numpy_mode == "reflect" and len(source) == 1:
        numpy_mode = "edge"
    return np.pad(source, (max(begin, 0), max(end, 0)), mode=numpy_mode)


@op("Pad")
def _pad(env, node, args):
    x = args[0]
    mode = attr(node, "mode", "constant")
    pads = input_or_attr(node, args, 1, "pads")
    axes = input_or_attr(node, args, 3, "axes")
    axes = [positive_axis(a, x.dim()) for a in axes] if axes else list(range(x.dim()))
    half = len(pads) // 2
    begins, ends = [0] * x.dim(), [0] * x.dim()
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + half]
    if mode == "constant":
        value_tensor = args[2] if len(args) > 2 else None
        value = float(floats(value_tensor)[0]) if value_tensor is not None and value_tensor.numel() else \
            float(attr(node, "value", 0.0))
        if not x.is_floating_point():
            value = int(value)
        return F.pad(x, torch_pads(begins, ends), value=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise ExecutionError(f"cannot execute Pad '{node.name}' in mode '{mode}'", node=node.name, op=node.op_type)
    for axis in range(x.dim()):
        if begins[axis] or ends[axis]:
            index = _pad_index(x.shape[axis], begins[axis], ends[axis], mode)
            x = x.index_select(axis, torch.as_tensor(index, dtype=torch.long, device=x.device))
    return x
