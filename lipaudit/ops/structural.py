"""Ops that move, select, copy or relabel entries without weights; and casts.

Selecting never raises a norm; copying an entry m times raises it by √m. On a domain, all of these
map the box [lo, hi] to [f(lo), f(hi)] (they are monotone): their ranges come from their own run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor

from ..intervals.interval import Interval
from ..intervals.jacobian import Jac, JacobianContext, expand
from ..ir import Node
from ..linear_maps import Barrier, Linear
from ..linear_maps import Concat as ConcatMap
from ..spectral.scaling import sqrt_up
from .context import RuleContext, RuleInputError, broadcast_copies, domain_factor
from .factor import Factor
from .geometry import pad_multiplicity, pad_source_index
from .interval_rules import endpoint_outputs, monotone_interval
from .linear_part import entry_map
from .registry import Op, register
from .runtime import Env, cannot_run, floats, input_or_attr, ints, positive_axis, required_input_or_attr, torch_pads

FAMILY = "structural"


class Permutation(Op):
    family = FAMILY
    identity = True
    exact_in_float = True
    monotone = True
    summary = "1 (a permutation or relabelling of entries)"


class Selection(Op):
    family = FAMILY
    identity = True
    exact_in_float = True
    monotone = True
    summary = "≤ 1 (keeps a subset of entries; each output on its own)"


@register
class Identity(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return args[0]


@register
class Reshape(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        target = required_input_or_attr(node, args, 1, "shape")
        if not node.attr_int("allowzero", 0):
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        return x.reshape(target)


@register
class Flatten(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = positive_axis(node.attr_int("axis"), x.dim())
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


@register
class Transpose(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        perm = node.attr_ints("perm", ()) or tuple(reversed(range(x.dim())))
        return x.permute(*perm)


@register
class Squeeze(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axes = input_or_attr(node, args, 1, "axes")
        if axes is None:
            return x.reshape([d for d in x.shape if d != 1])
        drop = {positive_axis(a, x.dim()) for a in axes}
        return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


@register
class Unsqueeze(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axes = input_or_attr(node, args, 1, "axes") or []
        rank = x.dim() + len(axes)
        inserted = {positive_axis(a, rank) for a in axes}
        dims = iter(x.shape)
        return x.reshape([1 if i in inserted else next(dims) for i in range(rank)])


@register
class Dropout(Permutation):
    """Inference mode copies its input and outputs a constant all-true mask; training mode is random."""

    summary = "1 in inference mode (the mask output is constant); training mode: unsupported (random)"

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        why = self.training(node, ctx)
        if why:
            return [Factor.unknown(why)] * len(node.outputs)
        mask = Factor.constant(0.0, "closed-form", note="the mask is constant in inference mode")
        return [Factor.constant(1.0, "identity"), mask][: max(1, len(node.outputs))]

    def training(self, node: Node, ctx: RuleContext) -> str:
        """Why the node may drop entries at random ("" when it is in inference mode)."""
        if ctx.opset(node) < 7:
            return "" if node.attr_int("is_test", 0) else "Dropout with is_test=0 is random (training mode)"
        if ctx.opset(node) < 12 or len(node.inputs) < 3 or not node.inputs[2]:
            return ""
        training = ctx.const_input(node, 2)
        if training is None:
            return "Dropout's training_mode is computed from the network input"
        ratio = ctx.const_input(node, 1) if len(node.inputs) > 1 and node.inputs[1] else np.float32(0.5)
        if not bool(np.asarray(training).ravel()[0]) or (
            ratio is not None and float(np.asarray(ratio).ravel()[0]) == 0
        ):
            return ""
        return "Dropout in training mode drops entries at random, so it is no fixed function"

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        training = args[2] if len(args) > 2 else None
        if training is not None and bool(training.reshape(-1)[0]):
            raise cannot_run(node, "in training mode (it is random)")
        if env.opset < 12:  # the spec leaves the mask open in inference; onnxruntime writes zeros
            mask = torch.zeros(x.shape, dtype=torch.bool if env.opset >= 10 else x.dtype, device=x.device)
        else:
            mask = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        return [x, mask][: max(1, len(node.outputs))]


@register
class DepthToSpace(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        b, c, h, w = x.shape
        bs = node.attr_int("blocksize")
        if node.attr_str("mode", "DCR") == "CRD":  # DepthToSpace-1 has no mode: DCR
            t = x.reshape(b, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
        else:
            t = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
        return t.reshape(b, c // (bs * bs), h * bs, w * bs)


@register
class SpaceToDepth(Permutation):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        b, c, h, w = x.shape
        bs = node.attr_int("blocksize")
        t = x.reshape(b, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
        return t.reshape(b, c * bs * bs, h // bs, w // bs)


def _slice_indices(size: int, start: int, end: int, step: int) -> range:
    if step == 0:
        raise ValueError("Slice step 0")
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    return range(start, end, step)


@register
class Slice(Selection):
    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        starts = required_input_or_attr(node, args, 1, "starts")
        ends = required_input_or_attr(node, args, 2, "ends")
        axes = input_or_attr(node, args, 3, "axes") or list(range(len(starts)))
        steps = input_or_attr(node, args, 4, "steps") or [1] * len(starts)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = positive_axis(axis, x.dim())
            indices = _slice_indices(x.shape[axis], start, end, step)
            if step > 0:
                x = (
                    x.narrow(axis, indices.start, len(indices))
                    if step == 1
                    else x[(slice(None),) * axis + (slice(indices.start, indices.stop, step),)]
                )
            else:
                x = x.index_select(axis, torch.tensor(list(indices), dtype=torch.long, device=x.device))
        return x


@register
class Split(Selection):
    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        return [Factor.constant(1.0, "identity") for _ in node.outputs]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        axis = positive_axis(node.attr_int("axis"), x.dim())
        sizes = input_or_attr(node, args, 1, "split")
        count = len(node.outputs)
        if not sizes:
            length = x.shape[axis]
            if node.has_attr("num_outputs"):
                count = node.attr_int("num_outputs")
                chunk = -(-length // count)
                sizes = [min(chunk, max(0, length - i * chunk)) for i in range(count)]
            else:
                sizes = [length // count] * count
        return list(torch.split(x, sizes, dim=axis))


@register
class Concat(Op):
    family = FAMILY
    summary = "√(Σ L²) of the variable inputs"
    data_inputs = None
    resizes = True  # each input fills its own part of the output
    exact_in_float = True
    monotone = True

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(1.0, "closed-form", combine="rss")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        present = [a for a in args if a is not None]
        axis = positive_axis(node.attr_int("axis"), present[0].dim())
        if any(a.is_floating_point() for a in present):
            present = [a.to(env.dtype) if not a.is_floating_point() else a for a in present]
        return torch.cat(present, dim=axis)

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        if len(ctx.graph.variable_inputs(node)) != len(node.inputs):
            return Barrier("a Concat with a constant part")
        return ConcatMap(node.attr_int("axis") % len(ctx.output_shape(node)))


class Copying(Op):
    family = FAMILY
    summary = "√(copies of each entry)"
    resizes = True
    exact_in_float = True
    monotone = True

    def copies(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        copies = self.copies(ctx.input_shape(node), ctx.output_shape(node))
        return Factor.constant(sqrt_up(copies), "closed-form", note=f"each entry copied {copies}×")

    def linear_part(self, node: Node, ctx: RuleContext) -> tuple[Linear | None, ...] | Barrier:
        """A Pick: the recursion then sees which entries the copies come from, so copies that
        branches split and a Concat joins again (the legacy export of repeat_interleave) count
        once, not once per branch."""
        return entry_map(self, node, ctx)


@register
class Expand(Copying):
    def copies(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        return broadcast_copies(in_shape, out_shape)

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """Each entry's Jacobian, copied where the entry is (the deviation times √copies)."""
        jac = jctx.jac(node.inputs[0])
        if jac is None or jctx.rules.graph.variable_inputs(node) != [node.inputs[0]]:
            return None
        return [expand(jac, jctx.rules.output_shape(node))]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, shape = args[0], ints(args[1])
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))


