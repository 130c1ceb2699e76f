"""Keeping the domain engines' products inside float64's normal range.

The interval and Jacobian engines bound their float64 rounding with relative margins
(``RANGE_MARGIN``, ``UNIT`` times the magnitudes summed).  That holds while no product falls below
the normal range (2⁻¹⁰²²): there a product rounds to a subnormal or to an exact 0, with an absolute
error that no relative margin covers, and a network whose later weights scale it back up (1e-170,
then 1e+170) would get a box figure below the truth.

A product of two numbers of magnitude at least FLOOR = 2⁻⁴⁰⁰ is at least 2⁻⁸⁰⁰, which leaves
2⁻²²² for a rule's further factors (a slope, a scale: every float32 number is above 2⁻¹⁵⁰); one
of two at most CEIL = 2⁴⁰⁰ is at most 2⁸⁰⁰, and 1/CEIL² is still normal (a reciprocal's slope).
So every magnitude the engines keep is 0 or between FLOOR and CEIL, or infinite:

- a constant outside [FLOOR, CEIL] (a float64 model's weights; float32 ones never are) leaves the
  box to the global bound (``extreme_constant``);
- a range's bound below FLOOR moves outwards to 0 or ±FLOOR, one above CEIL to ±CEIL or ±inf
  (``outward``: still a range of the value);
- a slope range that multiplies a Jacobian is moved outwards the same way;
- a Jacobian enclosure's centre entry below it becomes 0 with its magnitude added to the radius,
  a radius entry or a deviation below it is raised to it (``flushed``: a wider enclosure);
- a chain of matrix products stops where an entry falls below it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..intervals.interval import CEIL, FLOOR
from ..intervals.jacobian import Jac
from ..ir import Graph


def extreme_constant(graph: Graph) -> str | None:
    """The first constant the nodes read with a finite nonzero entry below FLOOR or above CEIL in
    magnitude, or None."""
    used = dict.fromkeys(name for node in graph.nodes for name in node.all_inputs if name)
    for name in used:
        const = graph.const(name)
        if const is None or const.dtype.kind != "f" or const.size == 0:
            continue
        magnitude = np.abs(np.asarray(const, dtype=np.float64))
        if np.any((magnitude > 0) & ((magnitude < FLOOR) | ((magnitude > CEIL) & np.isfinite(magnitude)))):
            return name
    return None


def tiny_entries(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds a nonzero entry below FLOOR in magnitude."""
    magnitude = tensor.abs()
    return bool(torch.any((magnitude > 0) & (magnitude < FLOOR)))


def flushed(jac: Jac) -> Jac:
    """``jac`` with every centre entry below FLOOR moved into the radius (rounded up, and into the
    deviation) and every radius entry and the deviation below FLOOR raised to it: an enclosure of
    all it held."""
    if not (tiny_entries(jac.centre) or tiny_entries(jac.radius) or 0 < jac.deviation < FLOOR):
        return jac
    magnitude = jac.centre.abs()
    tiny = (magnitude > 0) & (magnitude < FLOOR)
    centre = torch.where(tiny, torch.zeros_like(jac.centre), jac.centre)
    up = torch.full_like(magnitude, math.inf)
    radius = torch.where(tiny, torch.nextafter(jac.radius + magnitude, up), jac.radius)
    radius = torch.where((radius > 0) & (radius < FLOOR), torch.full_like(radius, FLOOR), radius)
    # the centre moved by at most FLOOR in each of those entries: ‖J − C‖₂ grows by at most √k·FLOOR
    moved = math.sqrt(int(torch.count_nonzero(tiny))) * FLOOR * (1 + 1e-12)
    return Jac(centre, radius, raised(jac.deviation + moved if moved else jac.deviation))


def raised(deviation: float) -> float:
    """A deviation in (0, FLOOR) raised to FLOOR (a bound on a norm may always grow)."""
    return FLOOR if 0 < deviation < FLOOR else deviation
