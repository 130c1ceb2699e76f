"""The slope-restricted recursion over a DAG (Combettes & Pesquet 2020; LipLT, Fazlyab et al. 2023).

Setting.  Every value y of the Network is a function y(x) of the input.  L(y) denotes a certified
upper bound on Lip(x ↦ y(x)) in ℓ2.  The *product bound* P(y) is the classical propagation
(docs/design.md, "Product bound"): P(input) = 1, P(N(x)) = ‖N‖·P(x) for a unary linear node, Σ|c_i|·P(x_i) for an
Add, √(Σ P(x_i)²) for a Concat, Lip(φ)·P(x) for an activation, c·√(Σ P(x_i)²) for a lipschitz
node.

Split of an activation.  φ with slopes in [α, β] is φ = a·Id + b·ψ, a = (α+β)/2, b = (β−α)/2, with
ψ elementwise and 1-Lipschitz (activations.py).  A lipschitz node (constant c) is a pure
injection, a = 0 and b = c; it and activations with a = 0 are never unrolled (region.py calls
them barriers).

Theorem (one step).  Let u be a value, R its window (region.py) with cuts C and expanded
activations V (for v ∈ V: output y_v = φ_v(z_v)).  Then for all inputs x, x'

    ‖u(x) − u(x')‖ ≤ ( Σ_{c∈C} ‖A_{u←c}‖·L(c) + Σ_{v∈V} b_v·‖A_{u←v}‖·L(z_v) )·‖x − x'‖,

where A_{u←s} is the linear map from the value s to u in the *linearised window*: every node
inside R kept (linear nodes as they are — biases dropped, they cancel in differences — expanded
activations replaced by a_v·Id), every other source held at zero.
Proof.  Put e_v = ψ_v(z_v(x)) for v ∈ V.  By induction over the values inside R in topological
order, each is an affine function of the cut values and of the e_v:  a linear node inside R reads
only values inside R or cuts (region.py), and an expanded activation's output is
y_v = a_v·z_v + b_v·e_v with z_v inside R or a cut.  The linear part of u in these variables is
exactly Σ_c A_{u←c}·c + Σ_v b_v·A_{u←v}·e_v (the derivative of an affine map w.r.t. one
variable, the others fixed).  Take differences between x and x', then the triangle inequality:
‖Δc‖ ≤ L(c)·‖Δx‖, and ‖Δe_v‖ ≤ ‖Δz_v‖ ≤ L(z_v)·‖Δx‖ because ψ_v is 1-Lipschitz.  ∎

The sweep.  In topological order every value gets L(y) = rule(L of its inputs) (the product rule
applied to the best bounds so far), and for the *targets* — the inputs of activations and
lipschitz nodes, the outputs, and the values read by two or more nodes (the forks a later window
may cut at) — also L(y) ← min(L(y), the one-step bound).  Every figure the step uses (L of cuts
and of pre-activations) belongs to an earlier value, so each L(y) is certified by induction.

Soundness of the window fallback on a DAG.  Nothing beyond the window is assumed: the cuts enter
only through L(c), which is a certified bound by the induction — the product rule on values that
were not targets, the min of product and recursion on those that were.  The window may cut a
path anywhere: at the input, at an activation on its edge, at a fork reached deeper than w, at a
barrier.  On a chain with window w this is LipLT's truncated recursion
    m_k ≤ |a|^w·‖W_k⋯W_{k−w}‖·Lip(φ)·m_{k−w−1} + Σ_{j=k−w}^{k−1} b·|a|^{k−1−j}·‖W_k⋯W_{j+1}‖·m_j,
w = 0 is the product, and w = None unrolls to the input: m_k = |a|^{k−1}‖W_k⋯W_1‖ + Σ_j b|a|^{k−1−j}‖W_k⋯W_{j+1}‖m_j.

Never above the product.  P and L use the same rules and the rules are monotone, and L(y) ≤
rule(L(inputs)) ≤ rule(P(inputs)) = P(y) at every value; so the network figure is ≤ the product.
Monotonicity also means any certified upper bound may replace a chain norm ‖A_{u←s}‖ (chain.py
uses the exact norm of the composite map where it can, the product of node norms otherwise).

Several sources together.  The step's sum Σ_s ‖A_{u←s}‖·w_s (w_s = L(c) or b_v·L(z_v)) is the
triangle inequality applied to Σ_s A_{u←s}·Δ_s with ‖Δ_s‖ ≤ w_s‖Δx‖.  Where the maps are explicit
matrices, chain.joint_bound bounds that sum as one stacked operator, which is never above the
triangle figure (same hypotheses, so the theorem's proof carries over) and lower when the sources
reach u in different directions; the step keeps the lower of the two.

Work.  Chain norms are computed lazily: all terms are first bounded by the product of node norms,
then the largest are measured exactly until what is left unmeasured weighs less than
``refine_tol`` of the total; the result is within (1 + refine_tol) of measuring them all.  With a
``budget``, a dry run (no measurement) first lists every candidate with its cost (conv_maps.py's
operation counts) and its first-order gain, the derivative of the network's bound with respect to
the target's figure times the term's figure (a reverse sweep over the dry run's bounds); the
collapses of chain.py are candidates too (gain: the figures of the terms whose weight they make),
and a map several candidates measure is paid for once.  The best gains per cost are measured, in
that order, while their operations fit the allowance (budget
× the operations of the node norms, the product's own work, or ``work`` operations when given).
A term not measured keeps its product figure, so the budget changes how tight the bound is, never
whether it is certified.  The allowance is counted in the cost model's operations, never in
seconds, so the figure depends on the network and the settings alone: not on the machine, its
load or its thread count.  A larger allowance measures a superset of the terms (the ranked list is
taken as a prefix), so the figure never grows with the budget.  A wall-clock ``time_limit`` exists
only on request, and makes the figure depend on the machine (``TightBound.finished`` says whether
it cut the work).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Literal

from ..invariants import present
from ..linear_maps import SUM_MARGIN
from ..spectral.scaling import in_safe_range, product_up, root_sum_squares
from .chain import DENSE_ENTRIES, DENSE_LIMIT, ChainBuilder, Term, joint_bound
from .conv_maps import MERGE_ALWAYS_COST, ConvMap, node_cost
from .maps import DenseMap, ScalarMap
from .network import Activation, Network, NetworkNode, Opaque
from .region import Role, role, window_region

DEFAULT_WINDOW = 2
# The default work budget: the measured chain norms may cost this many times the node norms.
DEFAULT_BUDGET = 1.5
# Under a time limit (only on request) the dry run, which ranks the chain norms, gets this share.
DRY_RUN_SHARE = 0.5
# The unit of the budget is the node norms' operations, but never less than this many (a small
# network's node norms take almost none): the default budget then allows 3e10 operations, a few
# seconds of work on a 2-core CPU, and small networks get every chain norm measured.
WORK_UNIT_FLOOR = 2e10
FREE_COST = MERGE_ALWAYS_COST
REFINE_TOL = 1e-3
# A joint bound's eigenproblem costs about rows·width·min(rows, width) operations, which no plan
# counts: above this (a few seconds) the chain norms' sum stands, so the run time stays bounded.
JOINT_MAX_COST = 2e9


@dataclass
class TargetBound:
    """The bounds on one target value: the product figure and the best one (recursion or product)."""

    value: int
    name: str
    product: float
    bound: float
    recursion: float | None
    sources: int


@dataclass
class TightBound:
    """A certified upper bound on the network's Lipschitz constant (ℓ2, all inputs together).

    ``bound`` = the best figure (never above ``product``); ``method`` names how it was reached:
    'product', or 'recursion-w<window>' ('recursion-full' without a window) when that was lower.
    ``outputs``: per output name, the best bound of that output alone.
    """

    bound: float
    product: float
    method: str
    window: int | None
    outputs: dict[str, float]
    product_outputs: dict[str, float]
    values: list[TargetBound] = field(default_factory=list)
    chain_norms: int = 0
    collapses: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    finished: bool = True  # False: the (requested) time limit stopped the recursion before the last target
    # Operations of the cost model: of the chain norms the plan measured, and of all it could have.
    work_spent: float = 0.0
    work_wanted: float = 0.0


def product_rule(node: NetworkNode, bounds: list[float]) -> float:
    """The product bound's rule at one node, from the bounds of its inputs."""
    return node.rule(bounds)


