"""Ops that move, select, copy or reduce entries without weights.

Selecting never raises a norm; copying an entry m times raises it by √m.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Node
from .context import AnalysisContext, RuleInputError, broadcast_copies
from .factor import Factor
from .registry import identity, rule

FAMILY = "structural"

identity("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout",
         "DepthToSpace", "SpaceToDepth",
         summary="1 (a permutation or relabelling of entries)")
identity("Slice", "Split", summary="≤ 1 (keeps a subset of entries; each output on its own)")


@rule("Concat", summary="√(Σ L²) of the variable inputs", family=FAMILY, data_inputs=None)
def concat(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.constant(1.0, "closed-form", combine="rss")


@rule("Expand", "Tile", summary="√(copies of each entry)", family=FAMILY)
def expand(node: Node, ctx: AnalysisContext) -> Factor:
    in_shape, out_shape = ctx.input_shape(node), ctx.output_shape(node)
    if node.op_type == "Expand":
        copies = broadcast_copies(in_shape, out_shape)
    else:
        copies = int(np.prod(out_shape)) // max(1, int(np.prod(in_shape)))
    return Factor.constant(math.sqrt(copies), "closed-form", note=f"each entry copied {copies}×")


@rule("Gather", summary="constant indices: √(most repeats of one index); variable indices: unbounded",
      family=FAMILY)
def gather(node: Node, ctx: AnalysisContext) -> Factor:
    data, indices = node.inputs[:2]
    index_values = ctx.graph.const(indices)
    if index_values is None:
        return Factor.unbounded("Gather with variable indices jumps between entries")
    if ctx.graph.is_const(data):
        return Factor.constant(0.0, "closed-form")
    axis_len = ctx.input_shape(node)[ctx.attr(node, "axis", 0) % len(ctx.input_shape(node))]
    normalised = np.where(index_values < 0, index_values + axis_len, index_values).ravel()
    repeats = int(np.bincount(normalised.astype(np.int64)).max(initial=1)) if normalised.size else 1
    return Factor.constant(math.sqrt(repeats), "closed-form")


def _pad_multiplicity(length: int, begin: int, end: int, mode: str) -> int:
    """The most times one source index appears after padding one axis (crop for negative pads)."""
    source = np.arange(length)
    if begin < 0:
        source = source[-begin:]
    if end < 0:
        source = source[: len(source) + end]
    numpy_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode]
    if mode == "reflect" and len(source) == 1:
        numpy_mode = "edge"
    padded = np.pad(source, (max(begin, 0), max(end, 0)), mode=numpy_mode)
    return int(np.bincount(padded).max(initial=1))


def _pad_amounts(node: Node, ctx: AnalysisContext, rank: int) -> tuple[list[int], list[int]]:
    """(pads, axes) of a Pad node, attribute form before opset 11, constant inputs after."""
    if ctx.opset < 11:
        return [int(p) for p in ctx.attr(node, "pads")], list(range(rank))
    pads_const = ctx.const_input(node, 1)
    if pads_const is None:
        raise RuleInputError(f"the pads of Pad '{node.name}' are not constant")
    axes_given = len(node.inputs) > 3 and bool(node.inputs[3])
    axes_const = ctx.const_input(node, 3)
    if axes_given and axes_const is None:
        raise RuleInputError(f"the axes of Pad '{node.name}' are not constant")
    axes = [int(a) % rank for a in axes_const.ravel()] if axes_const is not None else list(range(rank))
    return [int(p) for p in pads_const.ravel()], axes


@rule("Pad", summary="constant mode: 1; reflect/edge/wrap: √(most copies of one entry)", family=FAMILY)
def pad(node: Node, ctx: AnalysisContext) -> Factor:
    mode = ctx.attr(node, "mode", "constant")
    data = node.inputs[0]
    value = node.inputs[2] if ctx.opset >= 11 and len(node.inputs) > 2 else ""
    if mode == "constant" and (not value or ctx.graph.is_const(value)):
        return Factor.constant(1.0, "closed-form")
    shape = ctx.input_shape(node)
    pads, axes = _pad_amounts(node, ctx, len(shape))
    half = len(pads) // 2
    if mode == "constant":
        # A variable fill value is copied into every padded position.
        kept, out = list(shape), list(shape)
        for i, axis in enumerate(axes):
            kept[axis] = max(0, shape[axis] + min(pads[i], 0) + min(pads[i + half], 0))
            out[axis] = shape[axis] + pads[i] + pads[i + half]
        filled = int(np.prod(out)) - int(np.prod(kept))
        weights = [1.0 if name == data else math.sqrt(filled) for name in ctx.graph.variable_inputs(node)]
        return Factor.constant(1.0, "closed-form", input_weights=weights,
                               note=f"the variable fill value is copied into {filled} positions")
    copies = 1
    for i, axis in enumerate(axes):
        copies *= _pad_multiplicity(shape[axis], pads[i], pads[i + half], mode)
    factor = math.sqrt(copies)
    # Only constant mode reads the fill value.
    weights = [factor if name == data else 0.0 for name in ctx.graph.variable_inputs(node)]
    return Factor.constant(factor, "closed-form", input_weights=weights,
                           note=f"{mode} padding copies an entry up to {copies}×")


def _reduced_count(ctx: AnalysisContext, node: Node) -> int:
    return int(np.prod(ctx.input_shape(node))) // max(1, int(np.prod(ctx.output_shape(node))))


@rule("ReduceMean", summary="1/√k over k entries", family=FAMILY)
def reduce_mean(node: Node, ctx: AnalysisContext) -> Factor:
    k = _reduced_count(ctx, node)
    return Factor.constant(1.0 / math.sqrt(k), "closed-form", note=f"mean of {k} entries")


@rule("ReduceSum", "ReduceL1", summary="√k over k entries", family=FAMILY)
def reduce_sum(node: Node, ctx: AnalysisContext) -> Factor:
    k = _reduced_count(ctx, node)
    return Factor.constant(math.sqrt(k), "closed-form", note=f"sum of {k} entries")


identity("ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp",
         summary="1 (a 1-Lipschitz function of each disjoint group)", family=FAMILY)


@rule("ReduceProd", "ReduceSumSquare", "ReduceLogSum",
      summary="unbounded: products and squares have unbounded slope", family=FAMILY, certified=False)
def reduce_not_lipschitz(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.unbounded(f"{node.op_type} has unbounded slope")


# TensorProto data types that hold every float32 exactly.
_WIDE_FLOATS = {1: "float", 11: "double"}


@rule("Cast", "CastLike", summary="to float32/float64: 1; to integers, bool or 16-bit floats: unbounded (rounding)",
      family=FAMILY)
def cast(node: Node, ctx: AnalysisContext) -> Factor:
    if node.op_type == "Cast":
        target = int(ctx.attr(node, "to", 1))
    else:
        like = ctx.const_input(node, 1)
        if like is None:
            raise RuleInputError(f"the target type of CastLike '{node.name}' is not known")
        target = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}.get(like.dtype, 0)
    if target in _WIDE_FLOATS:
        return Factor.constant(1.0, "identity")
    return Factor.unbounded("the cast rounds its input (a step function), so no Lipschitz constant exists")
