"""Jacobians an op's rule must hold: (C + E)·D(u) with D(u) the op's own Jacobian (autograd) at
points u of its input's range, and errors E of norm d along D(u)'s top singular direction (where
‖E·D(u)‖ is largest) and at random."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from lipaudit.intervals.interval import Interval


def errored_jacobians(
    fn: Callable[[torch.Tensor], torch.Tensor],
    points: Iterable[np.ndarray],
    box: Interval,
    centre: torch.Tensor,
    d: float,
    generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """(n0, n_out) matrices, ``centre`` the (n0, n_in) input Jacobian's centre."""
    n0 = centre.shape[0]
    for u in points:
        point = torch.as_tensor(np.clip(u, box.lo, box.hi), dtype=torch.float64)
        derivative = torch.autograd.functional.jacobian(fn, point).reshape(-1, point.numel())
        top = torch.linalg.svd(derivative.T)[0][:, 0]
        direction = torch.randn(n0, generator=generator, dtype=torch.float64)
        random = torch.randn((n0, point.numel()), generator=generator, dtype=torch.float64)
        for error in (
            d * torch.outer(direction / direction.norm(), top),
            d * random / torch.linalg.matrix_norm(random, 2),
        ):
            yield (centre + error) @ derivative.T
