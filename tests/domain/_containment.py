"""Check value ranges against values seen inside the box: random points, corners, and points found by
projected gradient ascent (and descent) on single entries of intermediate values."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from lipaudit.execute.executor import GraphInterpreter
from lipaudit.intervals.interval import Interval
from lipaudit.ir import Graph


class RangeChecker:
    def __init__(self, graph: Graph, ranges: Mapping[str, Interval], box: tuple[float, float]):
        self.graph, self.ranges, self.box = graph, ranges, box
        self.executor = GraphInterpreter(graph, dtype=torch.float64)
        self.names = [
            out for node in graph.nodes for out in node.outputs if out and out in ranges and graph.is_used(out)
        ]
        self.shape = tuple(graph.shape(graph.inputs[0]))
        self.points = 0
        self.failures: list[str] = []

    def values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.executor.run({self.graph.inputs[0]: x}, keep=self.names)

    def check(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.values(x)
        self.points += 1
        for name in self.names:
            value = values[name]
            if not value.is_floating_point() and value.dtype != torch.bool:
                continue
            seen = value.detach().to(torch.float64).numpy()
            interval = self.ranges[name]
            if np.isnan(seen).any():
                continue
            if not interval.contains(np.broadcast_to(seen, np.broadcast_shapes(seen.shape, interval.shape))):
                low = float(np.min(seen - interval.lo))
                high = float(np.max(seen - interval.hi))
                self.failures.append(f"{name}: seen below lo by {-low:.3g} or above hi by {high:.3g}")
        return values

    def sample(self, count: int, generator: torch.Generator) -> None:
        lo, hi = self.box
        for _ in range(count):
            self.check(lo + (hi - lo) * torch.rand(self.shape, dtype=torch.float64, generator=generator))
        for corner in (lo, hi):
            self.check(torch.full(self.shape, float(corner), dtype=torch.float64))
        for _ in range(count // 2):
            bits = torch.rand(self.shape, generator=generator) < 0.5
            self.check(torch.where(bits, float(hi), float(lo)).to(torch.float64))

    def ascend(self, targets: int, steps: int, generator: torch.Generator) -> None:
        """Push single entries of random intermediate values up or down, projecting onto the box."""
        lo, hi = self.box
        floats = [name for name in self.names if math.prod(self.graph.shape(name) or (0,)) > 0]
        for _ in range(targets):
            name = floats[int(torch.randint(len(floats), (1,), generator=generator))]
            size = math.prod(self.graph.shape(name))
            index = int(torch.randint(size, (1,), generator=generator))
            sign = 1.0 if torch.rand(1, generator=generator) < 0.5 else -1.0
            x = (lo + (hi - lo) * torch.rand(self.shape, dtype=torch.float64, generator=generator)).requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=0.05 * (hi - lo))
            for _ in range(steps):
                values = self.check(x)
                target = values[name]
                if not target.requires_grad:
                    break
                optimizer.zero_grad()
                (-sign * target.reshape(-1)[index]).backward()
                optimizer.step()
                with torch.no_grad():
                    x.clamp_(lo, hi)
            self.check(x.detach())


def assert_ranges_contain_seen(
    graph: Graph,
    ranges: Mapping[str, Interval],
    box: tuple[float, float],
    *,
    samples: int = 16,
    targets: int = 10,
    steps: int = 15,
    seed: int = 0,
) -> RangeChecker:
    checker = RangeChecker(graph, ranges, box)
    generator = torch.Generator().manual_seed(seed)
    checker.sample(samples, generator)
    checker.ascend(targets, steps, generator)
    assert not checker.failures, "\n".join(checker.failures[:10])
    return checker
