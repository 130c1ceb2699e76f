"""Certified bounds on the residual branches: g in every y = c_x·x + c_g·g(x) (i-ResNet invertibility).

A residual Add is an add node with two inputs, one of which — the fork x — is an ancestor of the
other, g(x), and where everything between them reads only x and itself (the branch is a function
of x alone).  The branch is cut out as a Network of its own with x as its input, and bounded with
the same recursion as the whole network (network_bound), so Lip(g) ≤ bound.  When c_x ≠ 0,
y = c_x·(x + (c_g/c_x)·g(x)) is invertible as soon as |c_g/c_x|·Lip(g) < 1 (Behrmann et al. 2019:
x ↦ x + h(x) with Lip(h) < 1 is a bi-Lipschitz bijection, its inverse the limit of the fixed point
iteration x ← y − h(x)).  A shortcut through a projection (c_x·P·x) is not of this form and is not
reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..linear_maps import Sum
from .network import Network, NetworkNode
from .recursion import DEFAULT_WINDOW, network_bound


@dataclass
class BranchBound:
    """``bound`` ≥ Lip(g); ``ratio`` = |c_g / c_x|·bound: the branch is certified contractive
    (and the residual layer invertible) when ratio < 1."""

    add: str
    fork: str
    branch_output: str
    bound: float
    product: float
    method: str
    shortcut_coefficient: float
    branch_coefficient: float
    nodes: int
    finished: bool = True  # False: the requested time limit stopped its recursion (bound is then the product's)
    work_spent: float = 0.0  # operations of the cost model its recursion measured

    @property
    def ratio(self) -> float:
        if self.shortcut_coefficient == 0:
            return float("inf")
        return abs(self.branch_coefficient / self.shortcut_coefficient) * self.bound

    @property
    def invertible(self) -> bool:
        return self.ratio < 1.0


def residual_adds(network: Network) -> list[tuple[NetworkNode, int, int, float, float, list[int]]]:
    """(add node, fork, branch output, c_x, c_g, branch values in topological order) of every
    residual Add."""
    ancestors: list[set[int]] = []
    for node in network.nodes:
        seen: set[int] = set(node.inputs)
        for i in node.inputs:
            seen |= ancestors[i]
        ancestors.append(seen)
    found = []
    for node in network.nodes:
        if not isinstance(node.op, Sum) or len(node.inputs) != 2:
            continue
        for k in (0, 1):
            fork, out = node.inputs[k], node.inputs[1 - k]
            if fork == out or fork not in ancestors[out]:
                continue
            branch = sorted(v for v in ancestors[out] | {out} if v != fork and fork in ancestors[v])
            members = set(branch) | {fork}
            if all(i in members for v in branch for i in network[v].inputs):
                coefficients = node.op.coefficients
                found.append((node, fork, out, coefficients[k], coefficients[1 - k], branch))
                break
    return found


def branch_network(network: Network, fork: int, branch: list[int]) -> Network:
    """The branch as a Network: input shaped like the fork, the branch's nodes (their norms kept),
    its last value as the output."""
    sub = Network()
    sub.shared = network.shared  # the same ops: composite maps and their norms carry over
    ids = {fork: sub.input(network.shape(fork), name=network[fork].name)}
    for v in branch:
        node = network[v]
        copy = NetworkNode(
            len(sub.nodes),
            node.name,
            tuple(ids[i] for i in node.inputs),
            node.shape,
            node.op,
            node.given_norm,
            node._norm,
        )
        sub.nodes.append(copy)
        ids[v] = copy.id
    sub.output(ids[branch[-1]])
    return sub


def residual_branches(
    network: Network,
    *,
    window: int | None = DEFAULT_WINDOW,
    time_limit: float | None = None,
    work: float | None = None,
    **settings,
) -> list[BranchBound]:
    """A certified bound on every residual branch (module docstring); ``settings`` go to
    network_bound.  ``work``: operations of the cost model for all the branches together, shared
    equally, what one leaves going to those after it (None: each branch its own budget, as
    network_bound's ``budget`` gives it).  ``time_limit``: seconds for all the branches together,
    only on request, each taking what the ones before it left (0: every branch keeps its product)."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    found = residual_adds(network)
    results = []
    for index, (node, fork, out, c_x, c_g, branch) in enumerate(found):
        left = None if deadline is None else max(0.0, deadline - time.perf_counter())
        share = None if work is None else max(0.0, work) / (len(found) - index)
        bound = network_bound(
            branch_network(network, fork, branch), window=window, time_limit=left, work=share, **settings
        )
        if work is not None:
            work -= bound.work_spent
        results.append(
            BranchBound(
                node.name,
                network[fork].name,
                network[out].name,
                bound.bound,
                bound.product,
                bound.method,
                c_x,
                c_g,
                len(branch),
                bound.finished,
                bound.work_spent,
            )
        )
    return results
