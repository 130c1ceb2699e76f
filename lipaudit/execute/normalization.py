"""Normalisations: BatchNormalization (inference only), Instance-, Layer-, Group- and LpNormalization."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ExecutionError
from .core import attr, op, positive_axis


def _channel_view(t: Tensor, rank: int) -> Tensor:
    return t.reshape((1, -1) + (1,) * (rank - 2)) if t.dim() == 1 else t.unsqueeze(0)


@op("BatchNormalization")
def _batch_norm(env, node, args):
    if attr(node, "training_mode", 0) or any(node.outputs[1:]):
        raise ExecutionError(f"cannot execute BatchNormalization '{node.name}' in training mode",
                             node=node.name, op=node.op_type)
    x, scale, bias, mean, var = args[:5]
    rank = x.dim()
    epsilon = float(attr(node, "epsilon", 1e-5))
    multiplier = _channel_view(scale, rank) / torch.sqrt(_channel_view(var, rank) + epsilon)
    return (x - _channel_view(mean, rank)) * multiplier + _channel_view(bias, rank)


@op("InstanceNormalization")
def _instance_norm(env, node, args):
    x, scale, bias = args[:3]
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    normalised = (x - mean) / torch.sqrt(var + float(attr(node, "epsilon", 1e-5)))
    return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@op("LayerNormalization")
def _layer_norm(env, node, args):
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = positive_axis(int(attr(node, "axis", -1)), x.dim())
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + float(attr(node, "epsilon", 1e-5)))
    out = (x - mean) * inv_std * scale
    if bias is not None:
        out = out + bias
    return [out, mean, inv_std][: max(1, len(node.outputs))]


@op("GroupNormalization")
def _group_norm(env, node, args):
    x, scale, bias = args[:3]
    groups = int(attr(node, "num_groups"))
    channels = x.shape[1]
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(dim=2, keepdim=True)
    var = ((grouped - mean) ** 2).mean(dim=2, keepdim=True)
    normalised = ((grouped - mean) / torch.sqrt(var + float(attr(node, "epsilon", 1e-5)))).reshape(x.shape)
    if scale.numel() == groups and groups != channels:  # opset 18: one scale per group
        scale = scale.repeat_interleave(channels // groups)
        bias = bias.repeat_interleave(channels // groups)
    return normalised * _channel_view(scale, x.dim()) + _channel_view(bias, x.dim())


@op("LpNormalization")
def _lp_norm(env, node, args):
    x = args[0]
    p = int(attr(node, "p", 2))
    axis = int(attr(node, "axis", -1))
    norm = x.abs().sum(dim=axis, keepdim=True) if p == 1 else torch.sqrt((x * x).sum(dim=axis, keepdim=True))
    return x / norm
