"""The interval-Jacobian bound per segment: the network cut at values every path goes through.

Where every path from the input to the output passes through a value c (the residual stream between
two blocks), the network is f = f₂ ∘ f₁ with c = f₁(x).  On the box B (convex), the chain rule and
the mean value inequality give

    Lip_B(f) ≤ sup_{x∈B} ‖J_f₂(f₁(x))‖₂ · ‖J_f₁(x)‖₂ ≤ sup_{y∈S} ‖J_f₂(y)‖₂ · sup_{x∈B} ‖J_f₁(x)‖₂

for any box S ⊇ f₁(B): here the range of c that the whole pass proved (interval arithmetic ∩ the
centred form ∩ the affine forms).  Only the image f₁(B) matters in the first sup, so the segment's
pass also reads the whole pass's ranges of its inner values (they hold on that image), without the
centred form (which follows a value from S's centre, outside the image: lipaudit.domain.local).
Each segment is bounded alone (lipaudit.domain.jacobian on its own box), so it starts from an
exact identity Jacobian: the radius of an enclosure no longer grows
from block to block, which is what makes the whole-network enclosure useless on a deep stack.  The
product loses the alignment between the segments' Jacobians, so the figure is the lower of the
whole network's and the best product.

Which cuts: lipaudit.tight.segments finds them (on a skeleton of the graph: one node per value).
Cutting a plain chain at every value would give the product of the layers' norms, so only the cuts
that feed a fork (a value read by two nodes or more: a residual stream) are used, with the input and
the output; the best product over the ways of grouping consecutive pieces (each group spanning at
most ``MAX_GROUP`` pieces, and the whole network) is found by dynamic programming over the
segments' figures.  The pieces' own passes also give the chain of their Jacobians' centres
(lipaudit.domain.telescope), which keeps the alignment the product loses; the figure is the lowest
of the whole network's, the best product and the chain's.  Every choice is a function of the graph
and the box (no timing).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..compose import float32_margin
from ..intervals.interval import Interval
from ..intervals.jacobian import nonnegative_norm
from ..ir import Graph
from ..spectral.dense import dense_norm
from ..spectral.scaling import product_up
from ..tight.network import Network, Opaque
from ..tight.segments import cuts
from .jacobian import JacobianBound, JacobianUnavailable
from .propagate import intersected
from .telescope import Link, best_chains

# A segment groups at most this many consecutive pieces (pieces: the parts between two fork cuts),
# so the number of segment passes grows linearly with the depth of the network.
MAX_GROUP = 4

Bound = Callable[[Graph, Mapping[str, tuple], Mapping[str, Interval] | None], JacobianBound]


@dataclass
class SegmentedBound:
    upper_bound: float
    segments: list[tuple[str, str, float]]  # (input cut, output cut, figure) of the best product; [] when chained
    seconds: float
    failures: list[str]  # why a segment had no figure (the products through it are then skipped)
    # where the figure is the chain of the pieces' centres (lipaudit.domain.telescope): (input cut,
    # output cut, ‖C‖₂, δ) of each piece
    chain: list[tuple[str, str, float, float]] = field(default_factory=list)


def fork_cuts(graph: Graph) -> list[str]:
    """The values every path from the (single) input to the (single) output goes through and that
    two nodes or more read, with the input first and the output last; [] where there is no such
    value, more than one input or output, or a value the skeleton cannot place."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return []
    net, ids = _skeleton(graph)
    output = ids.get(graph.outputs[0])
    if output is None:
        return []
    found = cuts(net, output)
    if len(found) < 3:
        return []
    readers = net.consumers()
    names = {value: name for name, value in ids.items()}
    inner = [names[v] for v in found[1:-1] if len(set(readers[v])) >= 2]
    if not inner:
        return []
    return [names[found[0]], *inner, names[found[-1]]]


def _skeleton(graph: Graph) -> tuple[Network, dict[str, int]]:
    """One Network node per value that depends on the input (its shape only where known): the
    structure the cut finder reads.  A value no node makes from the input is a constant here."""
    net = Network()
    ids: dict[str, int] = {}
    for name in graph.inputs:
        ids[name] = net.input(_shape(graph, name), name=name)
    for node in graph.nodes:
        inputs = [ids[name] for name in graph.variable_inputs(node) if name in ids]
        if not inputs:
            continue
        for name in node.outputs:
            if name:
                ids[name] = net.append(Opaque(1.0), inputs, name=name, shape=_shape(graph, name))
    return net, ids


def _shape(graph: Graph, name: str) -> tuple[int, ...]:
    shape = graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        return ()
    return tuple(int(d) for d in shape)


