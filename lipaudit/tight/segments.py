"""The semidefinite bound per segment: a network cut at the values every path goes through.

A value c of the network is a *cut* when every path from the input to the output passes through it
(the residual stream between two blocks, any value of a plain chain).  With the nodes that matter
(descendants of the input and ancestors of the output) in topological order, c is a cut whenever no
edge a → b jumps over it (a before c, b after c): a path from the input (at or before c) to the
output (at or after c) first reaches a node at or after c through an edge from before c, and that
edge can only end at c.  Between two consecutive cuts c < d the nodes after c up to d read only
nodes from c to d, so they make d as a function of c alone: the network is f = f_k ∘ … ∘ f_1, and

    Lip(f) ≤ Lip(f_k) · … · Lip(f_1).

Each segment's figure is the lower of its product of certified node norms and its certified
LipSDP-Neuron figure (semidefinite.py) where its program fits; consecutive pieces are merged while
the program stays under ``max_variables`` (a segment's variables: its input's entries plus its
neurons), so a segment is as long as the budget of the dense program allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..linear_maps import Linear
from ..sdp import SdpResult
from ..sdp.optimise import least_cost
from .network import Activation, Input, Network
from .semidefinite import AFFORDABLE, MAX_VARIABLES, ancestors_of, program_of, solve, worth_reading

__all__ = ["cuts", "segment", "segmented_bound"]


def _relevant(net: Network, output: int) -> list[int] | None:
    """Ids of the nodes on some path from the single input to ``output``, in topological order."""
    inputs = [node.id for node in net.nodes if isinstance(node.op, Input)]
    if len(inputs) != 1:
        return None
    ancestors = ancestors_of(net, output)
    reached = {inputs[0]}
    for node in net.nodes:
        if node.id in ancestors and any(i in reached for i in node.inputs):
            reached.add(node.id)
    return [i for i in range(len(net)) if i in reached and i in ancestors]


def cuts(net: Network, output: int) -> list[int]:
    """The cut values of ``net`` towards ``output``, in order: the input first, ``output`` last
    (empty where the network has no single input, or some node on the way reads a value off it)."""
    order = _relevant(net, output)
    if order is None or output not in order:
        return []
    position = {value: p for p, value in enumerate(order)}
    jumps = [0] * (len(order) + 1)
    for value in order:
        for i in net[value].inputs:
            if i not in position:  # a node between input and output reads something else
                return []
            jumps[position[i] + 1] += 1
            jumps[position[value]] -= 1
    found, covered = [], 0
    for p, value in enumerate(order):
        covered += jumps[p]
        if covered == 0:
            found.append(value)
    return found


def segment(net: Network, start: int, end: int) -> Network:
    """The part of ``net`` from cut ``start`` (its input) to cut ``end`` (its output), as a Network
    with the same ops and norms."""
    order = _relevant(net, end) or []
    inside = [v for v in order if start < v <= end and v != start]
    part = Network()
    ids = {start: part.input(net[start].shape, name=net[start].name)}
    for value in inside:
        node = net[value]
        if any(i not in ids for i in node.inputs):
            raise ValueError(f"node '{node.name}' reads a value outside the segment: not a cut")
        norm = node.norm() if isinstance(node.op, Linear) and node.op.arity == 1 else None
        ids[value] = part.append(node.op, [ids[i] for i in node.inputs], name=node.name, norm=norm, shape=node.shape)
    part.output(ids[end])
    return part


def product_of(net: Network) -> float:
    """The product bound of a one-output network: every node's rule on its inputs' bounds."""
    bounds = [0.0] * len(net)
    for node in net.nodes:
        bounds[node.id] = 1.0 if isinstance(node.op, Input) else node.rule(bounds)
    return bounds[net.outputs[0]]


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    neurons: int


def segmented_bound(net: Network, *, budget: float, max_variables: int = MAX_VARIABLES) -> SdpResult | None:
    """The product over segments of the lower of their product and their certified semidefinite
    figure, or None where no segment gets a semidefinite figure below its product."""
    if len(net.outputs) != 1:
        return None
    found = cuts(net, net.outputs[0])
    if len(found) < 3:  # the input and the output alone: no segment short of the whole
        return None
    pieces = [
        _Piece(a, b, sum(math.prod(net[v].shape) for v in range(a + 1, b + 1) if isinstance(net[v].op, Activation)))
        for a, b in zip(found, found[1:])
    ]
    segments = _merge(net, pieces, max_variables)
    parts = [segment(net, a, b) for a, b in segments]
    programs = [
        program_of(part, max_variables) if _has_activation(part) and worth_reading(part, budget) else None
        for part in parts
    ]
    # The budget goes by the optimiser's least work; the cheapest programs first, while they fit.
    sizes = [least_cost(p) if p is not None and p.groups else 0.0 for p in programs]
    spent = 0.0
    for index in sorted(range(len(parts)), key=lambda i: sizes[i]):
        if spent + sizes[index] > AFFORDABLE * budget:
            programs[index], sizes[index] = None, 0.0
        spent += sizes[index]
    total = sum(sizes) or 1.0
    figure, proofs, iterations, gained = 1.0, [], 0, 0
    for part, program, size in zip(parts, programs, sizes):
        product = product_of(part)
        value, how = product, "product"
        if program is not None and program.groups:
            result = solve(program, warm_start=product, budget=budget * size / total)
            iterations += result.iterations
            if result.figure is not None and result.figure < product:
                value, how, gained = result.figure, f"LipSDP-Neuron ({result.proof})", gained + 1
        figure *= value
        proofs.append(how)
    if not gained:
        return None
    figure *= 1 + 4 * len(parts) * 2.0**-53  # the product's own rounding
    method = f"LipSDP-Neuron per segment ({len(parts)})"
    proof = f"{len(parts)} segments cut at values every path goes through, figures multiplied: " + " | ".join(proofs)
    return SdpResult(figure, True, method, proof, iterations)


def _merge(net: Network, pieces: list[_Piece], max_variables: int) -> list[tuple[int, int]]:
    """Consecutive pieces joined while a segment's variables (its input's entries and its neurons)
    stay under ``max_variables``."""
    segments: list[tuple[int, int]] = []
    start, neurons = pieces[0].start, 0
    for piece in pieces:
        if neurons and math.prod(net[start].shape) + neurons + piece.neurons > max_variables:
            segments.append((start, piece.start))
            start, neurons = piece.start, 0
        neurons += piece.neurons
    segments.append((start, pieces[-1].end))
    return segments


def _has_activation(net: Network) -> bool:
    return any(isinstance(node.op, Activation) for node in net.nodes)