def targets(network: Network) -> set[int]:
    """Values where the one-step bound is taken (module docstring)."""
    chosen: set[int] = set(network.outputs)
    readers = network.consumers()
    for node in network.nodes:
        if isinstance(node.op, Opaque) or (
            isinstance(node.op, Activation) and role(network, node.id) is not Role.LINEAR
        ):
            chosen.update(node.inputs)
    chosen.update(v for v, r in enumerate(readers) if len(set(r)) >= 2)
    return {v for v in chosen if role(network, v) is Role.LINEAR}


def product_bound(network: Network) -> tuple[float, list[float]]:
    """(network figure, per-value figures) of the product bound."""
    bounds: list[float] = []
    for node in network.nodes:
        bounds.append(product_rule(node, bounds))
    return _combine_outputs(network, bounds), bounds


def network_bound(
    network: Network,
    *,
    window: int | None = DEFAULT_WINDOW,
    budget: float | None = DEFAULT_BUDGET,
    work: float | None = None,
    refine_tol: float = REFINE_TOL,
    dense_limit: int = DENSE_LIMIT,
    dense_entries: int = DENSE_ENTRIES,
    joint: bool = True,
    time_limit: float | None = None,
) -> TightBound:
    """min(recursion, product): a certified upper bound on the Lipschitz constant of ``network``.

    ``window``: activations unrolled behind each target (None: all).
    ``budget``: the chain norms measured exactly may cost at most this many times the node norms
    (the product's own work, by the cost model of maps.py, counted as at least WORK_UNIT_FLOOR
    operations: see work_allowance); ``work``: that many operations instead (the caller's share of a larger allowance).
    The rest keep the product of their node norms (still certified).  A dry run with every chain
    norm at that figure ranks the candidates by gain per unit of cost.  ``budget`` None (and no
    ``work``): measure all.
    ``refine_tol``: within a target, stop measuring once the unmeasured remainder weighs less than
    this fraction of it.  ``dense_limit`` / ``dense_entries``: explicit matrices for sources up to
    this many entries (chain.py).  ``joint``: where several sources of a target have explicit
    matrices, also bound them together (chain.joint_bound) and keep the lower figure.
    ``time_limit``: seconds, only when the caller asks for a wall clock; once spent (half of it for
    the dry run), the remaining targets keep the product rule's figure (``TightBound.finished`` is
    then False).  Still certified, but no longer a function of the network alone.
    """
    if not network.outputs:
        raise ValueError("the network has no outputs")
    if window is not None and window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")
    start = time.perf_counter()
    for node in network.nodes:  # the node norms: the product's work, timed apart
        node.norm()
    node_seconds = time.perf_counter() - start
    product, products = product_bound(network)
    chosen = targets(network)
    selected = None
    planned = budget is not None or work is not None
    spent = wanted = 0.0
    if planned:
        reuse: dict = {}
        dry = _Sweep(
            network,
            chosen,
            window,
            refine_tol,
            dense_limit,
            dense_entries,
            joint,
            plan="collect",
            reuse=reuse,
            deadline=None if time_limit is None else start + DRY_RUN_SHARE * time_limit,
        )
        dry_best = dry.run()
        chosen = dry.visited  # the dry run's plan covers what it reached, nothing beyond
        if work is not None:
            allowance = work
        else:
            allowance = work_allowance(network, present(budget, "the budget"))
        candidates = dry.candidates(dry_best)
        selected, spent = _select(candidates, allowance)
        every = {unit: cost for _, _, maps in candidates for unit, (_, cost) in maps.items()}
        wanted = math.fsum(cost for cost in every.values() if cost > FREE_COST)
        if len(selected) == len(candidates):
            selected = None  # everything fits: measure as without a budget (collapses included)
    sweep = _Sweep(
        network,
        chosen,
        window,
        refine_tol,
        dense_limit,
        dense_entries,
        joint,
        plan=selected,
        reuse=reuse if planned else None,
        deadline=None if time_limit is None else start + time_limit,
    )
    best = sweep.run()
    bound = _combine_outputs(network, best)
    method = "product" if not bound < product else (f"recursion-w{window}" if window is not None else "recursion-full")
    seconds = {"node_norms": node_seconds, "recursion": time.perf_counter() - start - node_seconds}
    return TightBound(
        min(bound, product),
        product,
        method,
        window,
        {network[o].name: best[o] for o in network.outputs},
        {network[o].name: products[o] for o in network.outputs},
        sweep.values,
        sweep.measured,
        sweep.builder.collapses,
        seconds,
        finished=not (sweep.out_of_time or (planned and dry.out_of_time)),
        work_spent=spent,
        work_wanted=wanted,
    )