def subgraph(graph: Graph, start: str, end: str) -> Graph:
    """The part of ``graph`` that makes cut ``end`` from cut ``start`` (its only input), with the
    nodes that compute constants; the same Node and Value objects (read only)."""
    inside, constant = {start}, set[str]()
    kept = []
    for node in graph.nodes:
        variables = graph.variable_inputs(node)
        if all(name in constant for name in variables):
            kept.append(node)  # it computes a constant (a shape, a folded weight)
            constant.update(name for name in node.outputs if name)
        elif all(name in inside or name in constant for name in variables):
            kept.append(node)
            inside.update(name for name in node.outputs if name)
        # else: a node of another segment (or of a branch that does not reach ``end``)
        if end in inside:
            break
    if end not in inside:
        raise ValueError(f"'{end}' is not made from '{start}'")
    needed = _ancestors(kept, end, start)
    nodes = [node for node in kept if node in needed]
    values = {}
    for node in nodes:
        for name in (*node.all_inputs, *node.outputs):
            if name and name in graph.values:
                values[name] = graph.values[name]
    values[start] = graph.values[start]
    return Graph(nodes, values, [start], [end], opset=graph.opset, opset_imports=graph.opset_imports)


def _ancestors(nodes, end: str, start: str) -> set:
    producer = {name: node for node in nodes for name in node.outputs if name}
    seen: set = set()
    stack = [end]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if name == start or node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(node.all_inputs)
    return seen


def segmented_bound(
    graph: Graph,
    bounds: Mapping[str, tuple],
    cut_ranges: Mapping[str, Interval],
    bound: Bound,
    whole: float = math.inf,
) -> SegmentedBound | None:
    """The best product of segment figures over the fork cuts (None: no cut, or none below ``whole``).
    ``cut_ranges``: a sound range of the values on the box ``bounds`` (the whole pass's);
    ``bound(segment, its box, ranges on the image of B)``: a segment's certified figure on that
    image (raises JacobianUnavailable)."""
    start = time.perf_counter()
    found = fork_cuts(graph)
    if not found:
        return None
    pieces = len(found) - 1
    figures: dict[tuple[int, int], float] = {}
    failures: list[str] = []
    # Each segment's pass also proves a range of the values inside it and at its end, on the image
    # of B (all that the figures are used on): the later segments start from the intersection of
    # all of them, and read it for their inner values too.
    known = dict(cut_ranges)
    links: dict[tuple[int, int], Link] = {}  # segment (a, b) → (its centre, δ)
    for a in range(pieces):
        for b in range(a + 1, min(pieces, a + MAX_GROUP) + 1):
            if (a, b) == (0, pieces):
                continue  # the whole network: the caller's figure
            result = _segment_figure(graph, found[a], found[b], bounds, known, bound, failures)
            figures[(a, b)] = result.upper_bound if result is not None else math.inf
            if result is None:
                continue
            proved = result.ranges
            known = intersected(known, {name: value for name, value in proved.items() if name != found[a]})
            if (link := _link(result, found[b])) is not None:
                links[(a, b)] = link
    # best[b]: the least product of figures over the groupings of pieces 0..b
    best = [0.0] + [math.inf] * pieces
    choice = [0] * (pieces + 1)
    best[0] = 1.0
    for b in range(1, pieces + 1):
        for a in range(max(0, b - MAX_GROUP), b):
            value = product_up(best[a], figures.get((a, b), math.inf))
            if value < best[b]:
                best[b], choice[b] = value, a
    prefixes = [best[b] if b < pieces else min(best[b], whole) for b in range(1, pieces + 1)]
    chained, splits = best_chains(links, pieces, prefixes)
    split = splits[-1]
    if split is not None:
        # the float32 runtime's margin, as the whole pass takes it (lipaudit.domain.jacobian)
        figure = chained[-1] * float32_margin(graph)
        chain = [(found[a], found[b], _norm(links[(a, b)][0]), links[(a, b)][1]) for a, b in split]
        return SegmentedBound(figure, [], time.perf_counter() - start, failures, chain)
    if not best[pieces] < whole:
        return None
    chosen, b = [], pieces
    while b > 0:
        a = choice[b]
        chosen.append((found[a], found[b], figures[(a, b)]))
        b = a
    chosen.reverse()
    # the product's own rounding: one correctly rounded multiplication per factor
    figure = best[pieces] * (1 + 2 * len(chosen) * 2.0**-53)
    return SegmentedBound(figure, chosen, time.perf_counter() - start, failures)


def _link(result: JacobianBound, last: str) -> tuple[torch.Tensor, float] | None:
    """A piece's Jacobian centre as an (inputs, outputs) matrix and δ ≥ ‖J − C‖₂ on its box."""
    jac = result.enclosures.get(last)
    if jac is None:
        return None
    deviation = min(jac.deviation, nonnegative_norm(jac.radius))
    if not math.isfinite(deviation):
        return None
    return jac.centre.reshape(jac.directions, -1), deviation


def _norm(matrix: torch.Tensor) -> float:
    return dense_norm(matrix).value if matrix.numel() else 0.0


def _segment_figure(
    graph, first: str, last: str, bounds, cut_ranges, bound: Bound, failures: list[str]
) -> JacobianBound | None:
    """The segment's pass (None where it has no figure)."""
    try:
        part = subgraph(graph, first, last)
        if first in bounds:
            box = bounds[first]
        else:
            found = cut_ranges.get(first)
            if found is None:
                raise JacobianUnavailable(f"'{first}' has no range")
            box = (found.lo, found.hi)
        return bound(part, {first: box}, cut_ranges)
    except (JacobianUnavailable, ValueError) as why:
        failures.append(f"{first} → {last}: {why}")
        return None
