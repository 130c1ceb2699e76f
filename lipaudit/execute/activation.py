"""Elementwise activations, Clip, and the softmax family (Softmax, LogSoftmax, Hardmax, ArgMax/ArgMin)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir import Node
from .core import Env, OpFn, attr, op, positive_axis


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
    op(_name)(_unary(_fn))


@op("Gelu")
def _gelu(env, node, args):
    return F.gelu(args[0], approximate="tanh" if attr(node, "approximate", "none") == "tanh" else "none")


@op("Swish")
def _swish(env, node, args):
    alpha = float(attr(node, "alpha", 1.0))
    return args[0] * torch.sigmoid(alpha * args[0])


@op("LeakyRelu")
def _leaky_relu(env, node, args):
    x, alpha = args[0], float(attr(node, "alpha", 0.01))
    return torch.where(x >= 0, x, alpha * x)


@op("Elu")
def _elu(env, node, args):
    x, alpha = args[0], float(attr(node, "alpha", 1.0))
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


@op("Celu")
def _celu(env, node, args):
    return F.celu(args[0], alpha=float(attr(node, "alpha", 1.0)))


@op("Selu")
def _selu(env, node, args):
    x = args[0]
    alpha = float(attr(node, "alpha", 1.67326319217681884765625))
    gamma = float(attr(node, "gamma", 1.05070102214813232421875))
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


@op("HardSigmoid")
def _hard_sigmoid(env, node, args):
    alpha, beta = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
    return torch.clamp(alpha * args[0] + beta, 0.0, 1.0)


@op("ThresholdedRelu")
def _thresholded_relu(env, node, args):
    x = args[0]
    return torch.where(x > float(attr(node, "alpha", 1.0)), x, torch.zeros_like(x))


@op("Shrink")
def _shrink(env, node, args):
    x = args[0]
    bias, lambd = float(attr(node, "bias", 0.0)), float(attr(node, "lambd", 0.5))
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@op("PRelu")
def _prelu(env, node, args):
    x, slope = args[0], args[1]
    if slope.dim() == 1 and x.dim() > 2 and slope.numel() == x.shape[1] and slope.numel() not in (1, x.shape[-1]):
        slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))  # opset 6: one slope per channel
    return torch.where(x < 0, slope * x, x)


@op("Clip")
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


# ---------------------------------------------------------------- softmax family


def _coerced(env: Env, node: Node, x: Tensor) -> tuple[Tensor, int]:
    """Opsets < 13 flatten to 2-D at ``axis`` (default 1); later ones work on one axis (default -1)."""
    if env.opset >= 13:
        return x, positive_axis(int(attr(node, "axis", -1)), x.dim())
    axis = positive_axis(int(attr(node, "axis", 1)), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1), 1


@op("Softmax")
def _softmax(env, node, args):
    x, axis = _coerced(env, node, args[0])
    return torch.softmax(x, dim=axis).reshape(args[0].shape)


@op("LogSoftmax")
def _log_softmax(env, node, args):
    x, axis = _coerced(env, node, args[0])
    return torch.log_softmax(x, dim=axis).reshape(args[0].shape)


@op("Hardmax")
def _hardmax(env, node, args):
    x, axis = _coerced(env, node, args[0])
    index = torch.argmax(x, dim=axis, keepdim=True)
    return torch.zeros_like(x).scatter(axis, index, 1.0).reshape(args[0].shape)


def _arg_extreme(fn: Callable) -> OpFn:
    def run(env, node, args):
        x = args[0]
        axis = positive_axis(int(attr(node, "axis", 0)), x.dim())
        keep = bool(attr(node, "keepdims", 1))
        if attr(node, "select_last_index", 0):
            return x.shape[axis] - 1 - fn(torch.flip(x, dims=(axis,)), dim=axis, keepdim=keep)
        return fn(x, dim=axis, keepdim=keep)

    return run


op("ArgMax")(_arg_extreme(torch.argmax))
op("ArgMin")(_arg_extreme(torch.argmin))
