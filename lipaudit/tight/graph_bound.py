"""The network bound of a composed graph beyond the product: the recursion, and the residual branches.

``tighten`` takes the graph and the product the composer computed (every factor in it), describes
the graph as a Network (from_graph.py) and runs the recursion (recursion.py) and the residual-branch
bounds (branches.py) on it.  Each figure is the lower of the recursion and the product, so it is
never above the product; it is certified exactly when the product is (the factors it reuses are
the product's).

The recursion's chain norms are those of the exact operators, in float64; the model runs in
float32.  As the composer does for each factor, every Network node adds FLOAT32_MARGIN (relative)
for that rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..compose import FLOAT32_MARGIN, NetworkBound
from ..ir import Graph
from ..report import ResidualBranch
from .branches import residual_branches
from .from_graph import NotMappable, network_from_graph
from .recursion import DEFAULT_WINDOW, network_bound

BOUNDS = ("recursion", "product")

__all__ = ["BOUNDS", "GraphBound", "NotMappable", "tighten"]


@dataclass
class GraphBound:
    upper_bound: float
    outputs: dict[str, float]  # graph output name -> its bound
    method: str  # "product", "recursion-w2", ...
    product: float
    branches: list[ResidualBranch] = field(default_factory=list)
    barriers: dict[str, str] = field(default_factory=dict)  # node -> why the recursion does not look through it
    seconds: float = 0.0


def tighten(graph: Graph, composed: NetworkBound, *, bound: str = "recursion", window: int = DEFAULT_WINDOW,
            seed: int = 0) -> GraphBound:
    """The network bound by ``bound`` ('recursion' or 'product') and the residual-branch bounds.

    ``composed`` must be finite (every factor bounded). Raises NotMappable when the graph cannot be
    described as a Network (an unknown shape)."""
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound '{bound}': choose one of {', '.join(BOUNDS)}")
    if composed.upper_bound is None:
        raise NotMappable("the product bound is not finite")
    start = time.perf_counter()
    described = network_from_graph(graph, {layer.node: layer.output_factors for layer in composed.layers}, seed=seed)
    net = described.network
    margin = (1.0 + FLOAT32_MARGIN) ** len(net)
    recursion = bound == "recursion"
    outputs = {name: product for name, product in composed.outputs.items() if product is not None}
    upper, method = composed.upper_bound, "product"
    if recursion:
        tight = network_bound(net, window=window)
        for name in outputs:
            found = tight.outputs.get(net[described.ids[name]].name) if name in described.ids else None
            if found is not None:
                outputs[name] = min(outputs[name], found * margin)
        upper = min(upper, math.sqrt(math.fsum(v * v for v in outputs.values())) * (1 + 1e-12))
        method = tight.method if upper < composed.upper_bound else "product"
    branches = []
    for found in residual_branches(net, window=window if recursion else 0):
        producer = graph.producer(found.add)
        fork = graph.producer(found.fork)
        figure = min(found.product, found.bound * margin) if recursion else found.product
        ratio = abs(found.branch_coefficient / found.shortcut_coefficient) * figure \
            if found.shortcut_coefficient else math.inf
        branches.append(ResidualBranch(
            add=producer.name if producer else found.add, fork=fork.name if fork else found.fork, bound=figure,
            product=found.product, ratio=ratio, method=found.method if figure < found.product else "product",
            nodes=found.nodes))
    return GraphBound(upper, outputs, method, composed.upper_bound, branches, described.barriers,
                      time.perf_counter() - start)