def product_work(network: Network) -> float:
    """Operations of the cost model that the node norms take."""
    return math.fsum(node_cost(n) for n in network.nodes)


def work_allowance(network: Network, budget: float) -> float:
    """The operations ``budget`` buys: that many times the node norms' (at least WORK_UNIT_FLOOR).
    Proportional to the budget, so 0 measures only what is free and a larger budget never less."""
    return budget * max(product_work(network), WORK_UNIT_FLOOR)


@dataclass
class _Sweep:
    """One pass over the network in topological order (module docstring, "The sweep").

    ``plan``: None measures every improvable chain norm; "collect" measures none and records the
    candidates (key, share of the target's bound, cost); a set of keys measures those only.
    """

    network: Network
    chosen: set[int]
    window: int | None
    refine_tol: float
    dense_limit: int
    dense_entries: int
    joint: bool = True
    plan: Literal["collect"] | set[tuple[int, int, int]] | None = None
    reuse: dict | None = None
    deadline: float | None = None  # perf_counter() from which targets keep the product rule's figure (on request only)
    visited: set[int] = field(default_factory=set)
    out_of_time: bool = False
    values: list[TargetBound] = field(default_factory=list)
    steps: dict = field(default_factory=dict)  # collect: target -> [(figure, dependency, key, map, collapses)]
    # collect: (target, source) -> (per collapse key, the maps it would measure; per anchor, the
    # collapses its weight goes through): chain.ChainBuilder.collapse_units and .origins
    collapse_records: dict = field(default_factory=dict)
    measured: int = 0

    def __post_init__(self) -> None:
        self.builder = ChainBuilder(self.network, self.dense_limit, self.dense_entries)
        self.builder.measure = self.plan != "collect"
        # A dry run needs no explicit matrix, only its size and product figure; nor does a
        # (target, source) pair with no term the plan measures (_terms sets builder.shape_only).
        self._planned_pairs = {key[:2] for key in self.plan} if isinstance(self.plan, set) else None
        # A planned collapse is keyed (target, source, -1 - the value whose terms it measures).
        self._planned_collapses: dict[tuple[int, int], set[int]] = {}
        for key in self.plan if isinstance(self.plan, set) else ():
            if key[2] < 0:
                self._planned_collapses.setdefault(key[:2], set()).add(-1 - key[2])
        if self.plan is not None:
            self.builder.collapse_cost = FREE_COST

    def run(self) -> list[float]:
        products = product_bound(self.network)[1]
        best: list[float] = []
        for node in self.network.nodes:
            best.append(product_rule(node, best))
            if node.id not in self.chosen or not math.isfinite(best[-1]) or best[-1] == 0.0:
                continue
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                self.out_of_time = True
                continue
            self.visited.add(node.id)
            found, sources = self._one_step(node.id, best)
            if found is not None and found < best[-1]:
                best[-1] = found
            self.values.append(TargetBound(node.id, node.name, products[node.id], best[-1], found, sources))
        return best

    def _one_step(self, target: int, best: list[float]) -> tuple[float | None, int]:
        """(one-step bound or None, number of sources) at ``target``."""
        region = window_region(self.network, target, self.window)
        weighted: list[tuple[float, Term, tuple[int, int, int]]] = []
        depends: list[int] = []  # the value whose bound each term's weight is proportional to
        for source in region.sources:
            dep = self.network[source].inputs[0] if source in region.injections else source
            weight = product_up(best[dep], region.injections[source] if source in region.injections else 1.0)
            if weight == 0.0:
                continue
            if not math.isfinite(weight):
                return None, len(region.sources)
            for index, term in enumerate(self._terms(source, target, region.inside)):
                weighted.append((product_up(weight, term.weight), term, (target, source, index)))
                depends.append(dep)
        total = self._refine(weighted) * SUM_MARGIN
        if self.plan == "collect":
            self.steps[target] = [
                (product_up(w, t.map.cheap), dep, key, t.map, self._collapses_behind(key, t.anchor))
                for (w, t, key), dep in zip(weighted, depends)
            ]
        return total, len(region.sources)

    def _collapses_behind(self, key: tuple[int, int, int], anchor: int) -> frozenset[int]:
        return self.collapse_records.get(key[:2], ({}, {}))[1].get(anchor, frozenset())

    def candidates(self, best: list[float]) -> list[tuple[tuple[int, int, int], float, dict]]:
        """After a dry run: (key, gain, maps) of every improvable term and of every collapse that
        has maps to measure; maps: identity -> (map, cost), what the measurement measures (a map
        shared by several candidates is measured once).  gain = ∂(network bound)/∂m_u times the
        term's figure: the first-order decrease of the network's bound if the term dropped to
        zero; for a collapse, times the figures of the terms whose weight it makes.  The
        derivatives come from a reverse sweep: through the product rule where it gave L(y), through
        the recursion's terms (m_u is linear in the dependencies' bounds) at every target — with
        product figures only, the dry run's recursion rarely beats the product rule, but once
        measured it will, so its terms are the ones that matter."""
        net = self.network
        adjoint = [0.0] * len(net.nodes)
        final = _combine_outputs(net, best)
        for o in net.outputs:
            adjoint[o] += best[o] / final if len(net.outputs) > 1 and final > 0 else 1.0
        for node in reversed(net.nodes):
            y = node.id
            if adjoint[y] == 0.0:
                continue
            if y in self.steps:
                for figure, dep, *_ in self.steps[y]:
                    if best[dep] > 0:
                        adjoint[dep] += adjoint[y] * figure / best[dep]
                continue
            for i, slope in zip(node.inputs, node.rule_slopes(best)):
                adjoint[i] += adjoint[y] * slope
        found = []
        for target, terms in self.steps.items():
            for figure, _, key, linear, _ in terms:
                if linear.improvable and figure > 0:
                    found.append((key, adjoint[target] * figure, {id(linear): (linear, linear.cost())}))
        for (target, source), (units, _) in self.collapse_records.items():
            fed = [(figure, behind) for figure, _, key, _, behind in self.steps.get(target, ()) if key[1] == source]
            for collapse, maps in units.items():
                gain = adjoint[target] * math.fsum(figure for figure, behind in fed if collapse in behind)
                if maps and gain > 0:
                    found.append(((target, source, -1 - collapse), gain, maps))
        return found

    def _terms(self, source: int, target: int, inside: set[int]) -> list[Term]:
        """The chain terms; a dry run hands its convolution terms on (the maps do not depend on
        the figures, only a collapse's weight does, and those are not handed on)."""
        key = (target, source)
        if self.reuse is not None and key in self.reuse and self.plan != "collect":
            return self.reuse.pop(key)
        collapses = self.builder.collapses
        unplanned = self._planned_pairs is not None and key not in self._planned_pairs
        self.builder.shape_only = self.plan == "collect" or unplanned
        self.builder.wanted_values = False
        self.builder.planned_collapses = self._planned_collapses.get(key, set())
        terms = self.builder.propagate(source, target, inside)
        if self.builder.wanted_values:  # a collapse measures what is cheap: it needs the values
            self.builder.shape_only = False
            self.builder.collapses = collapses
            terms = self.builder.propagate(source, target, inside)
        if self.plan == "collect":
            self.collapse_records[key] = (self.builder.collapse_units, self.builder.origins)
        if (
            self.plan == "collect"
            and self.reuse is not None
            and self.builder.collapses == collapses
            and all(
                isinstance(t.map, (ScalarMap, DenseMap)) or (isinstance(t.map, ConvMap) and not t.map.skeleton)
                for t in terms
            )
        ):
            self.reuse[key] = terms
        return terms

    def _refine(self, weighted) -> float:
        """Σ weight·‖map‖, measuring the heaviest improvable maps exactly (those the plan allows)
        until the rest weighs less than refine_tol of the total."""
        figures = [product_up(w, t.map.cheap) for w, t, _ in weighted]
        total = math.fsum(figures)
        if self.plan == "collect":
            return total
        order = sorted(range(len(weighted)), key=lambda i: -figures[i])
        allowed = [
            weighted[i][1].map.improvable and (self.plan is None or weighted[i][2] in self.plan)
            for i in range(len(weighted))
        ]
        remaining = math.fsum(figures[i] for i in order if allowed[i])
        for i in order:
            if not allowed[i]:
                continue
            if remaining <= self.refine_tol * math.fsum(figures):
                break
            remaining -= figures[i]
            figures[i] = product_up(weighted[i][0], weighted[i][1].map.norm())
            self.measured += 1
        total = math.fsum(figures)
        dense = [i for i, (w, t, _) in enumerate(weighted) if isinstance(t.map, DenseMap) and figures[i] > 0]
        # The joint bound scales the matrices by their weights and forms Gram matrices: squares of
        # weights and map figures out of float64's safe range would underflow or overflow there.
        squares = [x * x for i in dense for x in (weighted[i][0], weighted[i][1].map.cheap)]
        if self.joint and len(dense) >= 2 and all(in_safe_range(x) for x in squares):
            rows = sum(weighted[i][1].map.columns.shape[0] for i in dense)
            width = weighted[dense[0]][1].map.columns[0].numel()
            cost = rows * width * min(rows, width)
            if rows * width <= self.dense_entries and cost <= (JOINT_MAX_COST if self.plan is None else FREE_COST):
                items = [(weighted[i][0], weighted[i][1].map) for i in dense]
                joint = joint_bound(items, [figures[i] / weighted[i][0] for i in dense])
                rest = math.fsum(figures[i] for i in range(len(weighted)) if i not in dense)
                total = min(total, joint + rest)
        return total