@register
class Tile(Copying):
    def copies(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        return int(np.prod(out_shape)) // max(1, int(np.prod(in_shape)))

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return args[0].repeat(*ints(args[1]))

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        jac = jctx.jac(node.inputs[0])
        repeats = jctx.rules.const_input(node, 1)
        if jac is None or repeats is None or jctx.rules.graph.variable_inputs(node) != [node.inputs[0]]:
            return None
        counts = [int(r) for r in np.asarray(repeats).reshape(-1)]
        return [jac.map(lambda t: t.repeat(1, *counts), sqrt_up(math.prod(counts)))]


@register
class Gather(Op):
    family = FAMILY
    summary = "constant indices: √(most repeats of one index); variable indices: unbounded"
    resizes = True  # counts the repeats of each index
    exact_in_float = True
    monotone = True  # in the data, with constant indices

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        data, indices = node.inputs[:2]
        index_values = ctx.graph.const(indices)
        if index_values is None:
            return Factor.unbounded("Gather with variable indices jumps between entries")
        if ctx.graph.is_const(data):
            return Factor.constant(0.0, "closed-form")
        shape = ctx.input_shape(node)
        axis_len = shape[node.attr_int("axis") % len(shape)]
        normalised = np.where(index_values < 0, index_values + axis_len, index_values).ravel()
        repeats = int(np.bincount(normalised.astype(np.int64)).max(initial=1)) if normalised.size else 1
        return Factor.constant(sqrt_up(repeats), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x, indices = args[0], args[1].long()
        axis = positive_axis(node.attr_int("axis"), x.dim())
        indices = torch.where(indices < 0, indices + x.shape[axis], indices)
        picked = x.index_select(axis, indices.reshape(-1))
        return picked.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1 :]))

    def linear_part(self, node: Node, ctx: RuleContext) -> tuple[Linear | None, ...] | Barrier:
        return entry_map(self, node, ctx)


