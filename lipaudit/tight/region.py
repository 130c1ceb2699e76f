"""The window of one recursion step: which part of the DAG behind a value is unrolled.

For a target value u and a window w, walk back from u.  The *depth* of a value y is the largest
number of activations expanded on a path from y to u that stays in the window:

    depth(u) = 0;  depth(y) = max over the window nodes n reading y of depth(n's output) + [n is an
    expanded activation].

A value y with depth(y) ≤ w is *inside* when its node is linear (its inputs are reached at the
same depth) or an activation with a ≠ 0 and b > 0 that is *expanded* (depth(y) + 1 ≤ w: its input
is reached at depth(y) + 1 and the activation injects b·ψ at y).  Every other reached value is a
*cut*: the network input, a lipschitz node or an activation with a = 0 (a pure injection, nothing
linear to follow), an activation at the window's edge, and any value reached deeper than w.

So every input of a node inside is inside or a cut, which is all the recursion's proof needs
(recursion.py), and no path from a cut to u crosses more than w expanded activations: the
window costs one chain norm per source, O(w) sources per target on a chain.  w = None unrolls
everything (the published recursion, the input as the only cut on a chain).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .network import Activation, Input, Network, Opaque


@dataclass
class Region:
    target: int
    inside: set[int] = field(default_factory=set)
    cuts: set[int] = field(default_factory=set)
    injections: dict[int, float] = field(default_factory=dict)  # expanded activation's output -> b
    depth: dict[int, int] = field(default_factory=dict)

    @property
    def sources(self) -> list[int]:
        return sorted(self.cuts | set(self.injections))


class Role(Enum):
    INPUT = "input"
    LINEAR = "linear"
    EXPANDABLE = "expandable"  # an activation with a ≠ 0 and b > 0
    BARRIER = "barrier"


def role(network: Network, value: int) -> Role:
    op = network[value].op
    if isinstance(op, Input):
        return Role.INPUT
    if isinstance(op, Opaque):
        return Role.BARRIER
    if isinstance(op, Activation):
        a, b, _ = op.split
        if b == 0:
            return Role.LINEAR
        return Role.EXPANDABLE if a != 0 else Role.BARRIER
    return Role.LINEAR


def window_region(network: Network, target: int, window: int | None) -> Region:
    region = Region(target)
    depth = region.depth
    depth[target] = 0
    limit = float("inf") if window is None else window
    for value in range(target, -1, -1):
        if value not in depth:
            continue
        d = depth[value]
        found = role(network, value)
        node = network[value]
        if d > limit or found in (Role.INPUT, Role.BARRIER):
            region.cuts.add(value)
            continue
        if found is Role.EXPANDABLE:
            if d + 1 > limit:
                region.cuts.add(value)
                continue
            region.inside.add(value)
            region.injections[value] = node.split[1]
            _reach(depth, node.inputs[0], d + 1)
            continue
        region.inside.add(value)
        for i in node.inputs:
            _reach(depth, i, d)
    return region


def _reach(depth: dict[int, int], value: int, d: int) -> None:
    if depth.get(value, -1) < d:
        depth[value] = d
