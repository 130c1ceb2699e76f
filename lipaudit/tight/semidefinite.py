"""The certified semidefinite bound (lipaudit.sdp) on the networks it reads: typed linear maps and
elementwise activations, skip connections, convolutions and poolings included.

Every activation is a neuron group; its pre-activation, and the output, are linear in the input and
the earlier groups' outputs.  Those linear maps are materialised by running the network's own linear
nodes (any ``Linear``: ``forward``) on the basis vectors of each source (the input, or a group's
outputs), one block per source a value reads, in float64.  The rounding of every product and sum is
carried beside them: the same run on absolute values (``absolute().forward`` of the magnitudes)
and a count of rounded operations per entry (``terms()`` added at each map), so the certificate
covers the exact maps, not only the rounded matrices (docs/design.md, "Semidefinite bound").

A network with any other node (a pooling by maximum, a node known only by its constant) gets no
program here, and neither does one with more than MAX_VARIABLES input entries and neurons (the
basis would not fit); segments.py then tries the parts between the values every path goes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..linear_maps import Linear
from ..sdp import INPUT, Connection, NeuronGroup, SdpNetwork, SdpResult, sdp_bound
from ..sdp.optimise import least_cost, least_cost_of
from .network import Activation, Input, Network

__all__ = ["MAX_VARIABLES", "affordable", "program_of", "semidefinite_bound", "solve", "variables_of", "worth_reading"]

# At most this many variables (input entries plus neurons) in one program: the basis blocks and the
# dense matrices of lipaudit.sdp grow with its square, its Cholesky factorisations with its cube.
MAX_VARIABLES = 4096
# A program is solved only when the optimiser's least work (lipaudit.sdp.optimise.MIN_EVALUATIONS
# evaluations) is within this multiple of the budget: past it the figure would cost more than asked.
AFFORDABLE = 2.0
# Before reading a program: its least work from the activations' sizes (constant neurons, left out
# later, included) may exceed the affordable work by this factor and still be read.
ESTIMATE_SLACK = 8.0


@dataclass
class _Affine:
    """A value as a linear function of the sources: per source, the coefficients (source width,
    *shape) and their bound in absolute values; ``rounding``: rounded operations behind any entry."""

    blocks: dict[int, tuple[Tensor, Tensor]]
    rounding: int


def variables_of(net: Network) -> int | None:
    """Input entries plus neurons of ``net``'s program (what its basis spans, at most), or None
    where the network has no single input and output."""
    sizes = _sizes(net)
    return None if sizes is None else sizes[0] + sizes[1]


def _sizes(net: Network) -> tuple[int, int, int] | None:
    """(input entries, neurons, neurons with α·β ≠ 0) of ``net``'s program, at most."""
    inputs = [node for node in net.nodes if isinstance(node.op, Input)]
    if len(net.outputs) != 1 or len(inputs) != 1:
        return None
    needed = ancestors_of(net, net.outputs[0])
    activations = [(net[i].op, math.prod(net[i].shape)) for i in needed if isinstance(net[i].op, Activation)]
    neurons = sum(size for _, size in activations)
    curved = sum(size for op, size in activations if isinstance(op, Activation) and op.slopes[0] * op.slopes[1] != 0)
    return math.prod(inputs[0].shape), neurons, curved


def worth_reading(net: Network, budget: float) -> bool:
    """Whether ``net``'s program may be affordable: its least work from the sizes before constant
    neurons are left out (which only lowers it) is within ESTIMATE_SLACK × AFFORDABLE × ``budget``.
    Saves materialising programs that could never be solved."""
    sizes = _sizes(net)
    return sizes is not None and least_cost_of(*sizes) <= ESTIMATE_SLACK * AFFORDABLE * budget


def program_of(net: Network, max_variables: int = MAX_VARIABLES) -> SdpNetwork | None:
    """The LipSDP-Neuron program of ``net`` (one input, one output), or None where it has none."""
    variables = variables_of(net)
    if variables is None or variables > max_variables:
        return None
    output = net.outputs[0]
    needed = ancestors_of(net, output)
    last_read = {}
    for node in net.nodes:
        for i in node.inputs:
            last_read[i] = node.id
    values: dict[int, _Affine] = {}
    groups: list[NeuronGroup] = []
    for node in net.nodes:
        if node.id not in needed:
            continue
        op = node.op
        if isinstance(op, Input):
            width = math.prod(node.shape)
            values[node.id] = _basis(INPUT, torch.ones(width, dtype=torch.bool), node.shape)
        elif isinstance(op, Activation):
            pre = values[node.inputs[0]]
            moving = _moving(pre, math.prod(node.shape))
            if not bool(moving.any()):  # a constant pre-activation: so is the output
                values[node.id] = _Affine({}, 0)
            else:
                size = int(moving.sum())
                alpha, beta = np.full(size, op.slopes[0]), np.full(size, op.slopes[1])
                groups.append(NeuronGroup(alpha, beta, _connections(pre, groups, moving), name=node.name))
                values[node.id] = _basis(len(groups) - 1, moving, node.shape)
        elif isinstance(op, Linear):
            values[node.id] = _linear(op, [values[i] for i in node.inputs], [net[i].shape for i in node.inputs])
        else:
            return None
        for i in node.inputs:  # free what no later node reads
            if last_read.get(i) == node.id and i != output:
                values.pop(i, None)
    final = values[output]
    reads = _connections(final, groups, torch.ones(math.prod(net[output].shape), dtype=torch.bool))
    try:
        return SdpNetwork(_input_width(net), tuple(groups), reads)
    except ValueError:  # a group or the output reads nothing that moves: nothing to gain here
        return None