class PickByIndices(Op):
    """Each output is the entry of x that constant indices name: an entry picked m times raises the
    norm by √m, counted by picking from the numbers 0, 1, … laid out as x."""

    family = FAMILY
    summary = "constant indices: √(most picks of one entry); variable indices: unbounded"
    resizes = True
    exact_in_float = True
    monotone = True  # in the data, with constant indices

    def pick(self, x: Tensor, indices: Tensor, node: Node) -> Tensor:
        raise NotImplementedError

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        data, indices = node.inputs[:2]
        index_values = ctx.graph.const(indices)
        if index_values is None:
            return Factor.unbounded(f"{node.op_type} with variable indices jumps between entries")
        if ctx.graph.is_const(data):
            return Factor.constant(0.0, "closed-form")
        shape = ctx.input_shape(node)
        numbers = torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)
        picked = self.pick(numbers, torch.from_numpy(np.array(index_values)), node)
        repeats = int(torch.bincount(picked.reshape(-1)).max()) if picked.numel() else 1
        return Factor.constant(sqrt_up(repeats), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return self.pick(args[0], args[1], node)

    def linear_part(self, node: Node, ctx: RuleContext) -> tuple[Linear | None, ...] | Barrier:
        return entry_map(self, node, ctx)


@register
class GatherElements(PickByIndices):
    """out[…, i, …] = x[…, idx[…, i, …], …] along ``axis``."""

    def pick(self, x: Tensor, indices: Tensor, node: Node) -> Tensor:
        indices = indices.long()
        axis = positive_axis(node.attr_int("axis"), x.dim())
        return torch.gather(x, axis, torch.where(indices < 0, indices + x.shape[axis], indices))


@register
class GatherND(PickByIndices):
    """out[b…, i…] = x[b…, idx[b…, i…, 0], …, idx[b…, i…, k−1], …] (an entry, or a slice of x), b…
    the first ``batch_dims`` axes, which x and the indices share (the legacy exporter's diagonal)."""

    def pick(self, x: Tensor, indices: Tensor, node: Node) -> Tensor:
        batch = node.attr_int("batch_dims", 0)  # GatherND-11 has none: no batch axes
        indices = indices.long()
        k = indices.shape[-1]
        if tuple(indices.shape[:batch]) != tuple(x.shape[:batch]):
            raise RuleInputError(f"GatherND '{node.name}': the indices' batch axes differ from the data's")
        count = math.prod(x.shape[:batch])
        data = x.reshape(count, *x.shape[batch:])
        indices = indices.reshape(count, *indices.shape[batch:])
        indices = torch.where(indices < 0, indices + torch.tensor(data.shape[1 : k + 1], dtype=torch.int64), indices)
        rows = torch.arange(count).reshape(count, *[1] * (indices.dim() - 2))
        picked = data[(rows, *(indices[..., j] for j in range(k)))]
        return picked.reshape(*x.shape[:batch], *picked.shape[1:])


@register
class Pad(Op):
    """Before opset 11 pads and the fill value are attributes; from 11 they are inputs (and axes from 18)."""

    family = FAMILY
    summary = "constant mode: 1; reflect/edge/wrap: √(most copies of one entry)"
    data_inputs = None
    resizes = True
    exact_in_float = True
    monotone = True  # in the data and the fill value; the pads and axes must be constants

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        return monotone_interval(self, node, ctx, positions=(0, 2))

    def amounts(self, node: Node, ctx: RuleContext, rank: int) -> tuple[list[int], list[int]]:
        return list(node.attr_ints("pads")), list(range(rank))

    def fill_input(self, node: Node) -> str:
        return ""

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        mode = node.attr_str("mode")
        value = self.fill_input(node)
        positions = [i for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        if mode == "constant" and (not value or ctx.graph.is_const(value)):
            if positions != [0]:
                raise RuleInputError(f"the pads or axes of Pad '{node.name}' are computed from the network input")
            return Factor.constant(1.0, "closed-form")
        shape = ctx.input_shape(node)
        pads, axes = self.amounts(node, ctx, len(shape))
        half = len(pads) // 2
        if mode == "constant":
            # A variable fill value is copied into every padded position.
            kept, out = list(shape), list(shape)
            for i, axis in enumerate(axes):
                kept[axis] = max(0, shape[axis] + min(pads[i], 0) + min(pads[i + half], 0))
                out[axis] = shape[axis] + pads[i] + pads[i + half]
            filled = int(np.prod(out)) - int(np.prod(kept))
            # By position: a fill value that is the data tensor itself still fills every padded entry.
            weights = [self._constant_mode_weight(node, i, filled) for i in positions]
            return Factor.constant(
                1.0,
                "closed-form",
                input_weights=weights,
                note=f"the variable fill value is copied into {filled} positions",
            )
        copies = 1
        for i, axis in enumerate(axes):
            copies *= pad_multiplicity(shape[axis], pads[i], pads[i + half], mode)
        factor = sqrt_up(copies)
        if any(i not in (0, 2) for i in positions):
            raise RuleInputError(f"the pads or axes of Pad '{node.name}' are computed from the network input")
        # Only constant mode reads the fill value.
        weights = [factor if i == 0 else 0.0 for i in positions]
        return Factor.constant(
            factor, "closed-form", input_weights=weights, note=f"{mode} padding copies an entry up to {copies}×"
        )

    def _constant_mode_weight(self, node: Node, position: int, filled: int) -> float:
        if position == 0:
            return 1.0
        if node.inputs[position] == self.fill_input(node) and position >= 2:
            return sqrt_up(filled)
        raise RuleInputError(f"the pads or axes of Pad '{node.name}' are computed from the network input")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        mode = node.attr_str("mode")
        pads = required_input_or_attr(node, args, 1, "pads")
        axes = input_or_attr(node, args, 3, "axes")
        axes = [positive_axis(a, x.dim()) for a in axes] if axes else list(range(x.dim()))
        half = len(pads) // 2
        begins, ends = [0] * x.dim(), [0] * x.dim()
        for i, axis in enumerate(axes):
            begins[axis], ends[axis] = pads[i], pads[i + half]
        if mode == "constant":
            value_tensor = args[2] if len(args) > 2 else None
            value = (
                float(floats(value_tensor)[0])
                if value_tensor is not None and value_tensor.numel()
                else node.attr_float("value", 0.0)
            )
            return F.pad(x, torch_pads(begins, ends), value=value if x.is_floating_point() else int(value))
        if mode not in ("reflect", "edge", "wrap"):
            raise cannot_run(node, f"in mode '{mode}'")
        for axis in range(x.dim()):
            if begins[axis] or ends[axis]:
                index = pad_source_index(x.shape[axis], begins[axis], ends[axis], mode)
                x = x.index_select(axis, torch.as_tensor(index, dtype=torch.long, device=x.device))
        return x

    def linear_part(self, node: Node, ctx: RuleContext) -> tuple[Linear | None, ...] | Barrier:
        return entry_map(self, node, ctx)


@register
class Pad_11(Pad):
    def amounts(self, node: Node, ctx: RuleContext, rank: int) -> tuple[list[int], list[int]]:
        pads_const = ctx.const_input(node, 1)
        if pads_const is None:
            raise RuleInputError(f"the pads of Pad '{node.name}' are not constant")
        axes_given = len(node.inputs) > 3 and bool(node.inputs[3])
        axes_const = ctx.const_input(node, 3)
        if axes_given and axes_const is None:
            raise RuleInputError(f"the axes of Pad '{node.name}' are not constant")
        axes = [int(a) % rank for a in axes_const.ravel()] if axes_const is not None else list(range(rank))
        return [int(p) for p in pads_const.ravel()], axes

    def fill_input(self, node: Node) -> str:
        return node.inputs[2] if len(node.inputs) > 2 else ""


# TensorProto data types that hold every float32 exactly.
_WIDE_FLOATS = {1: "float", 11: "double"}
# Significand bits of the float types, and magnitude bits of the integer types: an integer type of
# at most a float type's significand bits casts to it exactly.
_SIGNIFICAND_BITS = {10: 11, 16: 8, 1: 24, 11: 53}
_MAGNITUDE_BITS = {9: 1, 2: 8, 3: 7, 4: 16, 5: 15, 12: 32, 6: 31, 13: 64, 7: 63}
_TYPE_NAMES = {10: "float16", 16: "bfloat16", 1: "float32", 11: "float64"}


def _source_type(node: Node, ctx: RuleContext) -> int | None:
    """The ONNX element type of the cast's input: a constant's own, else what shape inference found
    (lipaudit.load.onnx records it), None where neither is known."""
    name = node.inputs[0]
    value = ctx.graph.const(name)
    if value is not None:
        try:
            return int(onnx.helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype))
        except (KeyError, TypeError, ValueError):
            return None
    found = (ctx.graph.metadata.get("elem_types") or {}).get(name)
    return int(found) if found else None


_BOOL = 9
_WIDE_INTEGERS = {6, 7}  # int32, int64
_ONNX_TO_TORCH = {
    2: torch.uint8,
    3: torch.int8,
    4: torch.int64,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    12: torch.int64,
    13: torch.int64,
}
_HALF = {10: torch.float16, 16: torch.bfloat16}


def _cast_to(env: Env, node: Node, x: Tensor, onnx_type: int) -> Tensor:
    if onnx_type in _WIDE_FLOATS:
        return x.to(env.dtype)
    if onnx_type in _HALF:
        return x.to(_HALF[onnx_type]).to(env.dtype)  # round as the runtime does, compute as we do
    if onnx_type in _ONNX_TO_TORCH:
        return x.to(_ONNX_TO_TORCH[onnx_type])
    raise cannot_run(node, f"to ONNX type {onnx_type}")


class Casting(Op):
    family = FAMILY
    elementwise = True
    exact_in_float = True
    summary = "to float32/float64: 1; to integers, bool or 16-bit floats: unbounded (rounding)"

    def target(self, node: Node, ctx: RuleContext) -> int:
        raise NotImplementedError

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        target = self.target(node, ctx)
        rounds = self._rounding(node, ctx, target) if target in _WIDE_FLOATS else "its input"
        if not rounds:
            return Factor.constant(1.0, "identity")
        if ctx.on_domain and self._constant_on_domain(node, ctx, target):
            return domain_factor(0.0, "the cast's result is the same all over the input's range")
        return Factor.unbounded(f"the cast rounds {rounds} (a step function), so no Lipschitz constant exists")

    def _rounding(self, node: Node, ctx: RuleContext, target: int) -> str:
        """What a cast to float32 or float64 rounds ("" when it holds every input value exactly): a
        float type of more significand bits, or integers beyond 2^bits (on a domain, only where the
        input's range reaches them). A source of unknown type is read as the graph's own floats."""
        source = _source_type(node, ctx)
        bits = _SIGNIFICAND_BITS[target]
        widened = ctx.graph.producer(node.inputs[0])
        if widened is not None and widened.op_type in ("Cast", "CastLike") and not widened.domain:
            # A widening cast straight back (float32 → float64 → float32) holds what it widened.
            inner = _source_type(widened, ctx)
            if inner in _SIGNIFICAND_BITS and _SIGNIFICAND_BITS[inner] <= bits:
                return ""
        if source in _SIGNIFICAND_BITS:
            return f"{_TYPE_NAMES[source]} to {_TYPE_NAMES[target]}" if _SIGNIFICAND_BITS[source] > bits else ""
        if source in _MAGNITUDE_BITS and _MAGNITUDE_BITS[source] > bits:
            x = ctx.range_of(node.inputs[0]) if ctx.on_domain else None
            if x is not None and np.all(np.abs(x.lo) <= 2**bits) and np.all(np.abs(x.hi) <= 2**bits):
                return ""
            return f"integers beyond 2^{bits} to {_TYPE_NAMES[target]}"
        return ""

    def _constant_on_domain(self, node: Node, ctx: RuleContext, target: int) -> bool:
        x = ctx.range_of(node.inputs[0])
        if target == _BOOL:
            return bool(np.all((x.lo > 0) | (x.hi < 0)) or np.all((x.lo == 0) & (x.hi == 0)))
        if not self._monotone_cast(target, x):
            return False
        ends = endpoint_outputs(self, node, ctx, positions=(0,))
        return ends is not None and ends[0][0] is not None and np.array_equal(ends[0][0], ends[1][0])

    @staticmethod
    def _monotone_cast(target: int, x: Interval) -> bool:
        """Rounding to a float type, or truncation to a wide integer of values it holds, is monotone
        (narrow integers wrap around)."""
        if target in _WIDE_FLOATS or target in _HALF:
            return True
        return target in _WIDE_INTEGERS and bool(np.all(np.abs(x.lo) < 2**31) and np.all(np.abs(x.hi) < 2**31))

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        if self.target(node, ctx) == _BOOL:
            x = ctx.range_of(node.inputs[0])
            nonzero = (x.lo > 0) | (x.hi < 0)
            zero = (x.lo == 0) & (x.hi == 0)
            return [Interval(np.where(nonzero, 1.0, 0.0), np.where(zero, 0.0, 1.0))]
        if not self._monotone_cast(self.target(node, ctx), ctx.range_of(node.inputs[0])):
            return [None]
        return monotone_interval(self, node, ctx, positions=(0,))


@register
class Cast(Casting):
    def target(self, node: Node, ctx: RuleContext) -> int:
        return node.attr_int("to")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        return _cast_to(env, node, args[0], node.attr_int("to"))


@register
class CastLike(Casting):
    def target(self, node: Node, ctx: RuleContext) -> int:
        like = ctx.const_input(node, 1)
        if like is None:
            raise RuleInputError(f"the target type of CastLike '{node.name}' is not known")
        return {np.dtype(np.float32): 1, np.dtype(np.float64): 11}.get(like.dtype, 0)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        target = args[1]
        if target.is_floating_point():
            return args[0].to(env.dtype)
        return args[0].to(target.dtype)
