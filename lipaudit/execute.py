"""Run the IR with torch ops: the function lipaudit analyses, made executable.

Used for the faithfulness check (the IR against the model's own runtime) and for the empirical
lower bound (Jacobian norms). Every op with a Lipschitz rule can run here, with ONNX semantics:
``auto_pad``, asymmetric pads, ``count_include_pad``, ``ceil_mode``, and the opset-dependent forms
where an attribute became an input (Pad, Slice, Split, Reduce*, Squeeze, Unsqueeze, Clip).

Float values are computed in one dtype (float32 to compare with a runtime, float64 for lower
bounds); integer and boolean values keep theirs. Everything is differentiable where the op is.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .analyzers.conv_attrs import window_geometry
from .errors import ExecutionError
from .ir import Graph, Node

Args = list  # list[Tensor | None], one per node input ("" → None)
OpFn = Callable[["_Env", Node, Args], Any]

_OPS: dict[tuple[str, str], OpFn] = {}


def _op(*op_types: str, domain: str = "") -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for op_type in op_types:
            _OPS[(domain, op_type)] = fn
        return fn

    return register


def supported_ops() -> list[tuple[str, str]]:
    """(domain, op_type) pairs the executor can run."""
    return sorted(_OPS)


def can_execute(node: Node) -> bool:
    return (_domain(node.domain), node.op_type) in _OPS


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _op_label(node: Node) -> str:
    domain = _domain(node.domain)
    return f"{domain}::{node.op_type}" if domain else node.op_type


@dataclass
class _Env:
    opset: int
    dtype: torch.dtype
    device: torch.device


# ---------------------------------------------------------------- helpers


def _attr(node: Node, name: str, default: Any = None) -> Any:
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _ints(t: Tensor | np.ndarray | Sequence[int] | None) -> list[int] | None:
    if t is None:
        return None
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return [int(v) for v in np.asarray(t).reshape(-1)]


def _floats(t: Tensor | None) -> list[float] | None:
    if t is None:
        return None
    return [float(v) for v in t.detach().cpu().reshape(-1).tolist()]


def _input_or_attr(node: Node, args: Args, index: int, attr: str) -> list[int] | None:
    """Attributes that later opsets moved to inputs: whichever the node has."""
    if index < len(args) and args[index] is not None:
        return _ints(args[index])
    value = node.attrs.get(attr)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


class _AttrReader:
    """What conv_attrs.window_geometry reads from an analysis context."""

    @staticmethod
    def attr(node: Node, name: str, default: Any = None) -> Any:
        return node.attrs.get(name, default)


def _geometry(node: Node, kernel: tuple[int, ...], spatial: tuple[int, ...]):
    return window_geometry(node, _AttrReader(), kernel, spatial)  # type: ignore[arg-type]


def _spatial_fn(family: str, rank: int, node: Node) -> Callable:
    fns = {"conv": (F.conv1d, F.conv2d, F.conv3d), "conv_transpose": (F.conv_transpose1d, F.conv_transpose2d,
                                                                       F.conv_transpose3d),
           "max_pool": (F.max_pool1d, F.max_pool2d, F.max_pool3d)}[family]
    if not 1 <= rank <= 3:
        raise ExecutionError(f"cannot execute {node.op_type} '{node.name}' with {rank} spatial dimensions",
                             node=node.name, op=node.op_type)
    return fns[rank - 1]


def _torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX (begin…, end…) over trailing axes → F.pad's (last_begin, last_end, …)."""
    out: list[int] = []
    for begin, end in zip(reversed(list(begins)), reversed(list(ends))):
        out += [int(begin), int(end)]
    return out


# ---------------------------------------------------------------- elementwise


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda env, node, args: fn(args[0])


for _name, _fn in {
    "Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Abs": torch.abs, "Neg": torch.neg,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Atan": torch.atan, "Asin": torch.asin,
    "Acos": torch.acos, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh,
    "Atanh": torch.atanh, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal,
    "Erf": torch.erf, "Sign": torch.sign, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Softsign": lambda x: x / (1 + x.abs()), "Silu": F.silu, "Mish": F.mish, "HardSwish": F.hardswish,
    "Softplus": lambda x: F.softplus(x, beta=1.0, threshold=30.0),
}.items():
    _op(_name)(_unary(_fn))


@_op("Identity")
def _identity(env, node, args):
    return args[0]


@_op("Gelu")
def _gelu(env, node, args):
    return F.gelu(args[0], approximate="tanh" if _attr(node, "approximate", "none") == "tanh" else "none")


@_op("Swish")
def _swish(env, node, args):
    alpha = float(_attr(node, "alpha", 1.0))
    return args[0] * torch.sigmoid(alpha * args[0])


@_op("LeakyRelu")
def _leaky_relu(env, node, args):
    x, alpha = args[0], float(_attr(node, "alpha", 0.01))
    return torch.where(x >= 0, x, alpha * x)


@_op("Elu")
def _elu(env, node, args):
    x, alpha = args[0], float(_attr(node, "alpha", 1.0))
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


