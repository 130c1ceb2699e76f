"""Pooling: max pools by how often windows overlap, average pools as linear operators.

ONNX pooling semantics (explicit pads, ``auto_pad``, ``ceil_mode``, ``count_include_pad``, the
flat ``Indices`` output) are read here once, through ops.geometry, for the rule and the run alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..intervals.jacobian import Jac, JacobianContext, selected
from ..invariants import present
from ..ir import Node
from ..linear_maps import AvgPool, Barrier, Linear, Mean
from ..spectral.conv import avgpool_norm
from ..spectral.scaling import sqrt_up
from .context import RuleContext
from .factor import Factor
from .geometry import WindowGeometry, kernel_shape, pool_output_sizes, window_geometry
from .registry import FUSED_DOMAIN, Op, register
from .runtime import Env, spatial_fn, torch_pads

FAMILY = "pooling"


def _layout(node: Node, spatial: Sequence[int]) -> tuple[WindowGeometry, list[int]]:
    geometry = window_geometry(node, kernel_shape(node), spatial)
    return geometry, pool_output_sizes(node, geometry, spatial)


def _padded_input(x: Tensor, geometry: WindowGeometry, outs: Sequence[int], value: float) -> tuple[Tensor, list[int]]:
    """Pad by the explicit pads, plus what ceil_mode windows overhang, with ``value``."""
    extras = []
    for size, k, s, d, begin, end, out in zip(
        x.shape[2:], geometry.kernel, geometry.strides, geometry.dilations, geometry.begins, geometry.ends, outs
    ):
        needed = (out - 1) * s + (k - 1) * d + 1
        extras.append(max(0, needed - (size + begin + end)))
    padded = F.pad(x, torch_pads(geometry.begins, [e + extra for e, extra in zip(geometry.ends, extras)]), value=value)
    return padded, extras


def _crop_to(t: Tensor, outs: Sequence[int]) -> Tensor:
    return t[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]


def _windows(x: Tensor, geometry: WindowGeometry, outs: Sequence[int], fill: float) -> list[Tensor]:
    """For each offset in the kernel, the entry at that offset of every output's window (N, C, *outs),
    ``fill`` where the window reads padding."""
    padded, _ = _padded_input(x, geometry, outs, fill)
    views = []
    for offset in itertools.product(*(range(k) for k in geometry.kernel)):
        index = [slice(None), slice(None)]
        for o, d, s, out in zip(offset, geometry.dilations, geometry.strides, outs):
            index.append(slice(o * d, o * d + (out - 1) * s + 1, s))
        views.append(padded[tuple(index)])
    return views


@register
class MaxPool(Op):
    family = FAMILY
    resizes = True  # the multiplicity counts every window an entry falls in
    exact_in_float = True
    monotone = True  # the values; the Indices output has no range rule
    summary = "√(most windows one input falls in) = √Π⌈k/(s/gcd(s,d))⌉"

    def interval(self, node: Node, ctx: RuleContext) -> list:
        return super().interval(node, ctx)[:1] + [None] * (len(node.outputs) - 1)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        geometry = window_geometry(node, kernel_shape(node), ctx.input_shape(node)[2:])
        # |max a − max b| ≤ ‖a − b‖ per window; summing over windows counts each input ≤ m times.
        m = geometry.multiplicity()
        return Factor.constant(sqrt_up(m), "closed-form", note=f"each input in at most {m} windows")

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        indices = Factor.unbounded("MaxPool's Indices output is a step function of the input (it jumps)")
        return [self.bound(node, ctx), indices][: max(1, len(node.outputs))]

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """Each output entry takes one entry of its window: the hull of the Jacobians of the entries
        whose range reaches the window's largest lowest value (the pads, −∞, never do)."""
        jac = jctx.jac(node.inputs[0])
        if jac is None:
            return None
        shape = jac.shape
        geometry, outs = _layout(node, shape[2:])
        _, may = self.candidates(node, shape, jctx.box(node.inputs[0]))
        folded = (jac.directions * shape[0],) + shape[1:]
        out_shape = (jac.directions,) + tuple(jctx.rules.output_shape(node, 0))
        centres = _windows(jac.centre.reshape(folded), geometry, outs, 0.0)
        radii = _windows(jac.radius.reshape(folded), geometry, outs, 0.0)
        at_offsets = [Jac(c.reshape(out_shape), r.reshape(out_shape)) for c, r in zip(centres, radii)]
        return [selected(at_offsets, may)] + [None] * (len(node.outputs) - 1)

    def candidates(self, node: Node, shape: Sequence[int], box) -> tuple[list[Tensor], list[Tensor]]:
        """For each kernel offset: the flat index of the input entry each output entry reads there
        (−1 in the pads), and where that entry can be the window's largest on the box (its range
        reaches the window's largest lowest value; the pads, −∞, never do)."""
        shape = tuple(shape)
        geometry, outs = _layout(node, shape[2:])
        box = box.broadcast_to(shape)
        lo = _windows(torch.as_tensor(np.asarray(box.lo, dtype=np.float64)), geometry, outs, -math.inf)
        hi = _windows(torch.as_tensor(np.asarray(box.hi, dtype=np.float64)), geometry, outs, -math.inf)
        threshold = torch.stack(lo).amax(dim=0)
        flat = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
        index = [i.long() for i in _windows(flat, geometry, outs, -1.0)]
        return index, [window_hi >= threshold for window_hi in hi]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        geometry, outs = _layout(node, x.shape[2:])
        kernel, n = geometry.kernel, len(geometry.kernel)
        fill = -math.inf if x.is_floating_point() else int(torch.iinfo(x.dtype).min)
        padded, _ = _padded_input(x, geometry, outs, fill)
        pool = spatial_fn("max_pool", n, node)
        window = dict(stride=geometry.strides, padding=0, dilation=geometry.dilations)
        if not (len(node.outputs) > 1 and node.outputs[1]):
            return _crop_to(pool(padded, kernel, **window), outs)
        values, flat = pool(padded, kernel, return_indices=True, **window)
        values, flat = _crop_to(values, outs), _crop_to(flat, outs)
        # torch indexes the padded plane; ONNX the whole input tensor, row-major (or column-major).
        coords = []
        for size in reversed(padded.shape[2:]):
            coords.append(flat % size)
            flat = flat // size
        coords = [c - b for c, b in zip(reversed(coords), geometry.begins)]
        sizes = list(x.shape[2:])
        order = range(n) if not node.attr_int("storage_order") else reversed(range(n))
        index = torch.zeros_like(coords[0])
        for axis in order:
            index = index * sizes[axis] + coords[axis]
        plane = int(np.prod(sizes))
        batch = torch.arange(x.shape[0], device=x.device).reshape((-1, 1) + (1,) * n)
        channel = torch.arange(x.shape[1], device=x.device).reshape((1, -1) + (1,) * n)
        return values, index + (batch * x.shape[1] + channel) * plane


