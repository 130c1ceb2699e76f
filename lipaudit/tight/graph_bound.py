"""The network bound of a composed graph beyond the product: the recursion, and the residual branches.

``tighten`` takes the graph and the product the composer computed (every factor in it), describes
the graph as a Network (from_graph.py) and runs the recursion (recursion.py) and the residual-branch
bounds (branches.py) on it.  Each figure is the lower of the recursion and the product, so it is
never above the product; it is certified exactly when the product is (the factors it reuses are
the product's).

The work is a budget of the cost model's operations (recursion.py), never seconds: the figure is a
function of the graph and the settings.  The network's recursion runs at the default window with
the whole allowance; when the chain norms it wanted cost under 1/WIDER_WINDOW_COST of the
allowance, a window WIDER_WINDOW_STEP wider runs too, with what is left, and each output keeps the
lower figure.  The residual branches share what the network left, equally.  A wall-clock limit is
used only when the caller asks for one.

The network figure covers every position of ``graph.output``: a name listed twice counts twice
(the root sum of squares of the positions), as in the product (compose).

The recursion's chain norms are those of the exact operators, in float64; the model runs in
float32.  As the composer does for each factor, every node of the graph that computes (not one
that only moves entries) adds FLOAT32_MARGIN (relative) for that rounding
(lipaudit.compose.float32_margin).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import partial

from ..compose import NetworkBound, float32_margin
from ..intervals.interval import Interval
from ..ir import Graph
from ..report_types import ResidualBranch
from ..spectral.scaling import in_safe_range, root_sum_squares
from .branches import residual_branches
from .from_graph import NotMappable, network_from_graph
from .neuron_slopes import neuron_slope_ranges
from .recursion import DEFAULT_WINDOW, network_bound, work_allowance
from .semidefinite import semidefinite_bound
from .vertices import piecewise_bound

BOUNDS = ("recursion", "product")
# Of the time limit, the network's recursion may take this share; the branches' take what is left.
NETWORK_SHARE = 2 / 3
# When the default window's chain norms cost under 1/WIDER_WINDOW_COST of the allowance (operations
# of the cost model), a window this much wider runs too, and each output keeps the lower figure.
WIDER_WINDOW_STEP = 2
# The pipeline's work budget, in multiples of the node norms' operations (recursion.work_allowance;
# a composite kernel costs what conv_norm's planner predicts for it, conv_maps.ConvMap.cost).
# Measured with bench/recursion_budget.py --threads 1 --skip-repeat (CPU seconds, default / product)
# on this project's shared 2-core machine at 32x32: 0.3 took 1.5x on ResNet-18, 1.7x on MobileNetV2,
# 3.0x on RegNetX-200MF (a 1.0 s product) and 2.7x on ConvNeXt-atto, now that the dry run ranks
# skeletons (conv_maps.ConvMap.skeleton) instead of building and checking every composite kernel.
# 1.0 gave figures 2-10x tighter (ResNet-18 3.8e8 against 8.3e8) in 2.1x (ConvNeXt), 2.3x
# (ResNet-18), 2.7-3.0x (RegNetX) and 3.3-3.6x (MobileNetV2, explicit matrices' pushes and norms).
DEFAULT_RECURSION_BUDGET = 0.3
WIDER_WINDOW_COST = 4.0
# Operations of the semidefinite program's cost model (lipaudit.sdp) at the default recursion
# budget: a fixed number, so the figure is the same on any machine; about a second of one core on a
# 64-128-128-10 MLP.  It scales with the recursion budget (work_allowance's multiple), up to
# SDP_UNLIMITED times this, which is also what no limit gets.
SDP_BUDGET = 3e10
SDP_UNLIMITED = 30.0
# The interior-point method may spend this multiple of the budget on a whole-network program: it
# converges, so the figure is the optimum's and moves with the weights by about as much as they
# move, where the first-order method stops after its budget at a point that depends on their last
# bits (ONNX and .pt2 twins of a small residual CNN whose BatchNorm each exporter folds in its own
# rounding: 0.1212 and 0.1190 that way, 0.105544438 and 0.105544434 this way, in 5 s instead of 1 s).
INTERIOR_ALLOWANCE = 10.0  # of the default budget's, scaled down with a lower --recursion-budget

__all__ = ["BOUNDS", "DEFAULT_RECURSION_BUDGET", "GraphBound", "NotMappable", "tighten"]


@dataclass
class GraphBound:
    upper_bound: float
    outputs: dict[str, float]  # graph output name -> its bound
    method: str  # "product", "recursion-w2", ...
    product: float
    branches: list[ResidualBranch] = field(default_factory=list)
    barriers: dict[str, str] = field(default_factory=dict)  # node -> why the recursion does not look through it
    seconds: float = 0.0
    finished: bool = True  # False: the requested time limit stopped some recursion; those figures are the product's
    work_allowed: float = 0.0  # operations of the cost model the recursion could spend
    work_spent: float = 0.0  # and those its plans measured
    proof: str | None = None  # how the semidefinite figure was proved, where it is the network's
    local: bool = False  # per-neuron slopes on a bounded domain: the figure holds there only


def tighten(
    graph: Graph,
    composed: NetworkBound,
    *,
    bound: str = "recursion",
    window: int = DEFAULT_WINDOW,
    seed: int = 0,
    budget: float | None = DEFAULT_RECURSION_BUDGET,
    time_limit: float | None = None,
    ranges: dict[str, Interval] | None = None,
) -> GraphBound:
    """The network bound by ``bound`` ('recursion' or 'product') and the residual-branch bounds.

    ``composed`` must be finite (every factor bounded).  ``budget``: the recursion's work, in
    multiples of the node norms' operations (recursion.work_allowance; None: measure every
    chain norm).  ``time_limit``: seconds, only on request (the network's recursion NETWORK_SHARE
    of it, the branches what is left); past it, figures keep the product's (``finished`` False).
    ``ranges``: on a bounded domain, every value's range there; the activations then get per-neuron
    slopes (neuron_slopes.py) and the figure holds on that domain only.
    Raises NotMappable when the graph cannot be described as a Network (an unknown shape)."""
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound '{bound}': choose one of {', '.join(BOUNDS)}")
    if budget is not None and not budget >= 0:
        raise ValueError(f"the recursion budget must be >= 0, got {budget}")
    run = partial(_tighten, graph, composed, bound=bound, window=window, seed=seed, budget=budget)
    if ranges is None or bound != "recursion":
        return run(time_limit=time_limit, ranges=ranges)
    # Per-neuron slopes cut each activation into a scaling and a remainder the recursion cannot see
    # through, and skip the semidefinite step: the network's own slopes (which hold on the domain too)
    # may do better, and the figure on a domain is never above the one they give (redteam18).
    start = time.perf_counter()
    per_neuron = run(time_limit=time_limit, ranges=ranges)
    left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - start))
    shared = run(time_limit=left, ranges=None, interior=False)
    return _lower(per_neuron, shared)


def _lower(per_neuron: GraphBound, shared: GraphBound) -> GraphBound:
    """The figure on a domain: per output the lower of the two runs', the network's from the lower."""
    outputs = {name: min(value, shared.outputs.get(name, value)) for name, value in per_neuron.outputs.items()}
    finished = per_neuron.finished and shared.finished
    spent = per_neuron.work_spent + shared.work_spent
    if not shared.upper_bound < per_neuron.upper_bound:
        return replace(per_neuron, outputs=outputs, finished=finished, work_spent=spent)
    return replace(shared, outputs=outputs, branches=per_neuron.branches, finished=finished, work_spent=spent)


def _tighten(
    graph: Graph,
    composed: NetworkBound,
    *,
    bound: str,
    window: int,
    seed: int,
    budget: float | None,
    time_limit: float | None,
    ranges: dict[str, Interval] | None,
    interior: bool = True,
) -> GraphBound:
    """One run of the recursion and the semidefinite step (``interior`` False: its first-order
    method only, never the interior-point one, which takes seconds on a small CNN)."""
    if composed.upper_bound is None:
        raise NotMappable("the product bound is not finite")
    start = time.perf_counter()
    local = neuron_slope_ranges(graph, ranges) if ranges is not None else None
    factors = {layer.node: layer.output_factors for layer in composed.layers}
    described = network_from_graph(graph, factors, seed=seed, neuron_slopes=local)
    net = described.network
    margin = float32_margin(graph)
    recursion = bound == "recursion"
    outputs = {name: product for name, product in composed.outputs.items() if product is not None}
    upper, method, finished = composed.upper_bound, "product", True
    allowance = None if budget is None else work_allowance(net, budget)
    spent = 0.0
    if recursion:
        network_deadline = None if time_limit is None else start + NETWORK_SHARE * time_limit
        runs = [window]
        while runs:
            used = runs.pop()
            left = None if network_deadline is None else max(0.0, network_deadline - time.perf_counter())
            work = None if allowance is None else max(0.0, allowance - spent)
            tight = network_bound(net, window=used, budget=None, work=work, time_limit=left)
            spent += tight.work_spent
            first = used == window
            if first:  # later runs' figures only replace higher ones
                finished = tight.finished
            improved = False
            for name in outputs:
                found = tight.outputs.get(net[described.ids[name]].name) if name in described.ids else None
                # outside the safe range a chain's products may have underflowed: the product's figure
                if found is not None and in_safe_range(found) and found * margin < outputs[name]:
                    outputs[name], improved = found * margin, True
            if improved:
                upper = min(upper, _by_position(graph, outputs))
                method = tight.method if upper < composed.upper_bound else "product"
            # Cheap at this window: the wider one usually gains a few percent more (bench/recursion.py).
            cheap = allowance is None or tight.work_wanted * WIDER_WINDOW_COST <= allowance
            if first and tight.finished and cheap:
                runs.append(window + WIDER_WINDOW_STEP)
    if recursion and local:
        # A few entries that may switch on the box: the largest norm of the linear pieces (vertices.py).
        work = None if allowance is None else max(0.0, allowance - spent)
        pieces = piecewise_bound(graph, factors, local, seed=seed, window=window, work=work)
        if pieces is not None:
            for name, found in pieces[0].items():
                if name in outputs and found * margin < outputs[name]:
                    outputs[name] = found * margin
            piecewise = _by_position(graph, outputs)
            if piecewise < upper:
                upper, method = piecewise, f"linear-pieces-{pieces[1]}"
    proof = None
    out_of_time = time_limit is not None and (not finished or time.perf_counter() > start + time_limit)
    if recursion and len(outputs) == 1 and not out_of_time:
        (name,) = outputs
        sdp = semidefinite_bound(
            net,
            warm_start=outputs[name] / margin,
            budget=sdp_budget(budget),
            interior_budget=interior_budget(budget) if interior else 0.0,
        )
        if sdp is not None and sdp.certified and sdp.figure is not None and sdp.figure * margin < outputs[name]:
            outputs[name] = sdp.figure * margin
            upper = min(upper, _by_position(graph, outputs))
            method, proof = sdp.method, sdp.proof
    # The branches share what the network's recursion left (of the work, and of a time limit); in
    # product mode, nothing.
    branch_time = 0.0 if not recursion else None if time_limit is None else start + time_limit - time.perf_counter()
    branch_work = 0.0 if not recursion else None if allowance is None else max(0.0, allowance - spent)
    branches = []
    for branch in residual_branches(net, window=window, time_limit=branch_time, work=branch_work):
        finished = finished and (branch.finished or not recursion)
        spent += branch.work_spent
        figure = min(branch.product, branch.bound * margin) if in_safe_range(branch.bound) else branch.product
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
        math.inf if allowance is None else allowance,
        spent,
        proof=proof if method.startswith("LipSDP-Neuron") else None,
        local=bool(local) and upper < composed.upper_bound,
    )


def sdp_budget(budget: float | None) -> float:
    """The semidefinite program's operations for the recursion's ``budget`` (None: no limit).

    Capped at the unlimited run's, so that a large finite budget never costs more than ``inf``
    (ConvNeXt-atto at 100: 208 s, where ``inf`` took 80 s)."""
    if budget is None or DEFAULT_RECURSION_BUDGET <= 0:
        return SDP_BUDGET * (SDP_UNLIMITED if budget is None else 1.0)
    return SDP_BUDGET * min(budget / DEFAULT_RECURSION_BUDGET, SDP_UNLIMITED)


def interior_budget(budget: float | None) -> float:
    """The interior-point method's operations on a whole-network program: INTERIOR_ALLOWANCE times
    the semidefinite budget, never more than at the default budget's (``inf`` spends its extra on
    the first-order method and the windows)."""
    return INTERIOR_ALLOWANCE * min(sdp_budget(budget), SDP_BUDGET)


def _by_position(graph: Graph, outputs: dict[str, float]) -> float:
    """The network figure from each output's: the root sum of squares over every position of
    ``graph.outputs`` (a name listed twice counts twice; a constant output, absent, counts 0)."""
    return root_sum_squares(outputs.get(name, 0.0) for name in graph.outputs) * (1 + 1e-12)