@_op("Celu")
def _celu(env, node, args):
    return F.celu(args[0], alpha=float(_attr(node, "alpha", 1.0)))


@_op("Selu")
def _selu(env, node, args):
    x = args[0]
    alpha = float(_attr(node, "alpha", 1.67326319217681884765625))
    gamma = float(_attr(node, "gamma", 1.05070102214813232421875))
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


@_op("HardSigmoid")
def _hard_sigmoid(env, node, args):
    alpha, beta = float(_attr(node, "alpha", 0.2)), float(_attr(node, "beta", 0.5))
    return torch.clamp(alpha * args[0] + beta, 0.0, 1.0)


@_op("ThresholdedRelu")
def _thresholded_relu(env, node, args):
    x = args[0]
    return torch.where(x > float(_attr(node, "alpha", 1.0)), x, torch.zeros_like(x))


@_op("Shrink")
def _shrink(env, node, args):
    x = args[0]
    bias, lambd = float(_attr(node, "bias", 0.0)), float(_attr(node, "lambd", 0.5))
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@_op("PRelu")
def _prelu(env, node, args):
    x, slope = args[0], args[1]
    if slope.dim() == 1 and x.dim() > 2 and slope.numel() == x.shape[1] and slope.numel() not in (1, x.shape[-1]):
        slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))  # opset 6: one slope per channel
    return torch.where(x < 0, slope * x, x)


@_op("Clip")
def _clip(env, node, args):
    x = args[0]
    low = args[1] if len(args) > 1 else None
    high = args[2] if len(args) > 2 else None
    if low is None and "min" in node.attrs:
        low = torch.tensor(float(node.attrs["min"]), dtype=x.dtype, device=x.device)
    if high is None and "max" in node.attrs:
        high = torch.tensor(float(node.attrs["max"]), dtype=x.dtype, device=x.device)
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))  # min > max gives max, as ONNX says
    return x


# ---------------------------------------------------------------- arithmetic


def _same_kind(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.dtype != b.dtype and a.is_floating_point() != b.is_floating_point():
        target = a.dtype if a.is_floating_point() else b.dtype
        return a.to(target), b.to(target)
    return a, b


@_op("Add")
def _add(env, node, args):
    return torch.add(*_same_kind(args[0], args[1]))


@_op("Sub")
def _sub(env, node, args):
    return torch.sub(*_same_kind(args[0], args[1]))


@_op("Mul")
def _mul(env, node, args):
    return torch.mul(*_same_kind(args[0], args[1]))


@_op("Div")
def _div(env, node, args):
    a, b = _same_kind(args[0], args[1])
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@_op("Pow")
def _pow(env, node, args):
    base, exponent = args[0], args[1]
    if base.is_floating_point() and exponent.is_floating_point():
        exponent = exponent.to(base.dtype)
    return torch.pow(base, exponent).to(base.dtype)


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def run(env, node, args):
        present = [a for a in args if a is not None]
        out = present[0]
        for other in present[1:]:
            out = fn(*_same_kind(out, other))
        return out

    return run


_op("Sum")(_variadic(torch.add))
_op("Max")(_variadic(torch.maximum))
_op("Min")(_variadic(torch.minimum))


# ---------------------------------------------------------------- linear


@_op("Gemm")
def _gemm(env, node, args):
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if _attr(node, "transA", 0):
        a = a.transpose(-1, -2)
    if _attr(node, "transB", 0):
        b = b.transpose(-1, -2)
    out = float(_attr(node, "alpha", 1.0)) * (a @ b)
    if c is not None:
        out = out + float(_attr(node, "beta", 1.0)) * c
    return out


@_op("MatMul")
def _matmul(env, node, args):
    return torch.matmul(*_same_kind(args[0], args[1]))


@_op("Conv")
def _conv(env, node, args):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    spatial = tuple(x.shape[2:])
    kernel = tuple(int(k) for k in (_attr(node, "kernel_shape") or weight.shape[2:]))
    geometry = _geometry(node, kernel, spatial)
    n = len(kernel)
    begins, ends = geometry.pads[:n], geometry.pads[n:]
    if tuple(begins) == tuple(ends):
        padding: Sequence[int] = begins
    else:
        x, padding = F.pad(x, _torch_pads(begins, ends)), (0,) * n
    conv = _spatial_fn("conv", n, node)
    return conv(x, weight, bias, stride=geometry.strides, padding=tuple(padding), dilation=geometry.dilations,
                groups=int(_attr(node, "group", 1)))


def conv_transpose_pads(node: Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                        dilations: Sequence[int], output_padding: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begins, ends) of a ConvTranspose's crop, as onnxruntime derives them from output_shape / auto_pad."""
    n = len(kernel)
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    output_shape = _attr(node, "output_shape")
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        if auto_pad == "VALID":
            return [0] * n, [0] * n
        pads = [int(p) for p in (_attr(node, "pads") or [0] * (2 * n))]
        return pads[:n], pads[n:]
    if output_shape is not None:
        targets = [int(v) for v in list(output_shape)[-n:]]
    else:
        targets = [size * s for size, s in zip(spatial, strides)]
    begins, ends = [], []
    for size, target, k, s, d, extra in zip(spatial, targets, kernel, strides, dilations, output_padding):
        total = max(0, s * (size - 1) + extra + (k - 1) * d + 1 - target)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return begins, ends


@_op("ConvTranspose")
def _conv_transpose(env, node, args):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    spatial = tuple(x.shape[2:])
    n = len(spatial)
    kernel = tuple(int(k) for k in (_attr(node, "kernel_shape") or weight.shape[2:]))
    strides = tuple(int(s) for s in (_attr(node, "strides") or (1,) * n))
    dilations = tuple(int(d) for d in (_attr(node, "dilations") or (1,) * n))
    output_padding = tuple(int(p) for p in (_attr(node, "output_padding") or (0,) * n))
    begins, ends = conv_transpose_pads(node, spatial, kernel, strides, dilations, output_padding)
    full = _spatial_fn("conv_transpose", n, node)(x, weight, None, stride=strides, padding=0, output_padding=0,
                                                  groups=int(_attr(node, "group", 1)), dilation=dilations)
    # The full output, extended by output_padding, then cropped by the pads (negative F.pad crops).
    out = F.pad(full, _torch_pads([-b for b in begins], [p - e for p, e in zip(output_padding, ends)]))
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * n)
    return out