def _window_sum(t: Tensor, geometry: WindowGeometry, node: Node) -> Tensor:
    """Sum over each window: a depthwise convolution with a kernel of ones."""
    kernel = geometry.kernel
    flat = t.reshape((-1, 1) + tuple(t.shape[2:]))
    ones = torch.ones((1, 1) + tuple(kernel), dtype=t.dtype, device=t.device)
    summed = spatial_fn("conv", len(kernel), node)(flat, ones, stride=geometry.strides, dilation=geometry.dilations)
    return summed.reshape(tuple(t.shape[:2]) + tuple(summed.shape[2:]))


@register
class AveragePool(Op):
    family = FAMILY
    resizes = True
    monotone = True  # non-negative weights
    sums = True
    summary = "a linear operator at the input shape (count_include_pad honoured)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        shape = ctx.input_shape(node)
        geometry = window_geometry(node, kernel_shape(node), shape[2:])
        norm = avgpool_norm(
            geometry.kernel,
            shape[2:],
            strides=geometry.strides,
            pads=geometry.pads,
            dilations=geometry.dilations,
            count_include_pad=bool(node.attr_int("count_include_pad", 0)),
            channels=shape[1],
            ceil_mode=bool(node.attr_int("ceil_mode", 0)),
            method=ctx.method,
            device=ctx.device,
        )
        return Factor.from_norm(norm)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        geometry, outs = _layout(node, x.shape[2:])
        padded, extras = _padded_input(x, geometry, outs, 0.0)
        # The divisor counts the input entries of each window, and the explicit pads with count_include_pad,
        # never what a ceil_mode window overhangs.
        mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        if node.attr_int("count_include_pad", 0):
            mask = F.pad(mask, torch_pads(geometry.begins, geometry.ends), value=1.0)
            mask = F.pad(mask, torch_pads([0] * len(extras), extras), value=0.0)
        else:
            mask = F.pad(mask, torch_pads(geometry.begins, [e + x_ for e, x_ in zip(geometry.ends, extras)]), value=0.0)
        total = _crop_to(_window_sum(padded, geometry, node), outs)
        count = _crop_to(_window_sum(mask, geometry, node), outs)
        return total / count

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        spatial = ctx.input_shape(node)[2:]
        geometry = window_geometry(node, kernel_shape(node), spatial)
        if any(d != 1 for d in geometry.dilations):
            return Barrier("a dilated AveragePool")
        include_pad, ceil_mode = bool(node.attr_int("count_include_pad", 0)), bool(node.attr_int("ceil_mode", 0))
        return AvgPool.of(geometry.kernel, spatial, geometry.strides, geometry.pads, include_pad, ceil_mode)


