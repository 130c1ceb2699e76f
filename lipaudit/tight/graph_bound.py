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
from ..report_types import ResidualBranch
from .branches import residual_branches
from .from_graph import NotMappable, network_from_graph
from .recursion import DEFAULT_WINDOW, TIME_LIMIT_RATE, network_bound

BOUNDS = ("recursion", "product")
# Of the time limit, the network's recursion may take this share; the branches' take what is left.
NETWORK_SHARE = 2 / 3
# When the default window finished in under 1/WIDER_WINDOW_COST of its time, a window this much
# wider runs too, and each output keeps the lower of the two certified figures.
WIDER_WINDOW_STEP = 2
WIDER_WINDOW_COST = 4.0

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
    finished: bool = True  # False: the time limit stopped some recursion; those figures are the product's


def tighten(
    graph: Graph,
    composed: NetworkBound,
    *,
    bound: str = "recursion",
    window: int = DEFAULT_WINDOW,
    seed: int = 0,
    time_limit: float | None = None,
) -> GraphBound:
    """The network bound by ``bound`` ('recursion' or 'product') and the residual-branch bounds.

    ``composed`` must be finite (every factor bounded). ``time_limit``: seconds for the recursions
    (the network's, NETWORK_SHARE of it; then the branches', what is left); past it, figures keep
    the product's (``finished`` False). Raises NotMappable when the graph cannot be described
    as a Network (an unknown shape)."""
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
    upper, method, finished = composed.upper_bound, "product", True
    if recursion:
        network_deadline = None if time_limit is None else start + NETWORK_SHARE * time_limit
        runs = [(window, TIME_LIMIT_RATE)]
        while runs:
            used, rate = runs.pop()
            began = time.perf_counter()
            left = None if network_deadline is None else max(0.0, network_deadline - began)
            tight = network_bound(net, window=used, time_limit=left, work_rate=rate)
            first = used == window and rate == TIME_LIMIT_RATE
            if first:  # later runs' figures only replace higher ones
                finished = tight.finished
            improved = False
            for name in outputs:
                found = tight.outputs.get(net[described.ids[name]].name) if name in described.ids else None
                if found is not None and found * margin < outputs[name]:
                    outputs[name], improved = found * margin, True
            if improved:
                upper = min(upper, math.sqrt(math.fsum(v * v for v in outputs.values())) * (1 + 1e-12))
                method = tight.method if upper < composed.upper_bound else "product"
            # Cheap at this window: the wider one usually gains a few percent more (bench/recursion.py).
            spent = time.perf_counter() - began
            if first and tight.finished and (left is None or spent * WIDER_WINDOW_COST < left):
                runs.append((window + WIDER_WINDOW_STEP, rate))
            elif first and tight.finished and left is not None and spent * WIDER_WINDOW_COST < 2 * left:
                # Done in well under its time, but the rate capped its work: again with the rate
                # this machine showed, for the time that is left.
                runs.append((window, rate * max(1.0, (left - spent) / max(spent, 1e-3))))
    # The branches take what the network's recursion left of the limit; in product mode, nothing.
    branch_time = 0.0 if not recursion else None if time_limit is None else start + time_limit - time.perf_counter()
    branches = []
    for branch in residual_branches(net, window=window, time_limit=branch_time):
        finished = finished and (branch.finished or not recursion)
        figure = min(branch.product, branch.bound * margin)
        producer, source = graph.producer(branch.add), graph.producer(branch.fork)
        branches.append(
            ResidualBranch(
                add=producer.name if producer else branch.add,
                fork=source.name if source else branch.fork,
                bound=figure,
                product=branch.product,
                ratio=abs(branch.branch_coefficient / branch.shortcut_coefficient) * figure
                if branch.shortcut_coefficient
                else math.inf,
                method=branch.method if figure < branch.product else "product",
                nodes=branch.nodes,
            )
        )
    return GraphBound(
        upper,
        outputs,
        method,
        composed.upper_bound,
        branches,
        described.barriers,
        time.perf_counter() - start,
        finished,
    )