# ---------------------------------------------------------------- normalisation


def _channel_view(t: Tensor, rank: int) -> Tensor:
    return t.reshape((1, -1) + (1,) * (rank - 2)) if t.dim() == 1 else t.unsqueeze(0)


@_op("BatchNormalization")
def _batch_norm(env, node, args):
    if _attr(node, "training_mode", 0) or any(node.outputs[1:]):
        raise ExecutionError(f"cannot execute BatchNormalization '{node.name}' in training mode",
                             node=node.name, op=node.op_type)
    x, scale, bias, mean, var = args[:5]
    rank = x.dim()
    epsilon = float(_attr(node, "epsilon", 1e-5))
    multiplier = _channel_view(scale, rank) / torch.sqrt(_channel_view(var, rank) + epsilon)
    return (x - _channel_view(mean, rank)) * multiplier + _channel_view(bias, rank)


@_op("InstanceNormalization")
def _instance_norm(env, node, args):
    x, scale, bias = args[:3]
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    normalised = (x - mean) / torch.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
    return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@_op("LayerNormalization")
def _layer_norm(env, node, args):
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = _axis(int(_attr(node, "axis", -1)), x.dim())
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + float(_attr(node, "epsilon", 1e-5)))
    out = (x - mean) * inv_std * scale
    if bias is not None:
        out = out + bias
    return [out, mean, inv_std][: max(1, len(node.outputs))]