@register
class GlobalAveragePool(Op):
    family = FAMILY
    monotone = True
    sums = True
    summary = "1/√(H·W) (mean over the spatial positions)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        positions = int(np.prod(ctx.input_shape(node)[2:]))
        return Factor.constant(1.0 / math.sqrt(positions), "closed-form", note=f"mean of {positions} positions")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        shape = ctx.input_shape(node)
        return Mean(tuple(range(2, len(shape))), True, math.prod(shape[2:]))


@register
class GlobalMaxPool(Op):
    family = FAMILY
    exact_in_float = True
    identity = True  # the factor 1; not an entry move: the max picks its entry by value
    monotone = True
    summary = "1 (max over all positions of a channel)"

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | Barrier:
        return Barrier("GlobalMaxPool is not linear")

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        from ..intervals.jacobian_rules import reduced_extreme

        jac = jctx.jac(node.inputs[0])
        if jac is None:
            return None
        axes = tuple(range(2, len(jac.shape)))
        return [reduced_extreme(jac, jctx.box(node.inputs[0]), axes, True, largest=True)]

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# ---------------------------------------------------------------------------------------------
# ℓp pooling: the ℓp norm of each window.
#
# |‖u‖_p − ‖v‖_p| ≤ ‖u − v‖_p ≤ c_p·‖u − v‖₂ on a window of k entries, with c_p = 1 for p ≥ 2 and
# k^(1/p − 1/2) below (Hölder). Summing the squares over the windows counts each input entry once
# per window it falls in, so ‖Δy‖ ≤ c_p·√(most windows one entry falls in)·‖Δx‖; with disjoint
# windows and p ≥ 2 that is 1, reached by moving one window's entries along themselves.


def _lp_exponent(node: Node) -> float:
    """p, an int attribute since opset 2 (a float before); 2 when absent."""
    p = node.attrs.get("p", 2)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise ValueError(f"{node.op_type} '{node.name}': p must be a number, not {p!r}")
    return float(p)


def _holder_constant(p: float, entries: int) -> float:
    """c_p with ‖v‖_p ≤ c_p·‖v‖₂ for v with ``entries`` entries."""
    return float(entries) ** max(0.0, 1.0 / p - 0.5)


def _lp_norm(t: Tensor, p: float, dims: tuple[int, ...] | None = None) -> Tensor:
    """(Σ |t|^p)^(1/p) over ``dims`` (a sum already taken when dims is None)."""
    powered = t if dims is None else t.abs().pow(p).sum(dim=dims, keepdim=True)
    return powered.sqrt() if p == 2 else powered.pow(1.0 / p)


def _column_sums(forward, spatial: Sequence[int]) -> Tensor:
    """Aᵀ·1 of a linear pooling map A of one channel: for each input entry, the sum of the weights of
    the windows that read it. By autograd through the op's own run, so padding, ceil_mode and the
    divisors are exactly the ones the run applies."""
    x = torch.ones((1, 1, *spatial), dtype=torch.float64, requires_grad=True)
    forward(x).sum().backward()
    return present(x.grad, "the gradient of the pooling map")


def _worst_column(forward, spatial: Sequence[int], op: str) -> float:
    worst = float(_column_sums(forward, spatial).max())
    if not math.isfinite(worst):
        raise ValueError(f"{op}: a window reads no input entry (its divisor is 0)")
    return worst


