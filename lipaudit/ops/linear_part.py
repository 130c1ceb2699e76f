"""Helpers for ``Op.linear_part``: reading a node's constants, and the map of an op that moves entries.

An op that moves entries (Transpose, Reshape, Slice of any steps, Gather with constant indices,
DepthToSpace, Pad with a constant, …) is described by what its own ``run`` does to the numbers
1, 2, …, n at the value's real shape, in float64 (exact for these integers): each output entry
is one of them (a source index) or the offset (a structural zero).  Distinct sources give a
Permutation; the order 1, …, n unchanged a Reshape; sources taken several times a Pick (Expand,
Tile, a wrap/reflect/edge Pad, a Gather with repeats: norm √(most picks)); anything else (a sum)
is no such map.
The recursion still checks the map against ``run`` on random inputs (docs/design.md, "Checks").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..invariants import present
from ..ir import Graph, Node
from ..linear_maps import Barrier, Linear, Permutation, Pick, Reshape
from .runtime import Env, Runs

if TYPE_CHECKING:
    from .context import RuleContext

# Moving entries of a value larger than this is described as a barrier (its index alone would
# take 8 bytes per entry).
ENTRY_MAP_LIMIT = 2**24
# A description may differ from its op's run (both in float64) by rounding only: far below this,
# relative to the output's scale.  A wrong geometry (pads, strides, a transposed matrix, a
# permutation taken for the identity) differs by O(1).
DESCRIPTION_TOLERANCE = 1e-6


def const(ctx: RuleContext, node: Node, index: int) -> np.ndarray | None:
    return ctx.graph.const(node.inputs[index]) if index < len(node.inputs) and node.inputs[index] else None


def variable_at(ctx: RuleContext, node: Node, *positions: int) -> bool:
    """Whether exactly the inputs at ``positions`` are variable."""
    return ctx.graph.variable_inputs(node) == [node.inputs[p] for p in positions]


def run_node(graph: Graph, op: Runs, node: Node, variables: dict[str, Tensor], dtype: torch.dtype) -> list[Tensor]:
    """The node's outputs from ``op.run``, the variables given and the constants the graph's."""
    env = Env(graph.opset_of(node), dtype, torch.device("cpu"))
    args: list[Any] = []
    for name in node.inputs:
        if not name:
            args.append(None)
        elif name in variables:
            args.append(variables[name].to(env.dtype))
        else:
            tensor = torch.as_tensor(np.array(present(graph.const(name), f"the constant '{name}'")))
            args.append(tensor.to(env.dtype) if tensor.is_floating_point() else tensor)
    result = op.run(env, node, args)
    return list(result) if isinstance(result, (list, tuple)) else [result]


def disagreement(
    graph: Graph,
    op: Runs,
    node: Node,
    forwards: Mapping[int, Callable[..., Tensor]],
    variables: Sequence[str],
    xs: dict[str, Tensor],
) -> str:
    """'' when each described output ``forwards[i]`` (reading the ``variables`` in position order,
    values ``xs``, as a batch of one) equals the op's own run(xs) − run(0) entry by entry, in
    float64; else why not."""
    try:
        with torch.no_grad():
            moved = run_node(graph, op, node, xs, torch.float64)
            still = run_node(graph, op, node, {name: torch.zeros_like(x) for name, x in xs.items()}, torch.float64)
            mine = {i: forward(*(xs[name].unsqueeze(0) for name in variables))[0] for i, forward in forwards.items()}
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        return f"its map could not be checked ({error})"
    for i, found in mine.items():
        if i >= len(moved):
            return f"its op makes no output {i}"
        expected = moved[i].double() - still[i].double()
        if tuple(expected.shape) != tuple(found.shape):
            return f"its map has shape {tuple(found.shape)}, the op's {tuple(expected.shape)}"
        scale = _largest(expected) + _largest(still[i].double()) + 1e-30
        if _largest(expected - found) > DESCRIPTION_TOLERANCE * scale:
            return "its map differs from the op's run"
    return ""


def _largest(t: Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def entry_map(op: Runs, node: Node, ctx: RuleContext, position: int = 0) -> tuple[Linear | None, ...] | Barrier:
    """Each output as a Permutation, Reshape or Pick of the node's one variable input, the one at
    ``position`` (module docstring)."""
    if not variable_at(ctx, node, position):
        return Barrier("it moves entries of a variable and something else computed from the input")
    shape = ctx.input_shape(node, position)
    n = math.prod(shape)
    if n > ENTRY_MAP_LIMIT:
        return Barrier(f"it moves the entries of a value of {n} entries (more than {ENTRY_MAP_LIMIT})")
    numbers = torch.arange(1, n + 1, dtype=torch.float64).reshape(shape)
    with torch.no_grad():
        source = node.inputs[position]
        moved = run_node(ctx.graph, op, node, {source: numbers}, torch.float64)
        # An op that picks entries by value (a max, a sort) sends 1, …, n somewhere too: the
        # reversed numbers must land where the same move sends them.
        reversed_moved = run_node(ctx.graph, op, node, {source: numbers.flip(tuple(range(len(shape))))}, torch.float64)
        still = run_node(ctx.graph, op, node, {source: torch.zeros(shape, dtype=torch.float64)}, torch.float64)
    maps: list[Linear | None] = []
    for out, out_reversed, offset in zip(moved, reversed_moved, still):
        found = _as_gather(out, offset, n) if isinstance(out, Tensor) and out.is_floating_point() else None
        if found is not None:
            flipped = numbers.flip(tuple(range(len(shape)))).unsqueeze(0)
            if not bool(torch.equal(found.forward(flipped)[0] + offset, out_reversed)):
                found = None
        maps.append(found)
    return tuple(maps)


def _as_gather(out: Tensor, offset: Tensor, n: int) -> Linear | None:
    if out.shape != offset.shape:
        return None
    found = (out - offset).reshape(-1)
    index = torch.round(found)
    if not bool(torch.equal(index, found)) or (index.numel() and (float(index.min()) < 0 or float(index.max()) > n)):
        return None
    try:
        permutation = Permutation.of(index.to(torch.int64) - 1, tuple(out.shape), n)
    except ValueError:  # an entry taken twice (or an index out of range, which Pick refuses too)
        try:
            return Pick.of(index.to(torch.int64) - 1, tuple(out.shape), n)
        except ValueError:
            return None
    return Reshape(tuple(out.shape)) if permutation.is_identity else permutation
