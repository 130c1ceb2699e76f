"""Independent references for the tight-bound tests: linearised Jacobians by autograd, the
recursion evaluated from its definition, Jacobian lower bounds, and small random networks."""

from __future__ import annotations

import math

import torch
from torch import nn

from lipaudit.tight import Network
from lipaudit.tight.recursion import product_rule, targets
from lipaudit.tight.region import window_region


def window_jacobians(net: Network, target: int, window: int | None) -> tuple[dict[int, torch.Tensor], object]:
    """A_{target←s} for every source s of the target's window, as explicit matrices, by autograd on
    the linearised window: cuts and injections are free variables, inside values are computed with
    the nodes' linear forwards, expanded activations as a·z + e."""
    region = window_region(net, target, window)
    sources = region.sources
    shapes = {s: net.shape(s) for s in sources}

    def run(*free):
        values = dict(zip(sources, free))
        for v in sorted(region.inside):
            if v in region.injections:
                a = net[v].split[0]
                values[v] = a * values[net[v].inputs[0]] + values[v]
                continue
            if v in values:
                continue
            node = net[v]
            if node.activation is not None:  # linear activation (b = 0)
                values[v] = node.split[0] * values[node.inputs[0]]
            else:
                values[v] = node.forward(*(values[i][None] for i in node.inputs))[0]
        return values[target]

    zeros = tuple(torch.zeros(shapes[s], dtype=torch.float64) for s in sources)
    jac = torch.autograd.functional.jacobian(run, zeros)
    if not isinstance(jac, tuple):
        jac = (jac,)
    n_out = math.prod(net.shape(target))
    return {s: j.reshape(n_out, -1) for s, j in zip(sources, jac)}, region


def sigma(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2)) if matrix.numel() else 0.0


def reference_bound(net: Network, window: int | None) -> tuple[float, list[float]]:
    """The sweep of recursion.py evaluated from its definition, every chain norm an exact SVD of the
    autograd Jacobian.  Returns (network bound, per-value bounds)."""
    chosen = targets(net)
    best: list[float] = []
    for node in net.nodes:
        best.append(product_rule(node, best))
        if node.id not in chosen:
            continue
        jacobians, region = window_jacobians(net, node.id, window)
        total = 0.0
        for s, matrix in jacobians.items():
            if s in region.injections:
                total += region.injections[s] * sigma(matrix) * best[net[s].inputs[0]]
            else:
                total += sigma(matrix) * best[s]
        best[-1] = min(best[-1], total)
    outs = [best[o] for o in net.outputs]
    return math.sqrt(sum(b * b for b in outs)), best


def lower_bound(net: Network, samples: int = 64, seed: int = 0, scale: float = 2.0) -> float:
    """max over random inputs of σ_max of the network's Jacobian (network evaluated with its
    activations; a lower bound on the Lipschitz constant)."""
    generator = torch.Generator().manual_seed(seed)
    shape = net.shape(0)
    best = 0.0
    for _ in range(samples):
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
        jac = torch.autograd.functional.jacobian(lambda v: torch.cat([o.reshape(-1) for o in net.evaluate(v[None])]), x)
        best = max(best, sigma(jac.reshape(jac.shape[0], -1)))
    return best


def module_lower_bound(model: nn.Module, shape, samples: int = 64, seed: int = 0, scale: float = 2.0) -> float:
    model = model.double().eval()
    generator = torch.Generator().manual_seed(seed)
    best = 0.0
    for _ in range(samples):
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
        jac = torch.autograd.functional.jacobian(model, x)
        best = max(best, sigma(jac.reshape(-1, x.numel())))
    return best


# ---------------------------------------------------------------------------------------------
# Random networks


def mlp(widths, activation="relu", seed=0, alpha=None, gain=1.5) -> Network:
    generator = torch.Generator().manual_seed(seed)
    net = Network()
    h = net.input((1, widths[0]))
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        h = net.dense(h, torch.randn(a, b, generator=generator, dtype=torch.float64) * gain / math.sqrt(a))
        if i < len(widths) - 2:
            h = net.activation(h, activation, alpha=alpha)
    net.output(h)
    return net


def residual_mlp(width=12, blocks=3, activation="relu", seed=0) -> Network:
    generator = torch.Generator().manual_seed(seed)
    net = Network()
    h = net.input((1, width))
    for _ in range(blocks):
        g = net.dense(h, torch.randn(width, width, generator=generator, dtype=torch.float64) / math.sqrt(width))
        g = net.activation(g, activation)
        g = net.dense(g, torch.randn(width, width, generator=generator, dtype=torch.float64) * 0.5 / math.sqrt(width))
        h = net.add([h, g])
    h = net.dense(h, torch.randn(width, 5, generator=generator, dtype=torch.float64) / math.sqrt(width))
    net.output(h)
    return net


def cnn(seed=0, activation="relu", residual=False, size=6) -> Network:
    """Padding, a stride, a residual block (optional), a max pool, a dense head."""
    generator = torch.Generator().manual_seed(seed)

    def w(*shape):
        fan_in = math.prod(shape[1:])
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * 1.2 / math.sqrt(fan_in)

    net = Network()
    x = net.input((1, 2, size, size))
    h = net.conv(x, w(4, 2, 3, 3), pads=(1, 1, 1, 1))
    h = net.scale(h, torch.rand(4, 1, 1, generator=generator, dtype=torch.float64) + 0.5)
    h = net.activation(h, activation)
    if residual:
        g = net.conv(h, w(4, 4, 3, 3), pads=(1, 1, 1, 1))
        g = net.activation(g, activation)
        g = net.conv(g, w(4, 4, 1, 1))
        h = net.add([h, g])
        h = net.activation(h, activation)
    h = net.conv(h, w(5, 4, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    h = net.activation(h, activation)
    flat = 5 * ((size + 1) // 2) ** 2
    h = net.reshape(h, (1, flat))
    h = net.dense(h, torch.randn(flat, 3, generator=generator, dtype=torch.float64) * 1.2 / math.sqrt(flat))
    net.output(h)
    return net
