"""Windows of consecutive groups, for networks too large for one semidefinite program.

A cut after group k is possible when everything after it (later groups and the output) reads the
part up to k through one group j ≤ k only: the network is then f₂ ∘ f₁ with f₁: x ↦ v_j and
f₂: v_j ↦ y, and Lip ≤ Lip(f₁)·Lip(f₂).  Plain MLPs can be cut after every layer; a residual
network in eliminated form (network.from_residual_mlp) cannot be cut at all.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .network import INPUT, Connection, NeuronGroup, SdpNetwork


def cut_sources(network: SdpNetwork) -> dict[int, int]:
    """{k: j} for every group k after which a cut is possible, j the one group read across it."""
    groups = network.groups
    cuts = {}
    for k in range(len(groups) - 1):
        sources = {c.source for g in groups[k + 1 :] for c in g.inputs if c.source <= k}
        sources |= {c.source for c in network.output if c.source <= k}
        if len(sources) == 1:
            (j,) = sources
            if j != INPUT:
                cuts[k] = j
    return cuts


def split(network: SdpNetwork, max_neurons: int) -> list[SdpNetwork] | None:
    """Windows of at most ``max_neurons`` neurons whose composition is the network, or None."""
    if network.neurons <= max_neurons:
        return [network]
    cuts = cut_sources(network)
    windows: list[SdpNetwork] = []
    start, source, size = 0, INPUT, 0
    last_cut = None  # the latest possible cut inside the window being filled
    k = 0
    while k < len(network.groups):
        size += network.groups[k].size
        if size > max_neurons:
            if last_cut is None:
                return None
            windows.append(_window(network, start, last_cut, source, cuts[last_cut]))
            start, source, size, last_cut = last_cut + 1, cuts[last_cut], 0, None
            k = start
            continue
        if k in cuts and cuts[k] >= start:
            last_cut = k
        k += 1
    windows.append(_window(network, start, len(network.groups) - 1, source, None))
    return windows


def _window(network: SdpNetwork, first: int, last: int, source: int, out_source: int | None) -> SdpNetwork:
    """Groups first..last reading ``source`` as their input; output v_{out_source} (or y if None)."""

    def local(s: int) -> int:
        return INPUT if s == source else s - first

    def moved(c: Connection) -> Connection:
        # a connection keeps its rounding allowance: the window's certificate must hold for the exact map
        return replace(c, source=local(c.source))

    inside = network.groups[first : last + 1]
    groups = tuple(NeuronGroup(g.alpha, g.beta, tuple(moved(c) for c in g.inputs), g.name) for g in inside)
    if out_source is None:
        output = tuple(moved(c) for c in network.output)
    else:
        width = network.groups[out_source].size
        output = (Connection(local(out_source), np.eye(width)),)
    return SdpNetwork(network.width(source), groups, output)