@_op("GroupNormalization")
def _group_norm(env, node, args):
    x, scale, bias = args[:3]
    groups = int(_attr(node, "num_groups"))
    channels = x.shape[1]
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(dim=2, keepdim=True)
    var = ((grouped - mean) ** 2).mean(dim=2, keepdim=True)
    normalised = ((grouped - mean) / torch.sqrt(var + float(_attr(node, "epsilon", 1e-5)))).reshape(x.shape)
    if scale.numel() == groups and groups != channels:  # opset 18: one scale per group
        scale = scale.repeat_interleave(channels // groups)
        bias = bias.repeat_interleave(channels // groups)
    return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@_op("LpNormalization")
def _lp_norm(env, node, args):
    x = args[0]
    p = int(_attr(node, "p", 2))
    axis = int(_attr(node, "axis", -1))
    norm = x.abs().sum(dim=axis, keepdim=True) if p == 1 else torch.sqrt((x * x).sum(dim=axis, keepdim=True))
    return x / norm


# ---------------------------------------------------------------- softmax family


def _coerced(env: _Env, node: Node, x: Tensor) -> tuple[Tensor, int]:
    """Opsets < 13 flatten to 2-D at ``axis`` (default 1); later ones work on one axis (default -1)."""
    if env.opset >= 13:
        return x, _axis(int(_attr(node, "axis", -1)), x.dim())
    axis = _axis(int(_attr(node, "axis", 1)), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1), 1


@_op("Softmax")
def _softmax(env, node, args):
    x, axis = _coerced(env, node, args[0])
    return torch.softmax(x, dim=axis).reshape(args[0].shape)


@_op("LogSoftmax")
def _log_softmax(env, node, args):
    x, axis = _coerced(env, node, args[0])
    return torch.log_softmax(x, dim=axis).reshape(args[0].shape)


@_op("Hardmax")
def _hardmax(env, node, args):
    x, axis = _coerced(env, node, args[0])
    index = torch.argmax(x, dim=axis, keepdim=True)
    return torch.zeros_like(x).scatter(axis, index, 1.0).reshape(args[0].shape)


def _arg_extreme(fn: Callable) -> OpFn:
    def run(env, node, args):
        x = args[0]
        axis = _axis(int(_attr(node, "axis", 0)), x.dim())
        keep = bool(_attr(node, "keepdims", 1))
        if _attr(node, "select_last_index", 0):
            return x.shape[axis] - 1 - fn(torch.flip(x, dims=(axis,)), dim=axis, keepdim=keep)
        return fn(x, dim=axis, keepdim=keep)

    return run


_op("ArgMax")(_arg_extreme(torch.argmax))
_op("ArgMin")(_arg_extreme(torch.argmin))


# ---------------------------------------------------------------- pooling


def _pool_layout(node: Node, x: Tensor) -> tuple[tuple[int, ...], Any, list[int], list[int], list[int]]:
    """kernel, geometry, begins, ends (the explicit pads) and the output sizes, ONNX rules."""
    kernel = tuple(int(k) for k in _attr(node, "kernel_shape"))
    n = len(kernel)
    spatial = tuple(x.shape[2:])
    geometry = _geometry(node, kernel, spatial)
    begins, ends = list(geometry.pads[:n]), list(geometry.pads[n:])
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    ceil_mode = bool(_attr(node, "ceil_mode", 0))
    outs = []
    for size, k, s, d, begin, end in zip(spatial, kernel, geometry.strides, geometry.dilations, begins, ends):
        span = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
        else:
            room = size + begin + end - span
            out = (-(-room // s) if ceil_mode else room // s) + 1
            if ceil_mode and (out - 1) * s >= size + begin:
                out -= 1  # a window may not start in the right padding
        outs.append(max(out, 0))
    return kernel, geometry, begins, ends, outs


def _pool_input(x: Tensor, geometry, kernel, begins, ends, outs, value: float) -> tuple[Tensor, list[int]]:
    """Pad by the explicit pads, plus what ceil_mode windows overhang, with ``value``."""
    extras = []
    for size, k, s, d, begin, end, out in zip(x.shape[2:], kernel, geometry.strides, geometry.dilations, begins,
                                              ends, outs):
        needed = (out - 1) * s + (k - 1) * d + 1
        extras.append(max(0, needed - (size + begin + end)))
    padded = F.pad(x, _torch_pads(begins, [e + extra for e, extra in zip(ends, extras)]), value=value)
    return padded, extras


def _crop_to(t: Tensor, outs: Sequence[int]) -> Tensor:
    index = (slice(None), slice(None)) + tuple(slice(0, o) for o in outs)
    return t[index]


@_op("MaxPool")
def _max_pool(env, node, args):
    x = args[0]
    kernel, geometry, begins, ends, outs = _pool_layout(node, x)
    n = len(kernel)
    fill = -math.inf if x.is_floating_point() else int(torch.iinfo(x.dtype).min)
    padded, _ = _pool_input(x, geometry, kernel, begins, ends, outs, fill)
    pool = _spatial_fn("max_pool", n, node)
    want_indices = len(node.outputs) > 1 and bool(node.outputs[1])
    if not want_indices:
        return _crop_to(pool(padded, kernel, stride=geometry.strides, padding=0, dilation=geometry.dilations), outs)
    values, flat = pool(padded, kernel, stride=geometry.strides, padding=0, dilation=geometry.dilations,
                        return_indices=True)
    values, flat = _crop_to(values, outs), _crop_to(flat, outs)
    # torch indexes the padded plane; ONNX the whole input tensor, row-major (or column-major).
    padded_sizes = padded.shape[2:]
    coords = []
    for size in reversed(padded_sizes):
        coords.append(flat % size)
        flat = flat // size
    coords = [c - b for c, b in zip(reversed(coords), begins)]
    sizes = list(x.shape[2:])
    order = range(n) if not _attr(node, "storage_order", 0) else reversed(range(n))
    index = torch.zeros_like(coords[0])
    for axis in order:
        index = index * sizes[axis] + coords[axis]
    plane = int(np.prod(sizes))
    batch = torch.arange(x.shape[0], device=x.device).reshape((-1, 1) + (1,) * n)
    channel = torch.arange(x.shape[1], device=x.device).reshape((1, -1) + (1,) * n)
    return values, index + (batch * x.shape[1] + channel) * plane


def _window_sum(t: Tensor, kernel, geometry, node: Node) -> Tensor:
    """Sum over each window: a depthwise convolution with a kernel of ones."""
    n = len(kernel)
    flat = t.reshape((-1, 1) + tuple(t.shape[2:]))
    ones = torch.ones((1, 1) + tuple(kernel), dtype=t.dtype, device=t.device)
    summed = _spatial_fn("conv", n, node)(flat, ones, stride=geometry.strides, dilation=geometry.dilations)
    return summed.reshape(tuple(t.shape[:2]) + tuple(summed.shape[2:]))


@_op("AveragePool")
def _average_pool(env, node, args):
    x = args[0]
    kernel, geometry, begins, ends, outs = _pool_layout(node, x)
    padded, extras = _pool_input(x, geometry, kernel, begins, ends, outs, 0.0)
    # The divisor counts the input entries of each window, and the explicit pads with count_include_pad,
    # never what a ceil_mode window overhangs.
    mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    if _attr(node, "count_include_pad", 0):
        mask = F.pad(mask, _torch_pads(begins, ends), value=1.0)
        mask = F.pad(mask, _torch_pads([0] * len(kernel), extras), value=0.0)
    else:
        mask = F.pad(mask, _torch_pads(begins, [e + extra for e, extra in zip(ends, extras)]), value=0.0)
    total = _crop_to(_window_sum(padded, kernel, geometry, node), outs)
    count = _crop_to(_window_sum(mask, kernel, geometry, node), outs)
    return total / count


@_op("GlobalAveragePool")
def _global_average_pool(env, node, args):
    x = args[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@_op("GlobalMaxPool")
def _global_max_pool(env, node, args):
    x = args[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# ---------------------------------------------------------------- reductions


def _reduce_axes(node: Node, args: Args, x: Tensor) -> tuple[int, ...] | None:
    """The reduced axes, or None for a no-op (empty axes with noop_with_empty_axes)."""
    axes = _input_or_attr(node, args, 1, "axes")
    if not axes:
        if _attr(node, "noop_with_empty_axes", 0):
            return None
        return tuple(range(x.dim()))
    return tuple(sorted({_axis(a, x.dim()) for a in axes}))


def _reduction(fn: Callable[[Tensor, tuple[int, ...]], Tensor]) -> OpFn:
    def run(env, node, args):
        x = args[0]
        axes = _reduce_axes(node, args, x)
        if axes is None:
            return x
        out = fn(x, axes) if axes else x
        if _attr(node, "keepdims", 1):
            shape = [1 if i in axes else d for i, d in enumerate(x.shape)]
            return out.reshape(shape)
        return out

    return run


def _prod(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.prod(dim=axis)
    return x


for _name, _fn in {
    "ReduceMean": lambda x, a: x.mean(dim=a), "ReduceSum": lambda x, a: x.sum(dim=a),
    "ReduceMax": lambda x, a: x.amax(dim=a), "ReduceMin": lambda x, a: x.amin(dim=a),
    "ReduceL1": lambda x, a: x.abs().sum(dim=a), "ReduceL2": lambda x, a: torch.sqrt((x * x).sum(dim=a)),
    "ReduceSumSquare": lambda x, a: (x * x).sum(dim=a), "ReduceLogSum": lambda x, a: torch.log(x.sum(dim=a)),
    "ReduceLogSumExp": lambda x, a: torch.logsumexp(x, dim=a), "ReduceProd": _prod,
}.items():
    _op(_name)(_reduction(_fn))


# ---------------------------------------------------------------- structural


@_op("Reshape")
def _reshape(env, node, args):
    x = args[0]
    target = _input_or_attr(node, args, 1, "shape")
    if not _attr(node, "allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


@_op("Flatten")
def _flatten(env, node, args):
    x = args[0]
    axis = _axis(int(_attr(node, "axis", 1)), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


@_op("Transpose")
def _transpose(env, node, args):
    x = args[0]
    perm = _attr(node, "perm") or list(reversed(range(x.dim())))
    return x.permute(*[int(p) for p in perm])


@_op("Squeeze")
def _squeeze(env, node, args):
    x = args[0]
    axes = _input_or_attr(node, args, 1, "axes")
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    drop = {_axis(a, x.dim()) for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


@_op("Unsqueeze")
def _unsqueeze(env, node, args):
    x = args[0]
    axes = _input_or_attr(node, args, 1, "axes") or []
    rank = x.dim() + len(axes)
    inserted = {_axis(a, rank) for a in axes}
    dims = iter(x.shape)
    return x.reshape([1 if i in inserted else next(dims) for i in range(rank)])


@_op("Dropout")
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


def _cast_to(env: _Env, node: Node, x: Tensor, onnx_type: int) -> Tensor:
    if onnx_type in _FLOATS:
        return x.to(env.dtype)
    if onnx_type in _HALF:
        return x.to(_HALF[onnx_type]).to(env.dtype)  # round as the runtime does, compute as we do
    if onnx_type in _ONNX_TO_TORCH:
        return x.to(_ONNX_TO_TORCH[onnx_type])
    raise ExecutionError(f"cannot execute Cast '{node.name}' to ONNX type {onnx_type}", node=node.name,
                         op=node.op_type)


@_op("Cast")
def _cast(env, node, args):
    return _cast_to(env, node, args[0], int(_attr(node, "to")))


@_op("CastLike")
def _cast_like(env, node, args):
    target = args[1]
    if target.is_floating_point():
        return args[0].to(env.dtype)
    return args[0].to(target.dtype)


@_op("DepthToSpace")
def _depth_to_space(env, node, args):
    x = args[0]
    b, c, h, w = x.shape
    bs = int(_attr(node, "blocksize"))
    if _attr(node, "mode", "DCR") == "CRD":
        t = x.reshape(b, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        t = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return t.reshape(b, c // (bs * bs), h * bs, w * bs)


@_op("SpaceToDepth")
def _space_to_depth(env, node, args):
    x = args[0]
    b, c, h, w = x.shape
    bs = int(_attr(node, "blocksize"))
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


@_op("Slice")
def _slice(env, node, args):
    x = args[0]
    starts = _input_or_attr(node, args, 1, "starts")
    ends = _input_or_attr(node, args, 2, "ends")
    axes = _input_or_attr(node, args, 3, "axes") or list(range(len(starts)))
    steps = _input_or_attr(node, args, 4, "steps") or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
        indices = _slice_indices(x.shape[axis], start, end, step)
        if step > 0:
            x = x.narrow(axis, indices.start, len(indices)) if step == 1 else \
                x[(slice(None),) * axis + (slice(indices.start, indices.stop, step),)]
        else:
            x = x.index_select(axis, torch.tensor(list(indices), dtype=torch.long, device=x.device))
    return x


@_op("Split")
def _split(env, node, args):
    x = args[0]
    axis = _axis(int(_attr(node, "axis", 0)), x.dim())
    sizes = _input_or_attr(node, args, 1, "split")
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


@_op("Concat")
def _concat(env, node, args):
    present = [a for a in args if a is not None]
    axis = _axis(int(_attr(node, "axis")), present[0].dim())
    if any(a.is_floating_point() for a in present):
        present = [a.to(env.dtype) if not a.is_floating_point() else a for a in present]
    return torch.cat(present, dim=axis)


@_op("Expand")
def _expand(env, node, args):
    x, shape = args[0], _ints(args[1])
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))
    return x.expand(target)


@_op("Tile")
def _tile(env, node, args):
    return args[0].repeat(*_ints(args[1]))


@_op("Gather")
def _gather(env, node, args):
    x, indices = args[0], args[1].long()
    axis = _axis(int(_attr(node, "axis", 0)), x.dim())
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


@_op("Pad")
def _pad(env, node, args):
    x = args[0]
    mode = _attr(node, "mode", "constant")
    pads = _input_or_attr(node, args, 1, "pads")
    axes = _input_or_attr(node, args, 3, "axes")
    axes = [_axis(a, x.dim()) for a in axes] if axes else list(range(x.dim()))
    half = len(pads) // 2
    begins, ends = [0] * x.dim(), [0] * x.dim()
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + half]
    if mode == "constant":
        value_tensor = args[2] if len(args) > 2 else None
        value = float(_floats(value_tensor)[0]) if value_tensor is not None and value_tensor.numel() else \
            float(_attr(node, "value", 0.0))
        if not x.is_floating_point():
            value = int(value)
        return F.pad(x, _torch_pads(begins, ends), value=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise ExecutionError(f"cannot execute Pad '{node.name}' in mode '{mode}'", node=node.name, op=node.op_type)
    for axis in range(x.dim()):
        if begins[axis] or ends[axis]:
            index = _pad_index(x.shape[axis], begins[axis], ends[axis], mode)
            x = x.index_select(axis, torch.as_tensor(index, dtype=torch.long, device=x.device))
    return x


# ---------------------------------------------------------------- resize


def _resize_source(mode: str, out_size: int, in_size: int, scale: float) -> np.ndarray:
    """Where output index o samples the input, per coordinate_transformation_mode."""
    o = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "asymmetric":
        return o / scale
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        offset = in_size / 2 * (1 - adjustment)
        return offset + (o + 0.5) / scale - 0.5
    raise ValueError(f"coordinate_transformation_mode '{mode}'")


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    rounding = {"floor": np.floor, "ceil": np.ceil, "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                "round_prefer_floor": lambda v: np.ceil(v - 0.5)}
    if mode not in rounding:
        raise ValueError(f"nearest_mode '{mode}'")
    return rounding[mode](x)


@_op("Resize", "Upsample")
def _resize(env, node, args):
    x = args[0]
    upsample = node.op_type == "Upsample"
    mode = _attr(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    unsupported = (mode not in ("nearest", "linear") or _attr(node, "antialias", 0) or _attr(node, "axes") is not None
                   or _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch")
    old_form = upsample or env.opset < 11
    coordinates = _attr(node, "coordinate_transformation_mode", "asymmetric" if old_form else "half_pixel")
    if unsupported or coordinates == "tf_crop_and_resize":
        raise ExecutionError(f"cannot execute {node.op_type} '{node.name}' in this form (mode '{mode}', "
                             f"coordinates '{coordinates}')", node=node.name, op=node.op_type)
    nearest_mode = _attr(node, "nearest_mode", "floor" if old_form else "round_prefer_floor")
    if upsample and "scales" in node.attrs:
        scales, sizes = [float(v) for v in node.attrs["scales"]], None
    else:
        scale_index = 1 if old_form else 2
        scale_arg = args[scale_index] if len(args) > scale_index else None
        scales = _floats(scale_arg) if scale_arg is not None and scale_arg.numel() else None
        size_arg = args[3] if not old_form and len(args) > 3 else None
        sizes = _ints(size_arg) if size_arg is not None and size_arg.numel() else None
    for axis, in_size in enumerate(x.shape):
        # onnxruntime multiplies in float32: 5 × 1.4f is 7, not 6.9999999.
        out_size = sizes[axis] if sizes else int(np.floor(np.float32(in_size) * np.float32(scales[axis])))
        scale = out_size / in_size if sizes else scales[axis]
        if out_size == in_size and scale == 1.0:
            continue
        source = _resize_source(coordinates, out_size, in_size, scale)
        if mode == "nearest":
            index = np.clip(_nearest(source, nearest_mode), 0, in_size - 1).astype(np.int64)
            x = x.index_select(axis, torch.as_tensor(index, device=x.device))
            continue
        source = np.clip(source, 0, in_size - 1)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, in_size - 1)
        weight = torch.as_tensor(source - low, dtype=x.dtype, device=x.device)
        view = (-1,) + (1,) * (x.dim() - axis - 1)
        lows = x.index_select(axis, torch.as_tensor(low, device=x.device))
        highs = x.index_select(axis, torch.as_tensor(high, device=x.device))
        x = lows * (1 - weight).reshape(view) + highs * weight.reshape(view)
    return x


# ---------------------------------------------------------------- attention


def _attention_core(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, mask: Tensor | None = None,
                    softcap: float = 0.0) -> Tensor:
    """q (B, H, S, D), k (B, H, L, D), v (B, H, L, Dv) → (B, H, S, Dv)."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    if causal:
        s, length = scores.shape[-2:]
        allowed = torch.ones(s, length, dtype=torch.bool, device=q.device).tril(diagonal=length - s)
        scores = scores.masked_fill(~allowed, -math.inf)
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    return torch.softmax(scores, dim=-1) @ v


def _no_extra(node: Node, first_optional_output: int, inputs: dict[int, str], args: Args) -> None:
    for index, what in inputs.items():
        if index < len(args) and args[index] is not None:
            raise ExecutionError(f"cannot execute {node.op_type} '{node.name}' with {what}", node=node.name,
                                 op=node.op_type)
    if any(node.outputs[first_optional_output:]):
        raise ExecutionError(f"cannot execute {node.op_type} '{node.name}': only its first output is supported",
                             node=node.name, op=node.op_type)


@_op("Attention")
def _onnx_attention(env, node, args):
    """ONNX Attention (opset 23): 4-D (B, H, S, D) or 3-D (B, S, H·D) inputs, no KV cache."""
    _no_extra(node, 1, {4: "a past key", 5: "a past value", 6: "nonpad_kv_seqlen"}, args)
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else None
    three_d = q.dim() == 3
    if three_d:
        q_heads = int(_attr(node, "q_num_heads"))
        kv_heads = int(_attr(node, "kv_num_heads"))
        b, s, _ = q.shape
        q = q.reshape(b, s, q_heads, -1).transpose(1, 2)
        k = k.reshape(b, k.shape[1], kv_heads, -1).transpose(1, 2)
        v = v.reshape(b, v.shape[1], kv_heads, -1).transpose(1, 2)
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scale = float(_attr(node, "scale", 0.0) or 1.0 / math.sqrt(q.shape[-1]))
    if mask is not None and mask.is_floating_point():
        mask = mask.to(q.dtype)
    out = _attention_core(q, k, v, scale, bool(_attr(node, "is_causal", 0)), mask,
                          float(_attr(node, "softcap", 0.0)))
    if three_d:
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
    return out


def _split_heads(t: Tensor, heads: int) -> Tensor:
    b, s, hidden = t.shape
    return t.reshape(b, s, heads, hidden // heads).transpose(1, 2)


def _merge_heads(t: Tensor) -> Tensor:
    b, h, s, d = t.shape
    return t.transpose(1, 2).reshape(b, s, h * d)


@_op("Attention", domain="com.microsoft")
def _ms_attention(env, node, args):
    """com.microsoft Attention: packed QKV projection of one (B, S, hidden) input, no mask or cache."""
    _no_extra(node, 1, {3: "a mask", 4: "a past state", 5: "an attention bias", 6: "past_sequence_length"}, args)
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    heads = int(_attr(node, "num_heads"))
    projected = x @ weight + (bias if bias is not None else 0)
    sizes = [int(s) for s in (_attr(node, "qkv_hidden_sizes") or [weight.shape[1] // 3] * 3)]
    q, k, v = torch.split(projected, sizes, dim=-1)
    q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
    scale = float(_attr(node, "scale", 0.0) or 1.0 / math.sqrt(q.shape[-1]))
    return _merge_heads(_attention_core(q, k, v, scale, bool(_attr(node, "unidirectional", 0))))


@_op("MultiHeadAttention", domain="com.microsoft")
def _ms_multi_head_attention(env, node, args):
    """com.microsoft MultiHeadAttention with separate 3-D query, key and value, no mask or cache."""
    _no_extra(node, 1, {4: "a key padding mask", 5: "an attention bias", 6: "a past key", 7: "a past value"}, args)
    q, k, v = args[:3]
    if k is None or v is None or k.dim() != 3 or v.dim() != 3:
        raise ExecutionError(f"cannot execute MultiHeadAttention '{node.name}' with packed or 4-D key/value",
                             node=node.name, op=node.op_type)
    bias = args[3] if len(args) > 3 else None
    if bias is not None:
        bq, bk, bv = torch.split(bias, [q.shape[-1], k.shape[-1], v.shape[-1]])
        q, k, v = q + bq, k + bk, v + bv
    heads = int(_attr(node, "num_heads"))
    q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
    scale = float(_attr(node, "scale", 0.0) or 1.0 / math.sqrt(q.shape[-1]))
    return _merge_heads(_attention_core(q, k, v, scale, bool(_attr(node, "unidirectional", 0))))


# ---------------------------------------------------------------- the executor


_NUMPY_TO_TORCH = {np.dtype(np.bool_): torch.bool, np.dtype(np.uint8): torch.uint8, np.dtype(np.int8): torch.int8,
                   np.dtype(np.int16): torch.int16, np.dtype(np.int32): torch.int32}


def _const_tensor(array: np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    array = np.asarray(array)  # np.array(..., copy=True) keeps 0-d scalars 0-d, unlike ascontiguousarray
    if array.dtype.kind == "f":
        return torch.as_tensor(np.array(array, dtype=np.float64), device=device).to(dtype)
    if array.dtype in _NUMPY_TO_TORCH:
        return torch.as_tensor(np.array(array), device=device)
    if array.dtype.kind in "iu":
        return torch.as_tensor(np.array(array, dtype=np.int64), device=device)
    raise TypeError(f"constant of dtype {array.dtype}")


@contextlib.contextmanager
def _exact_cuda_math(device: torch.device) -> Iterator[None]:
    """TF32 would make float32 convolutions ~1e-3 off on recent GPUs: turn it off while we run."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Executor:
    """Runs a Graph. ``Executor(graph)(x)`` returns the graph outputs, in order.

    Raises ExecutionError at construction when some node's op cannot be run (naming the first),
    and at run time when a node fails.
    """

    def __init__(self, graph: Graph, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("the executor computes in float32 or float64")
        self.graph = graph
        self.device = torch.device(device)
        self.dtype = dtype
        self._env = _Env(graph.opset, dtype, self.device)
        for node in graph.nodes:
            if not can_execute(node):
                raise ExecutionError(f"cannot execute op {_op_label(node)} (node '{node.name}')",
                                     hint="the faithfulness check and the lower bound need every op",
                                     node=node.name, op=_op_label(node))
        self._consts: dict[str, Tensor] = {}
        produced = {out for node in graph.nodes for out in node.outputs if out}
        for name in {n for node in graph.nodes for n in node.inputs if n} | set(graph.outputs):
            if name in produced or name in graph.inputs:
                continue
            const = graph.const(name)
            if const is None:
                raise ExecutionError(f"value '{name}' is neither computed, an input nor a constant",
                                     node=name, op="")
            self._consts[name] = _const_tensor(const, dtype, self.device)
        # The last node reading each value, so intermediates are freed as soon as they are used.
        self._last_use: dict[str, int] = {}
        for index, node in enumerate(graph.nodes):
            for name in node.inputs:
                if name:
                    self._last_use[name] = index

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    def run(self, feeds: Mapping[str, Tensor | np.ndarray], *, keep: Iterable[str] = ()) -> dict[str, Tensor]:
        """Graph outputs and the values named in ``keep``, by name."""
        wanted = set(self.graph.outputs) | set(keep)
        values: dict[str, Tensor] = dict(self._consts)
        for name in self.graph.inputs:
            if name not in feeds:
                raise ExecutionError(f"no value given for input '{name}'", node=name, op="")
            value = feeds[name]
            tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
            values[name] = tensor.to(self.device, self.dtype) if tensor.is_floating_point() else tensor.to(self.device)
        with _exact_cuda_math(self.device):
            for index, node in enumerate(self.graph.nodes):
                args = [values[name] if name else None for name in node.inputs]
                try:
                    result = _OPS[(_domain(node.domain), node.op_type)](self._env, node, args)
                except ExecutionError:
                    raise
                except (RuntimeError, ValueError, TypeError, IndexError, KeyError, StopIteration) as error:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise ExecutionError(f"executing {node.op_type} '{node.name}' failed: {first}",
                                         node=node.name, op=node.op_type) from error
                outputs = result if isinstance(result, (list, tuple)) else [result]
                for name, tensor in zip(node.outputs, outputs):
                    if name:
                        values[name] = tensor
                for name in node.inputs:
                    if name and self._last_use.get(name) == index and name not in wanted and name not in self._consts:
                        values.pop(name, None)
        missing = [name for name in wanted if name not in values]
        if missing:
            raise ExecutionError(f"value '{missing[0]}' was not computed", node=missing[0], op="")
        return {name: values[name] for name in wanted}

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        results = self.run(dict(zip(self.graph.inputs, inputs)))
        return [results[name] for name in self.graph.outputs]


def execute(graph: Graph, feeds: Mapping[str, Tensor | np.ndarray], *, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Run ``graph`` once on ``feeds``: its outputs by name."""
    return Executor(graph, device=device, dtype=dtype).run(feeds)


__all__ = ["Executor", "can_execute", "conv_transpose_pads", "execute", "supported_ops"]