@register
class LpPool(Op):
    family = FAMILY
    resizes = True  # the rule counts every window an entry falls in
    summary = "√(most windows one entry falls in) for p ≥ 2; ×(window size)^(1/p − 1/2) for p < 2"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        p = _lp_exponent(node)
        if p < 1:
            return Factor.unbounded(f"the ℓp 'norm' with p = {p:g} < 1 is not Lipschitz at 0")
        shape = ctx.input_shape(node)
        geometry, outs = _layout(node, shape[2:])
        windows = _worst_column(lambda x: self._window_sums(x, geometry, outs, node), shape[2:], node.op_type)
        holder = _holder_constant(p, math.prod(geometry.kernel))
        note = f"each input in at most {windows:g} windows"
        if holder != 1.0:
            note += f"; ‖·‖_{p:g} ≤ {holder:.6g}·‖·‖₂ on a window"
        return Factor.constant(holder * math.sqrt(windows), "closed-form", note=note)

    @staticmethod
    def _window_sums(t: Tensor, geometry: WindowGeometry, outs: Sequence[int], node: Node) -> Tensor:
        padded, _ = _padded_input(t, geometry, outs, 0.0)
        return _crop_to(_window_sum(padded, geometry, node), outs)

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        p = _lp_exponent(node)
        geometry, outs = _layout(node, x.shape[2:])
        return _lp_norm(self._window_sums(x.abs().pow(p), geometry, outs, node), p)


@register
class GlobalLpPool(Op):
    family = FAMILY
    summary = "1 for p ≥ 2 (the ℓp norm of each channel); (H·W)^(1/p − 1/2) for p < 2"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        p = _lp_exponent(node)
        if p < 1:
            return Factor.unbounded(f"the ℓp 'norm' with p = {p:g} < 1 is not Lipschitz at 0")
        positions = int(np.prod(ctx.input_shape(node)[2:]))
        return Factor.constant(_holder_constant(p, positions), "closed-form")

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        return _lp_norm(x, _lp_exponent(node), tuple(range(2, x.dim())))


@register
class L2Pool(Op):
    """y = sqrt(max(scale·AveragePool(x²) + bias, floor)), AveragePool's attributes as they were.

    Not an ONNX op: passes/fuse_l2_pool.py makes it from the pieces exporters write for ℓ2-norm
    pooling (torch's LPPool with p = 2, deel-torchlip's ScaledL2NormPool2d, a hand-written
    sqrt(avg_pool(x·x) + ε)). ``scale`` ≥ 0 and ``bias`` ≥ 0 are checked by the pass; ``floor``
    (a clamp from below, −inf when there is none) changes no slope.

    Rule: window w averages its entries with weights 1/n_w, so y_w = ‖(√(scale/n_w)·x_w, √bias)‖₂
    (below the floor, a constant), √(scale/n_w)-Lipschitz in x_w; summing the squares,
    ‖Δy‖² ≤ scale·Σ_i Δx_i²·Σ_{w ∋ i} 1/n_w = scale·Σ_i Δx_i²·(Aᵀ1)_i with A the average pool.
    The factor is √(scale·max_i (Aᵀ1)_i): √(scale/k) for disjoint windows of k entries, 1 for
    torch's LPPool (scale k).
    """

    domain = FUSED_DOMAIN
    family = FAMILY
    resizes = True  # the rule sums every window an entry falls in
    summary = "√(scale·max over entries of Σ 1/(window size) over the windows it is in); 1 for LPPool(p=2)"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        scale, bias = node.attr_float("scale"), node.attr_float("bias")
        if not (scale >= 0 and bias >= 0 and math.isfinite(scale) and math.isfinite(bias)):
            return Factor.unbounded(
                f"sqrt({scale:g}·mean(x²) + {bias:g}) is not Lipschitz: it needs a scale ≥ 0 "
                "and an offset ≥ 0 under the root"
            )
        shape = ctx.input_shape(node)
        env = Env(ctx.opset(node), torch.float64, torch.device("cpu"))
        weights = _worst_column(lambda x: AveragePool().run(env, node, [x]), shape[2:], node.op_type)
        return Factor.constant(
            math.sqrt(scale * weights), "closed-form", note=f"sqrt({scale:g}·mean of squares + {bias:g}) per window"
        )

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        x = args[0]
        inner = AveragePool().run(env, node, [x * x]) * node.attr_float("scale") + node.attr_float("bias")
        floor = node.attr_float("floor", -math.inf)
        if floor > -math.inf:
            inner = torch.clamp(inner, min=floor)
        return inner.sqrt()
