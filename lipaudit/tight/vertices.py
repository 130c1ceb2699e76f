"""The linear pieces of a network on a small box: when only a few activation entries may switch.

On a box where every activation entry has slopes in [α_i, β_i] (neuron_slopes.py), the Jacobian
of the network at any point of the box where it exists is J(D) = the linear maps composed with the
activations' diagonals D, each D_i in [α_i, β_i] — and, by the mean value theorem for Lipschitz maps
(Clarke's generalised Jacobian and its chain rule), Lip(f on the box) ≤ sup over such D of ‖J(D)‖.
J is affine in each D_i alone, so ‖J(D)‖ is convex in each D_i and its sup over the box of slopes
is reached at a vertex: each entry at α_i or β_i.  When the network holds nothing but linear maps
and activations, and only k entries have α_i < β_i (the rest are linear there), the bound is the
largest of the 2^k linear networks' norms, each certified by the recursion as one chain norm.

Around a data point at a small radius a ReLU network usually has k = 0 (one linear map: the
recursion alone is exact) or a handful of entries that really switch inside the box; this is then
the exact figure of the per-neuron slopes, where the recursion's split adds r_i·‖…‖ terms.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir import Graph, Node
from ..linear_maps import Linear
from ..ops import Factor
from .from_graph import network_from_graph
from .network import Activation, Input
from .recursion import network_bound

# At most this many linear pieces (2^k for k switching entries) are measured.
MAX_PIECES = 16


def piecewise_bound(
    graph: Graph,
    factors: dict[Node, list[Factor]],
    slopes: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    seed: int = 0,
    window: int | None = None,
    work: float | None = None,
) -> tuple[dict[str, float], int] | None:
    """(per graph output, the largest certified norm over the linear pieces; the number of pieces),
    or None when the network is not linear between its activations or has too many pieces."""
    switching = [(name, int(i)) for name, (lo, hi) in slopes.items() for i in np.flatnonzero(np.ravel(lo != hi))]
    if len(switching) > MAX_PIECES.bit_length() - 1:
        return None
    best: dict[str, float] = {}
    pieces = 0
    share = None if work is None else work / 2 ** len(switching)  # the pieces share the work equally
    for ends in itertools.product((0, 1), repeat=len(switching)):
        fixed = {
            name: np.array(np.broadcast_to(lo, np.broadcast_shapes(lo.shape, hi.shape)))
            for name, (lo, hi) in slopes.items()
        }
        for (name, flat), end in zip(switching, ends):
            if end:
                fixed[name].flat[flat] = np.ravel(np.broadcast_to(slopes[name][1], fixed[name].shape))[flat]
        described = network_from_graph(graph, factors, seed=seed, neuron_slopes={n: (v, v) for n, v in fixed.items()})
        net = described.network
        if not all(_linear(node.op) for node in net.nodes):
            return None
        tight = network_bound(net, window=window, budget=None, work=share)
        pieces += 1
        for name in graph.outputs:
            found = tight.outputs.get(net[described.ids[name]].name) if name in described.ids else None
            if found is None:
                return None
            best[name] = max(best.get(name, 0.0), found)
    return best, pieces


def _linear(op) -> bool:
    if isinstance(op, (Input, Linear)):
        return True
    return isinstance(op, Activation) and op.slopes[0] == op.slopes[1]
