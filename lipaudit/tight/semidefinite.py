"""The certified semidefinite bound (lipaudit.sdp) on the networks it reads exactly: plain chains.

A chain input → Dense → activation → … → Dense → output (reshapes allowed, every value used once)
is LipSDP-Neuron's program as it stands: each connection is one of the network's own matrices, taken
without any arithmetic, so the certificate covers the network the recursion describes.  Anything
else (a skip connection, two matrices in a row whose product would round, a convolution, a node
known only by its constant) gets no program here: the recursion's figure stands.
"""

from __future__ import annotations

import math

import torch

from ..linear_maps import Dense, Reshape
from ..sdp import SdpNetwork, SdpResult, from_mlp, sdp_bound
from .network import Activation, Input, Network

__all__ = ["chain_program", "semidefinite_bound"]


def chain_program(net: Network) -> SdpNetwork | None:
    """The program of a plain chain network with one output, or None for any other network."""
    if len(net.outputs) != 1 or sum(isinstance(node.op, Input) for node in net.nodes) != 1:
        return None
    consumers = net.consumers()
    chain = [net[net.outputs[0]]]
    while not isinstance(chain[-1].op, Input):
        if len(chain[-1].inputs) != 1:
            return None
        chain.append(net[chain[-1].inputs[0]])
    chain.reverse()
    if any(len(consumers[node.id]) != 1 for node in chain[:-1]):
        return None
    weights, slopes, pending = [], [], None
    for node in chain[1:]:
        op = node.op
        if isinstance(op, Reshape):
            continue  # the identity on the flattened vector
        if isinstance(op, Dense):
            if pending is not None or math.prod(net.shape(node.inputs[0])) != op.matrix.shape[0]:
                return None
            pending = op.matrix.T.detach().cpu().numpy()
        elif isinstance(op, Activation) and pending is not None:
            weights.append(pending)
            slopes.append(op.slopes)
            pending = None
        else:
            return None
    if pending is None or not slopes:
        return None
    weights.append(pending)
    return from_mlp(weights, slopes)


def semidefinite_bound(net: Network, *, warm_start: float, budget: float) -> SdpResult | None:
    """The certified SDP result for ``net`` within ``budget`` operations, or None where it has no program.

    One torch thread: the figure must not depend on the machine's thread count, and the program's
    small eigenproblems run faster on one."""
    program = chain_program(net)
    if program is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sdp_bound(program, warm_start=warm_start, budget=int(budget))
    finally:
        torch.set_num_threads(threads)
