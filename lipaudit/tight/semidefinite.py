"""The certified semidefinite bound (lipaudit.sdp) on the networks it reads: linear maps and
elementwise activations, skip connections included.

Every activation is a neuron group; its pre-activation, and the output, are linear in the input and
the earlier groups' outputs.  Those linear maps are materialised by running the network's own linear
nodes on the basis vectors of z = [x; v_0; …] in float64, with the rounding of every product and sum
carried beside them (a count of rounded operations and the same expression in absolute values), so
the certificate covers the exact maps, not only the rounded matrices (docs/design.md, "Semidefinite
bound").  A network with any other node (a convolution, a pooling, a node known only by its
constant) gets no program here: the recursion's figure stands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..linear_maps import Dense, Reshape, Scale, Sum
from ..sdp import INPUT, Connection, NeuronGroup, SdpNetwork, SdpResult, sdp_bound
from .network import Activation, Input, Network, NetworkNode

__all__ = ["program_of", "semidefinite_bound"]

# Above this many variables (input entries plus neurons) the basis would not fit comfortably, and
# lipaudit.sdp would split the program into windows anyway.
MAX_VARIABLES = 4096


@dataclass
class _Affine:
    """A value as a linear function of z: coefficients (variables, *shape), their bound in absolute
    values, and the rounded operations behind any entry."""

    value: Tensor
    magnitude: Tensor
    rounding: int


def program_of(net: Network) -> SdpNetwork | None:
    """The LipSDP-Neuron program of ``net`` (one input, one output), or None where it has none."""
    if len(net.outputs) != 1 or sum(isinstance(node.op, Input) for node in net.nodes) != 1:
        return None
    needed = _ancestors(net, net.outputs[0])
    sizes = [math.prod(node.shape) for node in net.nodes if node.id in needed and isinstance(node.op, Activation)]
    inputs = [node for node in net.nodes if isinstance(node.op, Input)]
    variables = math.prod(inputs[0].shape) + sum(sizes)
    if not sizes or variables > MAX_VARIABLES:
        return None
    values: dict[int, _Affine] = {}
    groups: list[NeuronGroup] = []
    starts = {INPUT: 0}
    for node in net.nodes:
        if node.id not in needed:
            continue
        if isinstance(node.op, Input):
            values[node.id] = _basis(0, node.shape, variables)
        elif isinstance(node.op, Activation):
            activation = node.op
            pre = values[node.inputs[0]]
            start = math.prod(inputs[0].shape) + sum(group.size for group in groups)
            size = math.prod(node.shape)
            alpha = np.full(size, activation.slopes[0])
            beta = np.full(size, activation.slopes[1])
            reads = _connections(pre, starts, groups, inputs[0])
            if not reads:
                return None
            groups.append(NeuronGroup(alpha, beta, reads, name=node.name))
            starts[len(groups) - 1] = start
            values[node.id] = _basis(start, node.shape, variables)
        else:
            found = _linear(node, [values[i] for i in node.inputs])
            if found is None:
                return None
            values[node.id] = found
    output = _connections(values[net.outputs[0]], starts, groups, inputs[0])
    try:
        return SdpNetwork(math.prod(inputs[0].shape), tuple(groups), output)
    except ValueError:  # a group or the output reads nothing that moves: nothing to gain here
        return None


def semidefinite_bound(net: Network, *, warm_start: float, budget: float) -> SdpResult | None:
    """The certified SDP result for ``net`` within ``budget`` operations, or None where it has no program.

    One torch thread: the figure must not depend on the machine's thread count, and the program's
    small eigenproblems run faster on one."""
    program = program_of(net)
    if program is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sdp_bound(program, warm_start=warm_start, budget=int(budget))
    finally:
        torch.set_num_threads(threads)


def _ancestors(net: Network, output: int) -> set[int]:
    seen, stack = set(), [output]
    while stack:
        value = stack.pop()
        if value not in seen:
            seen.add(value)
            stack.extend(net[value].inputs)
    return seen


def _basis(start: int, shape: tuple[int, ...], variables: int) -> _Affine:
    size = math.prod(shape)
    value = torch.zeros(variables, size, dtype=torch.float64)
    value[start : start + size] = torch.eye(size, dtype=torch.float64)
    value = value.reshape(variables, *shape)
    return _Affine(value, value.clone(), 0)


def _linear(node: NetworkNode, xs: list[_Affine]) -> _Affine | None:
    """The node applied to affine values, or None for a node the program does not read."""
    op = node.op
    if isinstance(op, Reshape):
        (x,) = xs
        return _Affine(op.forward(x.value), op.forward(x.magnitude), x.rounding)
    if isinstance(op, Dense):
        (x,) = xs
        matrix = op.matrix.to(torch.float64)
        return _Affine(x.value @ matrix, x.magnitude @ matrix.abs(), x.rounding + int(matrix.shape[0]))
    if isinstance(op, Scale):
        (x,) = xs
        factor = op.factor.to(torch.float64)
        return _Affine(x.value * factor, x.magnitude * factor.abs(), x.rounding + 1)
    if isinstance(op, Sum):
        value = sum(c * x.value for c, x in zip(op.coefficients, xs))
        magnitude = sum(abs(c) * x.magnitude for c, x in zip(op.coefficients, xs))
        assert isinstance(value, Tensor) and isinstance(magnitude, Tensor)
        return _Affine(value, magnitude, max(x.rounding for x in xs) + 2 * len(xs))
    return None


def _connections(
    affine: _Affine, starts: dict[int, int], groups: list[NeuronGroup], network_input: NetworkNode
) -> tuple[Connection, ...]:
    """The sources an affine value reads, as (rows × source width) matrices."""
    flat = affine.value.reshape(affine.value.shape[0], -1)
    bound = affine.magnitude.reshape(affine.magnitude.shape[0], -1)
    widths = {INPUT: math.prod(network_input.shape)} | {g: group.size for g, group in enumerate(groups)}
    connections = []
    for source, width in widths.items():
        rows = slice(starts[source], starts[source] + width)
        if not torch.any(bound[rows] != 0):
            continue
        connections.append(
            Connection(
                source,
                flat[rows].T.contiguous().numpy(),
                rounding=affine.rounding,
                magnitude=bound[rows].T.contiguous().numpy() if affine.rounding else None,
            )
        )
    return tuple(connections)
