"""An empirical lower bound on the Lipschitz constant restricted to the input box.

Pairs of points x, y inside the box, moved by gradient ascent on ‖f(x) − f(y)‖ / ‖x − y‖ and
projected back onto the box after every step: the best ratio is achieved by two inputs of the
domain, so it is a true lower bound on the local constant (and every domain upper bound must be at
least as large). The pairs start at random points, separated along the top singular direction of
the Jacobian there (power iteration), at a few scales. Computed in float64 on the IR's function.
Several inputs are one concatenated input; several outputs one concatenated output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ..execute.empirical_lower_bound import DEFAULT_TIME_LIMIT, Deadline, LowerBound
from ..execute.executor import GraphInterpreter
from ..ir import Graph

_SEPARATIONS = (1e-3, 3e-2, 0.3)  # starting |y − x| relative to the box's size
_POWER_STEPS = 6
_LEARNING_RATE = 0.02  # Adam's step, relative to the box's size


def _input_shape(graph: Graph, name: str) -> tuple[int, ...]:
    shape = graph.shape(name)
    if shape is None:  # the loader resolves every input's shape
        raise ValueError(f"the shape of input '{name}' is unknown")
    return tuple(int(d) for d in shape)


class _BoxFunction:
    """f on the concatenated flat inputs, with the box's flat lower and upper ends."""

    def __init__(self, graph: Graph, bounds: Mapping[str, tuple[float, float]], device: torch.device):
        self.executor = GraphInterpreter(graph, dtype=torch.float64, device=device)
        self.device = torch.device(device)
        self.names = list(graph.inputs)
        self.shapes = [_input_shape(graph, name) for name in self.names]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        lows: list[Tensor] = []
        highs: list[Tensor] = []
        for name, size in zip(self.names, self.sizes):
            lo, hi = bounds.get(name, (-math.inf, math.inf))
            # numbers (every entry alike) or arrays of the input's shape (--around)
            for ends, end in ((lows, lo), (highs, hi)):
                flat = np.broadcast_to(
                    np.asarray(end, dtype=np.float64), (size,) if np.ndim(end) == 0 else np.shape(end)
                )
                ends.append(torch.as_tensor(flat.reshape(-1).copy(), dtype=torch.float64, device=self.device))
        self.lo, self.hi = torch.cat(lows), torch.cat(highs)

    def __call__(self, z: Tensor) -> Tensor:
        feeds = {
            name: part.reshape(shape) for name, part, shape in zip(self.names, torch.split(z, self.sizes), self.shapes)
        }
        results = self.executor.run(feeds)
        return torch.cat(
            [
                results[name].reshape(-1).to(torch.float64)
                for name in self.executor.graph.outputs
                if results[name].is_floating_point()
            ]
        )

    def sample(self, generator: torch.Generator) -> Tensor:
        u = torch.rand(self.lo.shape, dtype=torch.float64, generator=generator).to(self.device)
        lo = torch.where(torch.isfinite(self.lo), self.lo, -1.0 + 0 * self.lo)
        hi = torch.where(torch.isfinite(self.hi), self.hi, 1.0 + 0 * self.hi)
        return lo + (hi - lo) * u

    def project(self, z: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(z, self.hi), self.lo)

    def scale(self) -> float:
        width = torch.where(torch.isfinite(self.hi - self.lo), self.hi - self.lo, torch.ones_like(self.lo))
        return float(width.norm())


def _top_direction(f: _BoxFunction, x: Tensor, generator: torch.Generator) -> Tensor:
    v = torch.randn(x.shape, dtype=torch.float64, generator=generator).to(x.device)
    for _ in range(_POWER_STEPS):
        v = v / v.norm().clamp_min(1e-300)
        jv = torch.func.jvp(f, (x,), (v,))[1]
        pullback = torch.func.vjp(f, x)[1]
        v = pullback(jv)[0]
    return v / v.norm().clamp_min(1e-300)


def _ratio(f: _BoxFunction, x: Tensor, y: Tensor) -> Tensor:
    return (f(x) - f(y)).norm() / (x - y).norm()


def box_lower_bound(
    graph: Graph,
    bounds: Mapping[str, tuple[float, float]],
    *,
    samples: int = 4,
    steps: int = 40,
    seed: int = 0,
    device: str | torch.device = "cpu",
    time_limit: float | None = DEFAULT_TIME_LIMIT,
) -> LowerBound:
    """The largest ratio found (``value``), from ``samples`` random starts, each at every separation, with
    ``steps`` Adam steps: the same record as the global empirical lower bound, so the pipeline can
    report either."""
    f = _BoxFunction(graph, bounds, torch.device(device))
    generator = torch.Generator().manual_seed(seed)
    scale = f.scale()
    best = 0.0
    deadline = Deadline(time_limit)
    for index in range(samples):
        if index and deadline.passed:
            break
        start = f.sample(generator)
        direction = _top_direction(f, start, generator)
        for separation in _SEPARATIONS:
            x = start.clone()
            y = f.project(start + separation * scale * direction)
            if (x - y).norm() == 0:
                y = f.project(start - separation * scale * direction)
            x, y = x.requires_grad_(True), y.requires_grad_(True)
            optimizer = torch.optim.Adam([x, y], lr=_LEARNING_RATE * scale / math.sqrt(x.numel()))
            for step in range(steps + 1):
                if step and deadline.passed:
                    break
                separation_now = float((x - y).detach().norm())
                if separation_now > 1e-9 * scale:
                    ratio = _ratio(f, x, y)
                    value = float(ratio.detach())
                    if math.isfinite(value) and value > best:
                        best = value
                    optimizer.zero_grad()
                    (-ratio).backward()
                    optimizer.step()
                with torch.no_grad():
                    x.copy_(f.project(x))
                    y.copy_(f.project(y))
    notes = ["pairs of inputs inside the input box"]
    if deadline.hit:
        notes.append("stopped at the time limit: the search was cut short")
    return LowerBound(best, best, samples, steps, seed, notes=notes, cut_short=deadline.hit)
