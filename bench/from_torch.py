"""Build a Network from a torch.nn.Module (torch.fx), and search a lower bound on its Lipschitz constant.

For tests and benchmarks: the integrated tool builds its Network from lipaudit's IR instead.
Supported: Linear, Conv1d/2d/3d (zero padding), BatchNorm (folded into the conv or linear before
it when that is its only reader, else a per-channel scale), the common activations (modules and
functions), MaxPool (a lipschitz node with docs/design.md's constant), AvgPool, AdaptiveAvgPool to 1,
Flatten / flatten / view / reshape, Identity, Dropout, and +, − between values.  Biases are
dropped (they never change a Lipschitz constant).  Anything else raises ValueError.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from lipaudit.tight import Network

_ACTIVATION_MODULES = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Softplus: "softplus",
    nn.Hardswish: "hardswish",
    nn.ReLU6: "relu6",
    nn.Softsign: "softsign",
}
_ACTIVATION_FUNCTIONS: dict[Callable[..., Any], str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.silu: "silu",
    F.gelu: "gelu",
    F.softplus: "softplus",
    F.mish: "mish",
    F.elu: "elu",
    F.leaky_relu: "leaky_relu",
    F.tanh: "tanh",
    F.sigmoid: "sigmoid",
}


def maxpool_constant(kernel, stride, dilation) -> float:
    """docs/design.md, "Per-op factors": √(Π ⌈k / s'⌉) with s' = s / gcd(s, d)."""
    return math.sqrt(math.prod(math.ceil(k / (s // math.gcd(s, d))) for k, s, d in zip(kernel, stride, dilation)))


def _tuple(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * n


def network_from_module(model: nn.Module, example: Tensor, *, fold_batchnorm: bool = True) -> Network:
    """The Network of ``model`` at the shape of ``example`` (with its batch axis, usually 1)."""
    model = model.eval()
    traced = torch.fx.symbolic_trace(model)
    ShapeProp(traced).propagate(example)
    modules = dict(traced.named_modules())
    net = Network()
    ids: dict[torch.fx.Node, int] = {}
    users = {n: len(n.users) for n in traced.graph.nodes}
    folded: dict[torch.fx.Node, torch.fx.Node] = {}  # BatchNorm node -> the conv/linear node it was folded into
    pending_scale: dict[torch.fx.Node, Tensor] = {}

    if fold_batchnorm:
        for n in traced.graph.nodes:
            if n.op != "call_module":
                continue
            bn = modules[n.target]
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                src = n.args[0]
                if (
                    isinstance(src, torch.fx.Node)
                    and src.op == "call_module"
                    and users[src] == 1
                    and isinstance(modules[src.target], (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
                ):
                    pending_scale[src] = _bn_factor(bn)
                    folded[n] = src

    def shape_of(n: torch.fx.Node) -> tuple[int, ...]:
        return tuple(n.meta["tensor_meta"].shape)

    for n in traced.graph.nodes:
        name = n.name
        if n.op == "placeholder":
            ids[n] = net.input(shape_of(n), name=name)
            continue
        if n.op == "output":
            outs = n.args[0] if isinstance(n.args[0], (tuple, list)) else (n.args[0],)
            net.output(*(ids[o] for o in outs))
            continue
        if n in folded:
            ids[n] = ids[folded[n]]
            continue
        args = n.args
        if n.op == "call_module":
            module = modules[n.target]
            x = ids[args[0]]
            ids[n] = _module_node(net, module, x, name, pending_scale.get(n), shape_of(n))
        elif n.op == "call_function" or n.op == "call_method":
            ids[n] = _function_node(net, n, ids, name, shape_of(n))
        else:
            raise ValueError(f"unsupported fx node {n.op} {n.target}")
    return net


def _bn_factor(bn: nn.modules.batchnorm._BatchNorm) -> Tensor:
    if bn.running_var is None:
        # without running statistics it normalises by each batch's own: not a fixed linear map
        raise ValueError(f"{type(bn).__name__} without running statistics cannot be folded")
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma.double() / torch.sqrt(bn.running_var.double() + bn.eps)


def _module_node(net: Network, module: nn.Module, x: int, name: str, fold: Tensor | None, shape) -> int:
    if isinstance(module, nn.Linear):
        weight = module.weight.detach().double()
        if fold is not None:
            weight = weight * fold[:, None]
        return net.dense(x, weight.T, name=name)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        d = module.weight.ndim - 2
        if module.padding_mode != "zeros":
            raise ValueError(f"{name}: padding mode {module.padding_mode} is not supported")
        weight = module.weight.detach().double()
        if fold is not None:
            weight = weight * fold.reshape(-1, *(1,) * (d + 1))
        if isinstance(module.padding, str):
            raise ValueError(f"{name}: give explicit padding")
        pad = _tuple(module.padding, d)
        return net.conv(
            x,
            weight,
            strides=_tuple(module.stride, d),
            pads=pad + pad,
            dilations=_tuple(module.dilation, d),
            groups=module.groups,
            name=name,
        )
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        factor = _bn_factor(module)
        rank = len(net.shape(x))
        return net.scale(x, factor.reshape(-1, *(1,) * (rank - 2)), name=name)
    for cls, kind in _ACTIVATION_MODULES.items():
        if isinstance(module, cls):
            return net.activation(x, kind, name=name)
    if isinstance(module, nn.LeakyReLU):
        return net.activation(x, "leaky_relu", alpha=module.negative_slope, name=name)
    if isinstance(module, nn.ELU):
        return net.activation(x, "elu", alpha=module.alpha, name=name)
    if isinstance(module, nn.GELU):
        return net.activation(x, "gelu_tanh" if module.approximate == "tanh" else "gelu", name=name)
    if isinstance(module, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(module, nn.Flatten):
        return net.reshape(x, shape, name=name)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        d = len(net.shape(x)) - 2
        kernel, stride = _tuple(module.kernel_size, d), _tuple(module.stride or module.kernel_size, d)
        constant = maxpool_constant(kernel, stride, _tuple(module.dilation, d))

        def fn(t: Tensor, module=module) -> Tensor:
            return module(t.reshape(-1, *t.shape[2:])).reshape(t.shape[0], *shape)

        return net.lipschitz(x, constant, shape=shape, fn=fn, name=name)
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        d = len(net.shape(x)) - 2
        pad = _tuple(module.padding, d)
        return net.avg_pool(
            x,
            _tuple(module.kernel_size, d),
            strides=_tuple(module.stride or module.kernel_size, d),
            pads=pad + pad,
            count_include_pad=module.count_include_pad,
            ceil_mode=module.ceil_mode,
            name=name,
        )
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        rank = len(net.shape(x))
        if any(s != 1 for s in shape[2:]):
            raise ValueError(f"{name}: only adaptive average pooling to size 1 is supported")
        return net.mean(x, tuple(range(2, rank)), name=name)
    raise ValueError(f"unsupported module {type(module).__name__} ({name})")


def _function_node(net: Network, n: torch.fx.Node, ids: dict, name: str, shape) -> int:
    target = n.target
    variables = [a for a in n.args if isinstance(a, torch.fx.Node)]
    if target in (operator.add, torch.add, "add") and len(variables) == 2 and len(n.args) == 2:
        return net.add([ids[variables[0]], ids[variables[1]]], name=name)
    if target in (operator.sub, torch.sub, "sub") and len(variables) == 2 and len(n.args) == 2:
        return net.add([ids[variables[0]], ids[variables[1]]], (1.0, -1.0), name=name)
    if target in (torch.flatten, "flatten", "view", "reshape"):
        return net.reshape(ids[variables[0]], shape, name=name)
    if target in _ACTIVATION_FUNCTIONS or target in ("relu", "tanh", "sigmoid"):
        kind = target if isinstance(target, str) else _ACTIVATION_FUNCTIONS[target]
        alpha = None
        if kind == "leaky_relu":
            slope = n.kwargs.get("negative_slope", n.args[1] if len(n.args) > 1 else 0.01)
            if not isinstance(slope, (int, float)):
                raise ValueError(f"{name}: leaky_relu with a negative_slope that is not a number ({slope})")
            alpha = float(slope)
        if kind == "gelu" and n.kwargs.get("approximate") == "tanh":
            kind = "gelu_tanh"
        return net.activation(ids[variables[0]], kind, alpha=alpha, name=name)
    raise ValueError(f"unsupported function {target} ({name})")


# ---------------------------------------------------------------------------------------------
# Lower bound


def jacobian_lower_bound(
    fn, inputs: Tensor, *, ascent_steps: int = 0, step_size: float = 0.05, chunk: int = 64
) -> float:
    """max over the rows of ``inputs`` (shape (B, *input shape without batch)) of σ_max of the
    Jacobian of ``fn`` (which maps (1, *shape) to any shape) — a lower bound on the Lipschitz
    constant, up to float rounding.  With ``ascent_steps``, the best quarter of the inputs are
    then moved by normalised gradient ascent on σ_max(J(x)) (useful for smooth activations)."""

    def sigma(x: Tensor) -> Tensor:
        jac = torch.func.jacrev(lambda v: fn(v[None]).reshape(-1))(x)
        return torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2)

    batched = torch.func.vmap(sigma)
    values = torch.cat([batched(inputs[i : i + chunk]).detach() for i in range(0, len(inputs), chunk)])
    best = float(values.max())
    if ascent_steps > 0:
        top = values.argsort(descending=True)[: max(1, len(inputs) // 4)]
        x = inputs[top].clone()
        for _ in range(ascent_steps):
            x.requires_grad_(True)
            s = batched(x)
            (grad,) = torch.autograd.grad(s.sum(), x)
            with torch.no_grad():
                best = max(best, float(s.max()))
                norm = grad.reshape(len(x), -1).norm(dim=1).clamp(min=1e-12)
                x = x + step_size * grad / norm.reshape(-1, *(1,) * (x.ndim - 1))
        with torch.no_grad():
            best = max(best, float(batched(x).max()))
    return best
