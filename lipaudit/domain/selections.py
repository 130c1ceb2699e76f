"""Which values are entries taken from one other value: the query, key and value slices of one
projected tensor.

An op of several inputs bounds the error its inputs' Jacobians carry by the norm of their errors side
by side, ‖[E_1 ⋯ E_k]‖₂ (lipaudit.domain.deviation).  Read from the inputs' own deviations that is
√(Σ d_i²); but where each input takes entries of one value u (a Gather with constant indices, a
Slice, a Split; through any reshape or transpose of u before), E_i is the matrix of u's error
restricted to the columns of the entries it takes, J_i − C_i = (J_u − C_u)[:, idx_i].  When no entry
is taken twice, [E_1 ⋯ E_k] is a subset of E_u's columns, so its norm is at most ‖E_u‖₂ ≤ d_u: one
deviation, where the three slices of a fused QKV projection had counted it √3 times.

The entries an op takes are read from its own Jacobian rule run on three probes (the entry numbers
p = 1…N, p² and p³, exact in float64): a selection maps each to the same entries. Only ops whose
every output is a selection of their input by definition are traced, and the rule's centre for the
real Jacobian must be the parent's centre at those columns (which is what J_i − C_i = (J_u − C_u)
[:, idx] needs of the centres).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..intervals.jacobian import Jac, JacobianContext
from ..ops import resolve
from .propagate import RULE_ERRORS

# Ops that take entries of their one variable input and nothing else.
SELECTING = frozenset({"Gather", "Slice", "Split", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
# Entries of a traced value: p³ must stay exact in float64 (below 2⁵³).
SELECTION_LIMIT = 2**17


@dataclass(frozen=True)
class Selection:
    parent: str  # the value whose entries are taken
    deviation: float  # the parent's deviation ≥ ‖J_u − C_u‖₂
    indices: torch.Tensor  # the parent's flat entry taken by each entry of the value, in order


def note_selections(node, jctx: JacobianContext, found: dict[str, Selection]) -> None:
    """Record in ``found`` every output of ``node`` that takes entries of its one variable input."""
    graph = jctx.rules.graph
    if node.op_type not in SELECTING:
        return
    variables = list(dict.fromkeys(graph.variable_inputs(node)))
    if len(variables) != 1:
        return
    parent = variables[0]
    source = jctx.jacobians.get(parent)
    if source is None or not math.isfinite(source.deviation):
        return
    size = math.prod(source.shape)
    if size == 0 or size > SELECTION_LIMIT:
        return
    op = resolve(node, graph.opset_of(node))
    if op is None:
        return
    entries = torch.arange(1, size + 1, dtype=torch.float64)
    probes = torch.stack([entries, entries**2, entries**3]).reshape((3, *source.shape))
    probe = Jac(probes, torch.zeros_like(probes), 0.0)
    context = JacobianContext(jctx.rules, jctx.points, {parent: probe}, torch.ones(3, dtype=torch.float64))
    try:
        taken = op.jacobian(node, context)
    except RULE_ERRORS:
        return
    if not taken:
        return
    parent_centre = source.centre.reshape(source.directions, -1)
    for index, name in enumerate(node.outputs):
        probed = taken[index] if index < len(taken) else None
        if not name or probed is None or name not in jctx.jacobians:
            continue
        indices = _indices(probed.centre.reshape(3, -1), size)
        mine = jctx.jacobians[name]
        if indices is None or not torch.equal(mine.centre.reshape(mine.directions, -1), parent_centre[:, indices]):
            continue
        upstream = found.get(parent)
        if upstream is not None:  # entries of entries: one step back to the value that holds them all
            found[name] = Selection(upstream.parent, upstream.deviation, upstream.indices[indices])
        else:
            found[name] = Selection(parent, source.deviation, indices)


def _indices(probed: torch.Tensor, size: int) -> torch.Tensor | None:
    """The entries (0-based) the three probes show taken, or None where they are not one selection."""
    first = probed[0]
    if not bool(torch.all(first == torch.round(first))) or not bool(torch.all((first >= 1) & (first <= size))):
        return None
    if not (torch.equal(probed[1], first**2) and torch.equal(probed[2], first**3)):
        return None
    return first.to(torch.int64) - 1


def shared_deviation(names: Sequence[str], found: Mapping[str, Selection]) -> float:
    """d_u where every value of ``names`` takes entries of one value u and no entry is taken twice
    (‖[E_1 ⋯ E_k]‖₂ ≤ ‖E_u‖₂); inf otherwise."""
    taken = [found.get(name) for name in names]
    if not taken or any(s is None for s in taken):
        return math.inf
    parents = {s.parent for s in taken if s is not None}
    if len(parents) != 1:
        return math.inf
    indices = torch.cat([s.indices for s in taken if s is not None])
    if int(torch.unique(indices).numel()) != int(indices.numel()):
        return math.inf
    return max(s.deviation for s in taken if s is not None)