def semidefinite_bound(
    net: Network, *, warm_start: float, budget: float, interior_budget: float = 0.0
) -> SdpResult | None:
    """The certified SDP result for ``net`` within about ``budget`` operations, or None where it has
    no affordable program: the whole network's where it fits (``interior_budget``: more for the
    interior-point method there), else the product of its segments' (segments.py)."""
    if budget <= 0:
        return None
    program = program_of(net) if worth_reading(net, budget) else None
    if program is not None and affordable(program, budget):
        return solve(program, warm_start=warm_start, budget=budget, interior_budget=interior_budget)
    from .segments import segmented_bound  # segments.py builds on this module

    return segmented_bound(net, budget=budget)


def affordable(program: SdpNetwork, budget: float) -> bool:
    """Whether the optimiser's least work on ``program`` stays within AFFORDABLE × ``budget``."""
    return least_cost(program) <= AFFORDABLE * budget


def solve(program: SdpNetwork, *, warm_start: float, budget: float, interior_budget: float = 0.0) -> SdpResult:
    """``sdp_bound`` on one torch thread (the figure must not depend on the machine's threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sdp_bound(program, warm_start=warm_start, budget=int(budget), interior_budget=interior_budget)
    except (ArithmeticError, RuntimeError, np.linalg.LinAlgError) as error:
        # No feasible start, a factorisation torch refuses: no figure, and the caller keeps its own
        # (raised further, it would cost the recursion's figure too).
        return SdpResult(None, False, "LipSDP-Neuron", f"the optimiser stopped: {error}", 0)
    finally:
        torch.set_num_threads(threads)


def _input_width(net: Network) -> int:
    (node,) = [node for node in net.nodes if isinstance(node.op, Input)]
    return math.prod(node.shape)


def ancestors_of(net: Network, output: int) -> set[int]:
    """``output`` and every node it reads, directly or not."""
    seen, stack = set(), [output]
    while stack:
        value = stack.pop()
        if value not in seen:
            seen.add(value)
            stack.extend(net[value].inputs)
    return seen


def _basis(source: int, kept: Tensor, shape: tuple[int, ...]) -> _Affine:
    """The value whose kept entries are the source's variables, in order (the others constant)."""
    size = math.prod(shape)
    rows = torch.zeros(int(kept.sum()), size, dtype=torch.float64)
    rows[torch.arange(rows.shape[0]), torch.flatten(torch.nonzero(kept))] = 1.0
    rows = rows.reshape(rows.shape[0], *shape)
    return _Affine({source: (rows, rows)}, 0)


def _linear(op: Linear, xs: list[_Affine], shapes: list[tuple[int, ...]]) -> _Affine:
    """The map applied to affine values, source by source (it is linear): coefficients by its own
    ``forward``, their bound by its absolute map's, and ``terms()`` more rounded operations.

    For an entry computed as a sum of k rounded products of inputs each within γ_r·(bound) of their
    exact value, the result is within γ_k·|A|·x̂ + |A|·γ_r·bound ≤ γ_{k+r}·|A|·bound of the exact one."""
    absolute = op.absolute()
    sources = sorted({s for x in xs for s in x.blocks})
    blocks = {}
    for source in sources:
        width = next(x.blocks[source][0].shape[0] for x in xs if source in x.blocks)
        coefficients, magnitudes = [], []
        for x, shape in zip(xs, shapes):
            if source in x.blocks:
                c, m = x.blocks[source]
            else:  # this input does not read the source: exact zeros
                c = m = torch.zeros(width, *shape, dtype=torch.float64)
            coefficients.append(c)
            magnitudes.append(m)
        blocks[source] = (op.forward(*coefficients), absolute.forward(*magnitudes))
    return _Affine(blocks, max(x.rounding for x in xs) + op.terms())


def _moving(affine: _Affine, size: int) -> Tensor:
    """Entries that depend on some source (the others are constants: their bound is exactly zero,
    and so is the exact map's, which lies within a multiple of it)."""
    moving = torch.zeros(size, dtype=torch.bool)
    for _, magnitude in affine.blocks.values():
        moving |= (magnitude.reshape(magnitude.shape[0], -1) != 0).any(dim=0)
    return moving


def _connections(affine: _Affine, groups: list[NeuronGroup], rows: Tensor) -> tuple[Connection, ...]:
    """The sources the ``rows`` entries of an affine value read, as (rows × source width) matrices."""
    connections = []
    for source, (coefficients, magnitude) in sorted(affine.blocks.items()):
        flat = coefficients.reshape(coefficients.shape[0], -1)[:, rows]
        bound = magnitude.reshape(magnitude.shape[0], -1)[:, rows]
        if not bool(torch.any(bound != 0)):
            continue
        connections.append(
            Connection(
                source,
                flat.T.contiguous().numpy(),
                rounding=affine.rounding,
                magnitude=bound.T.contiguous().numpy() if affine.rounding else None,
            )
        )
    return tuple(connections)