def _select(candidates, allowance: float) -> tuple[set[tuple[int, int, int]], float]:
    """(the chain norms and collapses to measure, their operations): in the order of _ranked, each
    whose maps not yet bought cost at most FREE_COST, and the others as long as the total cost of
    the maps bought stays within ``allowance``.

    The ranked order does not depend on the allowance and is taken as a prefix (the first that
    does not fit ends it), so a larger allowance selects a superset."""
    chosen: set[tuple[int, int, int]] = set()
    bought: set[int] = set()
    spent, full = 0.0, False
    for key, maps in _ranked(candidates):
        price = math.fsum(cost for unit, (_, cost) in maps.items() if unit not in bought)
        if price > FREE_COST and (full or spent + price > allowance):
            full = True
            continue
        chosen.add(key)
        bought.update(maps)
        spent += price if price > FREE_COST else 0.0
    return chosen, spent


def _ranked(candidates) -> list[tuple[tuple[int, int, int], dict]]:
    """Greedy by gain per cost, best first, where a candidate's cost counts only the maps that the
    candidates before it do not measure already (a composite kernel that several collapses
    measure is paid for once).  Gains per cost are compared at 9 significant digits and ties
    broken by key: rounding noise (a different thread count in a BLAS reduction) cannot reorder
    them."""
    bought: set[int] = set()

    def priority(index: int) -> tuple[float, tuple[int, int, int]]:
        key, gain, maps = candidates[index]
        price = math.fsum(cost for unit, (_, cost) in maps.items() if unit not in bought)
        return -float(f"{gain / max(price, 1.0):.9g}"), key

    readers: dict[int, list[int]] = {}
    for index, (_, _, maps) in enumerate(candidates):
        for unit in maps:
            readers.setdefault(unit, []).append(index)
    version = [0] * len(candidates)
    heap = [(*priority(i), 0, i) for i in range(len(candidates))]
    heapq.heapify(heap)
    order, done = [], set()
    while heap:
        _, key, seen, index = heapq.heappop(heap)
        if index in done or seen != version[index]:
            continue
        done.add(index)
        maps = candidates[index][2]
        order.append((key, maps))
        fresh = [unit for unit in maps if unit not in bought]
        bought.update(fresh)
        for other in sorted({j for unit in fresh for j in readers[unit] if j not in done}):
            version[other] += 1
            heapq.heappush(heap, (*priority(other), version[other], other))
    return order


def _combine_outputs(network: Network, bounds: list[float]) -> float:
    if len(network.outputs) == 1:
        return bounds[network.outputs[0]]
    return root_sum_squares(bounds[o] for o in network.outputs) * SUM_MARGIN
