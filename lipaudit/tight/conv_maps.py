"""ConvMap: a linear map between two values that is one convolution with a composite kernel.

Kept as a sum of *parts* left·core·right: a core kernel with 1×1 channel
maps on either side, so that a bottleneck's W₃·C₂·W₁ is measured on C₂'s rank (Part.reduced) and a
residual I + a·W₃C₂W₁ on the span of its factors (ConvMap._merged).

Composing convolutions (the derivation ``then_conv`` relies on).  Let E = P_yᵀ T_E P_s and
B = P_uᵀ T_B P_y (B a padded Conv node: T_B reads s̃-style from y extended by zeros, stride σ_B,
offset o_B = −pad_begin).  Then B∘E = P_uᵀ T_B M_y T_E P_s with M_y = P_y P_yᵀ the 0/1 mask of y's
grid.  The mask factorises over spatial axes, M_y = Π_i M_i, and M_i can be dropped when either
  (E) E does not leak along axis i: T_E P_s x vanishes outside y's grid along i for every x,
      i.e. the output rows j = −1 and j = S_y read only outside the anchor's grid:
      −σ_E + t_hi + o_E < 0 and σ_E·S_y + t_lo + o_E ≥ S_s (t_lo, t_hi: the nonzero taps);
  (B) B reads only inside y's grid along i: t_lo + o_B ≥ 0 and σ_B·(S_u − 1) + t_hi + o_B ≤ S_y − 1,
then P_uᵀ T_B M_i = P_uᵀ T_B (B) or M_i T_E P_s = T_E P_s (E).  With every M_i dropped,
B∘E = P_uᵀ (T_B T_E) P_s, and T_B T_E is the convolution with stride σ_E·σ_B, offset
σ_E·o_B + o_E and kernel K[τ] = Σ_{σ_E·t_B + t_E = τ} K_B[t_B]·K_E[t_E]
(z[σ_E(σ_B j + t_B + o_B) + t_E + o_E] = z[σ_Eσ_B j + τ + σ_E o_B + o_E]).  When some M_i cannot be
dropped the composition is refused (None) and the caller splits the product there.
Two ConvMaps from the same anchor to the same value with the same stride add exactly: both are
P_yᵀ T P_s, so the sum is P_yᵀ (T₁ + T₂) P_s, the kernels aligned on their offsets.

Reachable taps.  P_yᵀ T P_s reads tap t (offset o, stride σ) at anchor position σ·j + t + o for j
on y's grid only, so a tap with t + o outside [−σ·(S_y − 1), S_s − 1] (per axis) reads only the
zeros around the anchor's grid, for every j: the kernel cropped to the other taps is the same map
(_crop).  B's kernel is cropped the same way against y's grid (the taps that read y's grid from
u's); this keeps the derivation above, as P_uᵀ T_B M_y = P_uᵀ T_B' M_y (a dropped tap of B meets
only zeros of M_y), and (E) or (B) holding for T_B holds for its subset T_B'.

Boxes.  The taps a part may hold nonzero (Part.box) follow the structure, not the values: a node's
kernel's nonzero taps, composed as σ_E·box_B + box_E, then cropped; a sum or stack spans its
parts'.  Every decision of then_conv reads shapes, B's values and boxes, so a skeleton (Blank
tensors, blank.py) composes, crops and refuses exactly as the map it stands for.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..invariants import present
from ..linear_maps import Linear
from ..linear_maps.base import torch_pad
from ..linear_maps.convolution import CONV, conv_cost
from ..spectral import conv_norm
from ..spectral.conv import predicted_seconds
from ..spectral.cost import CPU_COSTS
from ..spectral.scaling import root_sum_squares
from . import blank as blanks
from .maps import CHAIN_TOL, LinearMap, rounding_allowance
from .network import NetworkNode

# ---------------------------------------------------------------------------------------------
# Convolutions with a composite kernel


@dataclass
class Part:
    """One summand of a ConvMap: the kernel scalar·left·core[:, :, t]·right at every tap t, read
    from the anchor at ``offset``.  ``core`` None stands for I (``channels`` wide, a single tap), so
    that identities and shortcuts cost nothing until something is composed with them.  ``left``
    (C_y × r_o) and ``right`` (r_i × C_s) are 1×1 channel maps kept apart from the core, so that
    the norm can be taken on the core's rank (Part.reduced)."""

    core: Tensor | None
    scalar: float
    channels: int
    left: Tensor | None
    right: Tensor | None
    offset: tuple[int, ...]
    _box: list | None = field(default=None, repr=False)
    _box_known: bool = field(default=False, repr=False)

    @classmethod
    def spanning(cls, core: Tensor, left: Tensor | None, right: Tensor | None, offset, zero: bool = False) -> Part:
        """A part whose core's taps may all be nonzero (its box is the whole core), or, ``zero``,
        the zero map.  The box is then known from the shapes: a skeleton (ConvMap.skeleton) has
        the same as the map it stands for."""
        part = cls(core, 1.0, 0, left, right, tuple(offset))
        part._box = None if zero else [(0, k - 1) for k in core.shape[2:]]
        part._box_known = True
        return part

    def with_factors(self, left: Tensor | None, right: Tensor | None) -> Part:
        part = Part(self.core, self.scalar, self.channels, left, right, self.offset)
        part._box, part._box_known = self._box, self._box_known
        return part

    def core_kernel(self, dims: int, blank: bool = False) -> Tensor:
        """scalar·core, written out."""
        if self.core is not None:
            return self.core * self.scalar if self.scalar != 1.0 else self.core
        eye = blanks.eye(self.channels, blank) * self.scalar
        return eye.reshape(self.channels, self.channels, *(1,) * dims)

    def box(self, dims: int) -> list[tuple[int, int]] | None:
        """The taps of the core that may be nonzero: the whole core for the parts the maps make
        (``spanning``), the nonzero ones for a part given from outside (cached: parts never change)."""
        if self.scalar == 0:
            return None
        if self.core is None:
            return [(0, 0)] * dims
        if not self._box_known:
            self._box, self._box_known = _box(self.core), True
        return self._box

    def left_core(self, dims: int, blank: bool = False) -> Tensor:
        """scalar·left·core (C_y × r_i × k)."""
        if self.left is None:
            return self.core_kernel(dims, blank)
        if self.core is None:
            return (self.left * self.scalar).reshape(*self.left.shape, *(1,) * dims)
        return blanks.left_times(self.left * self.scalar, self.core)

    def full(self, dims: int) -> Tensor:
        kernel = self.left_core(dims)
        if self.right is not None:
            kernel = blanks.times_right(kernel, self.right)
        return kernel

    def times(self, a: float) -> Part:
        part = Part(self.core, self.scalar * a, self.channels, self.left, self.right, self.offset)
        part._box, part._box_known = self._box, self._box_known
        return part

    def reduced_shape(self, dims: int) -> tuple[int, ...]:
        """The shape ``reduced`` will have, without computing it."""
        rows = self.core.shape[0] if self.core is not None else self.channels
        cols = self.core.shape[1] if self.core is not None else self.channels
        if self.left is not None:
            rows = min(self.left.shape)
        if self.right is not None:
            cols = min(self.right.shape)
        taps = tuple(self.core.shape[2:]) if self.core is not None else (1,) * dims
        return (rows, cols, *taps)

    def reduced(self, dims: int) -> Tensor:
        """A kernel with the same operator norm as ``full``: the 1×1 factors replaced by their
        triangular factors.  left = Q_L·R_L (QR, Q_L orthonormal columns) and rightᵀ = Q_R·R_R give
        (Q_L ⊗ I)·T·(Q_Rᵀ ⊗ I) with T the convolution by R_L·core·R_Rᵀ; an isometry on the left
        and a co-isometry on the right leave the norm unchanged."""
        left = self.left
        if left is not None and left.shape[0] > left.shape[1]:
            left = torch.linalg.qr(left, mode="r").R
        right = self.right
        if right is not None and right.shape[1] > right.shape[0]:
            right = torch.linalg.qr(right.T, mode="r").R.T
        return Part(self.core, self.scalar, self.channels, left, right, self.offset).full(dims)


def _box(kernel: Tensor) -> list[tuple[int, int]] | None:
    """Per spatial axis, the first and last tap holding a nonzero; None if the kernel is zero."""
    if kernel.numel() == 0:
        return None
    taps = kernel.ne(0).any(dim=0).any(dim=0)  # one pass over the channels, then the small tap grid
    if not bool(taps.any()):
        return None
    box = []
    for axis in range(taps.ndim):
        other = tuple(a for a in range(taps.ndim) if a != axis)
        hits = torch.nonzero(taps.any(dim=other) if other else taps).flatten()
        box.append((int(hits[0]), int(hits[-1])))
    return box


def _trim(kernel: Tensor, offset: tuple[int, ...]) -> tuple[Tensor, tuple[int, ...]]:
    box = _box(kernel)
    if box is None:
        return kernel[(slice(None), slice(None), *(slice(0, 1),) * (kernel.ndim - 2))] * 0, offset
    index = (slice(None), slice(None), *(slice(lo, hi + 1) for lo, hi in box))
    return kernel[index], tuple(o + lo for o, (lo, _) in zip(offset, box))


def _crop(kernel: Tensor, offset, box, stride, read_spatial, out_spatial) -> tuple[Tensor, tuple[int, ...], bool]:
    """(core, offset, zero): the taps of ``box`` (those that may be nonzero; None: none) of a map
    y[j] = Σ_t K_t·s̃[σ·j + t + offset] (j on a grid of ``out_spatial``, s̃ a grid of
    ``read_spatial`` extended by zeros) that read the grid from some j: per axis
    −σ·(S_out − 1) ≤ t + offset ≤ S_read − 1.  Any other tap is zero or reads only zeros, for
    every j, so the cropped kernel (its offset moved to the first kept tap) is the same map.  With
    none left, the map is zero: a single zero tap, ``zero`` True.  Only shapes and ``box`` decide
    the crop, so a skeleton (meta tensors) is cropped as the map it stands for."""
    kept = []
    if box is not None:
        for (lo, hi), s, o, n_read, n_out in zip(box, stride, offset, read_spatial, out_spatial):
            lo, hi = max(lo, -s * (n_out - 1) - o), min(hi, n_read - 1 - o)
            if lo > hi:
                break
            kept.append((lo, hi))
    if len(kept) < kernel.ndim - 2:
        return kernel[(slice(None), slice(None), *(slice(0, 1),) * (kernel.ndim - 2))] * 0, tuple(offset), True
    index = (slice(None), slice(None), *(slice(lo, hi + 1) for lo, hi in kept))
    return kernel[index], tuple(o + lo for o, (lo, _) in zip(offset, kept)), False


def _compose_kernels(kernel_b: Tensor, kernel_e: Tensor, stride_e: tuple[int, ...], groups: int = 1) -> Tensor:
    """K[τ] = Σ_{σ_E·t_B + t_E = τ} K_B[t_B]·K_E[t_E] (module docstring).

    ``kernel_b`` is grouped (C_out, C_mid/groups, *k), as a Conv node holds it: each tap's matrix
    is block diagonal, and only its blocks are multiplied (the dense product would add only exact
    zeros to the same products)."""
    k_e, k_b = kernel_e.shape[2:], kernel_b.shape[2:]
    c_out, c_mid_g = kernel_b.shape[:2]
    inputs = kernel_e.shape[1]
    span = tuple(s * (kb - 1) + ke for s, kb, ke in zip(stride_e, k_b, k_e))
    if blanks.is_blank(kernel_e):
        return blanks.blank(c_out, inputs, *span)
    kernel = torch.zeros((c_out, inputs, *span), dtype=torch.float64)
    # (groups, C_mid/groups, inputs·taps of E): group g's rows of E, which only group g's outputs read
    rows_e = kernel_e.reshape(groups, c_mid_g, -1)
    taps_b = kernel_b.reshape(groups, c_out // groups, c_mid_g, -1)
    live = taps_b.ne(0).flatten(0, 2).any(dim=0).tolist()  # B is a node's: its values are known
    for flat, tap in enumerate(itertools.product(*(range(k) for k in k_b))):
        if not live[flat]:
            continue
        start = tuple(s * t for s, t in zip(stride_e, tap))
        index = (slice(None), slice(None), *(slice(a, a + k) for a, k in zip(start, k_e)))
        if c_mid_g == 1:  # depthwise: one product per entry, no sum
            product = taps_b[:, :, 0, flat, None] * rows_e[:, 0, None, :]
        else:
            product = torch.bmm(taps_b[..., flat], rows_e)
        kernel[index] += product.reshape(c_out, inputs, *k_e)
    return kernel


# The work budget counts operations (about flops of float64 matrix products); the norms' planner
# (spectral/cost.py) predicts seconds of its CPU table: this many operations per predicted second.
OPERATIONS_PER_SECOND = 1.0 / CPU_COSTS.gemm_s

# Grouped kernels are written out as block-diagonal dense ones up to this many entries.
GROUPED_LIMIT = 2**22

# Merge the summands of a map into one kernel to measure it (exact: the norm of the sum) while that
# costs at most this many times measuring them one by one (the triangle inequality).
MERGE_COST_FACTOR = 2.0
# ... and always below this many operations (milliseconds of work).
MERGE_ALWAYS_COST = 1e7


@dataclass
class ConvMap(LinearMap):
    """y[n, :, j] = Σ_parts Σ_t part.kernel[:, :, t]·s̃[n, :, stride·j + t + part.offset] (anchor s,
    zero-extended): P_yᵀ·(Σ T_part)·P_s, all parts with one stride.  See the module docstring."""

    parts: list[Part]
    stride: tuple[int, ...]
    anchor_shape: tuple[int, ...]  # (N, C_s, *S_s)
    shape: tuple[int, ...]  # (N, C_y, *S_y)
    cheap: float
    ops: int = 0
    summed: bool = False
    cache: dict | None = field(default=None, repr=False)
    _exact: float | None = field(default=None, repr=False)
    _planned: tuple | None = field(default=None, repr=False)
    _work: float | None = field(default=None, repr=False)
    # apply() of the chain builder's probe of anchor_shape (chain.ChainBuilder._image), once known
    probe_image: Tensor | None = field(default=None, repr=False)
    # A skeleton: its kernels and factors are Blanks (blank.py: shapes, no values).  Made the same way
    # as the map it stands for, it has the same parts, shapes, boxes and cost, hence the same
    # refusals; what a dry run needs (chain.py), for almost none of the work.  It is never
    # measured: its norm is ``cheap``.
    skeleton: bool = False

    @classmethod
    def identity(cls, shape: tuple[int, ...], cache: dict | None = None, skeleton: bool = False) -> ConvMap:
        d = len(shape) - 2
        return cls(
            [Part(None, 1.0, shape[1], None, None, (0,) * d)],
            (1,) * d,
            tuple(shape),
            tuple(shape),
            1.0,
            cache=cache,
            skeleton=skeleton,
        )

    @property
    def dims(self) -> int:
        return len(self.stride)

    def _lift(self, t: Tensor) -> Tensor:
        """A tensor made from a node's values, as this map holds it (a Blank in a skeleton)."""
        return blanks.blank_like(t) if self.skeleton else t

    def norm(self) -> float:
        return self.cheap if self.skeleton else super().norm()

    def _with(self, parts, shape=None, stride=None, cheap=None, ops=None, summed=None) -> ConvMap:
        return ConvMap(
            parts,
            self.stride if stride is None else stride,
            self.anchor_shape,
            self.shape if shape is None else tuple(shape),
            self.cheap if cheap is None else cheap,
            self.ops if ops is None else ops,
            self.summed if summed is None else summed,
            self.cache,
            skeleton=self.skeleton,
        )

    # ------------------------------------------------------------------ composition

    def leaks(self, axis: int) -> bool:
        """Whether T·P_s can be nonzero outside y's grid along ``axis`` (module docstring, (E))."""
        s = self.stride[axis]
        size_in, size_out = self.anchor_shape[2 + axis], self.shape[2 + axis]
        for part in self.parts:
            box = part.box(self.dims)
            if box is None:
                continue
            lo, hi = box[axis]
            o = part.offset[axis]
            if not (-s + hi + o < 0 and s * size_out + lo + o >= size_in):
                return True
        return False

    def then_conv(self, weight: Tensor, strides, pads, dilations, groups: int, out_shape, factor_norm: float):
        """B∘self for a padded Conv node B, or None when a mask of self's grid is in the way.

        Only the taps of B that read y's grid from some position of u's grid are kept, and of the
        composite kernel only those that read the anchor's grid from u's grid (_crop): the others
        meet only the zeros around a grid, so the map is the same (module docstring, "Reachable
        taps").  Every decision reads shapes, B's values and the parts' boxes, never self's
        values, so a skeleton composes as the map it stands for."""
        d = self.dims
        strides = tuple(int(s) for s in strides)
        offset_b = tuple(-int(p) for p in pads[:d])
        out = tuple(out_shape[2:])
        # keyed by the weight's id: node weights (and node_conv_kernel's pooling kernels) live as long
        # as the network, hence as long as the cache
        key = (
            "reach",
            id(weight),
            tuple(weight.shape),
            groups,
            tuple(dilations),
            strides,
            offset_b,
            out,
            self.shape[2:],
        )
        cache = self.cache if self.cache is not None else {}
        if key not in cache:
            dilated = _dilated(weight, dilations)
            grouped, moved, zero = _crop(dilated, offset_b, _box(dilated), strides, self.shape[2:], out)
            cache[key] = (grouped, moved, None if zero else [(0, k - 1) for k in grouped.shape[2:]])
        grouped, offset_b, box_b = cache[key]
        if groups > 1 and grouped.shape[0] * grouped.shape[1] * groups * math.prod(grouped.shape[2:]) > GROUPED_LIMIT:
            return None  # a wide grouped (depthwise) kernel written out densely: not worth its memory
        cheap, ops = self.cheap * factor_norm, self.ops + 1
        pointwise = (
            all(k == 1 for k in grouped.shape[2:])
            and all(s == 1 for s in strides)
            and not any(offset_b)
            and out == self.shape[2:]
        )
        if pointwise:  # a 1×1 channel map: it joins the left factors, no mask is involved
            if groups > 1 and grouped.shape[1] == 1 and grouped.shape[0] == groups:
                # depthwise: a diagonal, applied as a scaling of the rows
                scale = self._lift(grouped.reshape(groups))
                parts = [
                    p.with_factors(
                        blanks.diag(scale, self.skeleton) if p.left is None else blanks.scale_rows(scale, p.left),
                        p.right,
                    )
                    for p in self.parts
                ]
                return self._with(parts, out_shape, cheap=cheap, ops=ops)
            w = self._lift(_full_kernel(grouped, groups, (1,) * d).reshape(grouped.shape[0], -1))
            parts = [p.with_factors(w if p.left is None else blanks.matmul(w, p.left), p.right) for p in self.parts]
            return self._with(parts, out_shape, cheap=cheap, ops=ops)
        if box_b is not None:
            for axis in range(d):
                lo, hi = box_b[axis]
                reads_inside = (
                    lo + offset_b[axis] >= 0
                    and strides[axis] * (out[axis] - 1) + hi + offset_b[axis] <= self.shape[2 + axis] - 1
                )
                if not reads_inside and self.leaks(axis):
                    return None
        stride = tuple(a * b for a, b in zip(self.stride, strides))
        anchor = self.anchor_shape[2:]
        parts = []
        for p in self.parts:
            offset = tuple(s * ob + oe for s, ob, oe in zip(self.stride, offset_b, p.offset))
            box_e = p.box(d)
            if p.core is None and all(s == 1 for s in self.stride):
                # B∘(c·left·right) = (c·B)∘(left·right): the 1×1 factors stay on the right, where
                # the norm can drop them (Part.reduced), instead of widening the core.
                right = p.left if p.right is None else (p.right if p.left is None else blanks.matmul(p.left, p.right))
                kernel_b = _full_kernel(grouped, groups, (1,) * d) * p.scalar
                box = None if box_e is None else box_b
                core, moved, zero = _crop(kernel_b, offset, box, stride, anchor, out)
                parts.append(Part.spanning(self._lift(core), None, right, moved, zero))
                continue
            composed = _compose_kernels(grouped, p.left_core(d, self.skeleton), self.stride, groups)
            box = (
                None
                if box_b is None or box_e is None
                else [(s * lb + le, s * hb + he) for s, (lb, hb), (le, he) in zip(self.stride, box_b, box_e)]
            )
            core, moved, zero = _crop(composed, offset, box, stride, anchor, out)
            parts.append(Part.spanning(core, None, p.right, moved, zero))
        return self._with(parts, out_shape, stride=stride, cheap=cheap, ops=ops)

    def scaled_channels(self, factor: Tensor, factor_norm: float) -> ConvMap:
        parts = []
        factor = self._lift(factor)
        for p in self.parts:
            left = blanks.diag(factor, self.skeleton) if p.left is None else blanks.scale_rows(factor, p.left)
            parts.append(p.with_factors(left, p.right))
        return self._with(parts, cheap=self.cheap * factor_norm, ops=self.ops + 1)

    def times(self, a: float) -> ConvMap:
        made = self._with([p.times(a) for p in self.parts], cheap=self.cheap * abs(a))
        if self.probe_image is not None:  # the check's tolerance covers the rounding of the order
            made.probe_image = self.probe_image * a
        return made

    def plus(self, other: ConvMap) -> ConvMap | None:
        """self + other (same anchor, same target), or None when the strides differ."""
        if other.stride != self.stride or other.shape != self.shape or other.anchor_shape != self.anchor_shape:
            return None
        parts = list(self.parts)
        for q in other.parts:
            for i, p in enumerate(parts):
                if p.left is q.left and p.right is q.right:
                    if p.core is None and q.core is None and p.offset == q.offset and p.channels == q.channels:
                        parts[i] = Part(None, p.scalar + q.scalar, p.channels, p.left, p.right, p.offset)
                        break
                    if p.core is not None and q.core is not None:
                        parts[i] = _part_sum(p, q, self.dims)
                        break
            else:
                parts.append(q)
        return self._with(parts, cheap=self.cheap + other.cheap, ops=max(self.ops, other.ops), summed=True)

    def full_kernel(self) -> tuple[Tensor, tuple[int, ...]] | None:
        """(kernel, offset) of the whole map as one convolution, over the taps its parts' boxes
        span; None for the zero map."""
        d = self.dims
        live = [p for p in self.parts if p.box(d) is not None]
        if not live:
            return None
        boxes = [[(o + lo, o + hi) for o, (lo, hi) in zip(p.offset, present(p.box(d), "a live box"))] for p in live]
        pieces = [(p.full(d), p.offset) for p in live]
        kernel, offset = _aligned_sum(pieces, (self.shape[1], self.anchor_shape[1]))
        index = [slice(None), slice(None)]
        for axis in range(d):
            lo, hi = min(b[axis][0] for b in boxes), max(b[axis][1] for b in boxes)
            index.append(slice(lo - offset[axis], hi - offset[axis] + 1))
        return kernel[tuple(index)], tuple(min(b[axis][0] for b in boxes) for axis in range(d))

    @staticmethod
    def stack(parts: list[ConvMap | None], shapes: list[tuple[int, ...]], out_shape, anchor_shape) -> ConvMap | None:
        """Concat along channels of maps from one anchor (None: that input does not depend on it)."""
        given = [p for p in parts if p is not None]
        strides = {p.stride for p in given}
        if len(strides) != 1:
            return None
        stride = strides.pop()
        d = len(stride)
        c_in = anchor_shape[1]
        skeleton = given[0].skeleton
        kernels = [m.full_kernel() if m is not None else None for m in parts]
        live = [k for k in kernels if k is not None]
        cheap = root_sum_squares(p.cheap for p in given)
        if not live:  # every input is the zero map
            core = blanks.zeros((int(out_shape[1]), c_in, *(1,) * d), skeleton)
            part = Part.spanning(core, None, None, (0,) * d, zero=True)
        else:
            offset = tuple(min(o[i] for _, o in live) for i in range(d))
            span = tuple(max(o[i] + k.shape[2 + i] for k, o in live) - offset[i] for i in range(d))
            blocks = []
            for found, shape in zip(kernels, shapes):
                block = blanks.zeros((shape[1], c_in, *span), skeleton)
                if found is not None:
                    kernel, o = found
                    index = (
                        slice(None),
                        slice(None),
                        *(slice(o[i] - offset[i], o[i] - offset[i] + kernel.shape[2 + i]) for i in range(d)),
                    )
                    block[index] = kernel
                blocks.append(block)
            part = Part.spanning(blanks.cat_rows(blocks), None, None, offset)
        return ConvMap(
            [part],
            stride,
            tuple(anchor_shape),
            tuple(out_shape),
            cheap,
            max(p.ops for p in given),
            True,
            given[0].cache,
            skeleton=skeleton,
        )

    # ------------------------------------------------------------------ norm

    def _plan(self) -> tuple[str, float]:
        """('merged' or 'split', cost) from the shapes alone: ‖map‖ is measured on one merged kernel
        (its exact norm) when that costs at most MERGE_COST_FACTOR times measuring the parts one by
        one (the triangle inequality), or less than MERGE_ALWAYS_COST."""
        if self._planned is None:
            d = self.dims
            split_cost = sum(self._cost(p.reduced_shape(d)) for p in self.parts)
            plan = ("split", split_cost)
            if len(self.parts) > 1:
                cost = self._cost(self._merged_shape())
                if cost <= max(MERGE_COST_FACTOR * split_cost, MERGE_ALWAYS_COST):
                    plan = ("merged", cost)
            self._planned = plan
        return self._planned

    def cost(self) -> float:
        """Operations of the norm: the frequency blocks' count (_plan), or more where conv_norm's
        planner predicts more for the method 'auto' takes at the kernels' size (the materialised
        operator of a small grid, whose Gram matrix has a side of channels × positions, can cost a
        hundred times its blocks).  _plan's choice between merged and split stays on the blocks."""
        if self._work is None:
            d = self.dims
            if self._plan()[0] == "merged":
                low = tuple(min(p.offset[i] for p in self.parts) for i in range(d))
                kernels = [(self._merged_shape(), low)]
            else:
                kernels = [(p.reduced_shape(d), p.offset) for p in self.parts]
            predicted = math.fsum(self._predicted(shape, offset) for shape, offset in kernels)
            self._work = max(self._plan()[1], predicted)
        return self._work

    def _predicted(self, kernel_shape: tuple[int, ...], offset: tuple[int, ...]) -> float:
        found = padded_conv(kernel_shape[2:], self.stride, offset, self.anchor_shape[2:], self.shape[2:])
        if found is None:
            return 0.0
        spatial, pads, _ = found
        return _predicted_operations(tuple(kernel_shape), spatial, self.stride, pads)

    def exact_norm(self) -> float:
        if self._exact is None:
            if self._plan()[0] == "merged":
                kernel, offset, floor = self._merged()
                self._exact = max(floor, self._measure(kernel, offset))
            else:
                self._exact = math.fsum(self._measure(p.reduced(self.dims), p.offset) for p in self.parts)
            width = max(self.shape[1], self.anchor_shape[1]) * max(
                (math.prod(p.core.shape[2:]) for p in self.parts if p.core is not None), default=1
            )
            self._exact += rounding_allowance(self.ops + 2, width, self.cheap)
        return self._exact

    def _layout(self) -> tuple[str, int, int]:
        """How _merged reduces the channels: ('shortcut', q, q), or ('plain', rows, cols)."""
        same_grid = self.shape == self.anchor_shape and all(s == 1 for s in self.stride)
        identity = [
            p for p in self.parts if p.core is None and p.left is None and p.right is None and not any(p.offset)
        ]
        others = [p for p in self.parts if not any(p is q for q in identity)]
        channels, inputs = self.shape[1], self.anchor_shape[1]
        other_lefts = [p.left for p in others if p.left is not None]
        other_rights = [p.right for p in others if p.right is not None]
        if same_grid and len(identity) == 1 and others and len(other_lefts) == len(other_rights) == len(others):
            q = sum(left.shape[1] for left in other_lefts) + sum(right.shape[0] for right in other_rights)
            if q < channels:
                return "shortcut", q, q
        lefts = [p.left for p in self.parts if p.left is not None]
        rights = [p.right for p in self.parts if p.right is not None]
        rows = sum(left.shape[1] for left in lefts) if len(lefts) == len(self.parts) else channels
        cols = sum(right.shape[0] for right in rights) if len(rights) == len(self.parts) else inputs
        return "plain", min(rows, channels), min(cols, inputs)

    def _merged_shape(self) -> tuple[int, ...]:
        _, rows, cols = self._layout()
        d = self.dims
        low = [min(p.offset[i] for p in self.parts) for i in range(d)]
        high = [
            max(p.offset[i] + (p.core.shape[2 + i] if p.core is not None else 1) for p in self.parts) for i in range(d)
        ]
        return (rows, cols, *(h - lo for h, lo in zip(high, low)))

    def _merged(self) -> tuple[Tensor, tuple[int, ...], float]:
        """(kernel, offset, floor): ‖map‖ = max(floor, ‖conv by kernel‖), channels reduced.

        'shortcut' layout: one part is c·I (no factors, offset 0, same grid) and every other part
        has both factors.  With Q an orthonormal basis of the span of the other parts' left columns
        and right rows, the map is (Q⊗I)(c·I + B)(Qᵀ⊗I) + c·(Q⊥Q⊥ᵀ⊗I), B = Σ (QᵀL)·T·(RQ): two blocks
        on orthogonal channel subspaces, so its norm is max(‖c·I_q + B‖, |c|) (q < C).
        'plain' layout: bases of the left columns (resp. right rows) of all parts, when every part
        has that factor and the span is smaller than the channels: (Q_o⊗I)ᵀ on the left and
        (Q_i⊗I) on the right drop nothing, by the same isometry argument as Part.reduced.
        """
        d = self.dims
        layout = self._layout()[0]
        if layout == "shortcut":
            identity = next(
                p for p in self.parts if p.core is None and p.left is None and p.right is None and not any(p.offset)
            )
            others = [p for p in self.parts if p is not identity]
            # the 'shortcut' layout: every other part has both factors
            lefts = [present(p.left, "the left factor of a shortcut's branch") for p in others]
            rights = [present(p.right, "the right factor of a shortcut's branch") for p in others]
            q = torch.linalg.qr(torch.cat(lefts + [right.T for right in rights], dim=1)).Q
            c = identity.scalar
            pieces = [
                (c * torch.eye(q.shape[1], dtype=torch.float64).reshape(q.shape[1], q.shape[1], *(1,) * d), (0,) * d)
            ]
            pieces += [
                (Part(p.core, p.scalar, p.channels, q.T @ left, right @ q, p.offset).full(d), p.offset)
                for p, left, right in zip(others, lefts, rights)
            ]
            kernel, offset = _aligned_sum(pieces, (q.shape[1], q.shape[1]))
            return kernel, offset, abs(c)
        channels = self.shape[1]
        q_out = _basis([p.left for p in self.parts], channels)
        q_in = _basis([None if p.right is None else p.right.T for p in self.parts], self.anchor_shape[1])
        pieces = []
        for p in self.parts:
            # a basis exists only when every part has that factor (_basis)
            left = p.left if q_out is None else q_out.T @ present(p.left, "a left factor under a basis")
            right = p.right if q_in is None else present(p.right, "a right factor under a basis") @ q_in
            pieces.append((Part(p.core, p.scalar, p.channels, left, right, p.offset).full(d), p.offset))
        rows = q_out.shape[1] if q_out is not None else channels
        cols = q_in.shape[1] if q_in is not None else self.anchor_shape[1]
        kernel, offset = _aligned_sum(pieces, (rows, cols))
        return kernel, offset, 0.0

    def _cost(self, kernel_shape: tuple[int, ...]) -> float:
        return conv_cost(tuple(kernel_shape), self.stride, self.anchor_shape[2:])

    def _measure(self, kernel: Tensor, offset: tuple[int, ...]) -> float:
        kernel, offset = _trim(kernel, offset)
        found = padded_conv(kernel.shape[2:], self.stride, offset, self.anchor_shape[2:], self.shape[2:])
        scale = float(kernel.abs().max()) if kernel.numel() else 0.0
        if found is None or scale == 0.0:
            return 0.0
        spatial, pads, first = found
        normalised = kernel / scale
        key = (
            tuple(kernel.shape),
            self.stride,
            spatial,
            pads,
            hashlib.sha1(normalised.contiguous().numpy().tobytes()).hexdigest(),
        )
        cache = self.cache if self.cache is not None else {}
        if key not in cache:
            cache[key] = conv_norm(
                normalised,
                spatial,
                strides=self.stride,
                pads=pads,
                dilations=(1,) * self.dims,
                power_iterations=0,
                tol=CHAIN_TOL,
            ).value
        # the QR reductions and the rescaling round at the 1e-15 level; conv_norm's margin is ≥ 1e-6
        return scale * cache[key] * (1.0 + 1e-12)

    def as_dense(self) -> Tensor:
        """The map's matrix as columns (n_anchor, *shape), by running its convolution — for tests."""
        n = math.prod(self.anchor_shape)
        whole = self.full_kernel()
        if whole is None:
            return torch.zeros((n, *self.shape), dtype=torch.float64)
        kernel, offset = whole
        found = padded_conv(kernel.shape[2:], self.stride, offset, self.anchor_shape[2:], self.shape[2:])
        if found is None:
            return torch.zeros((n, *self.shape), dtype=torch.float64)
        spatial, pads, first = found
        d = self.dims
        basis = torch.eye(n, dtype=torch.float64).reshape(n * self.anchor_shape[0], *self.anchor_shape[1:])
        basis = basis[(slice(None), slice(None), *(slice(f, f + s) for f, s in zip(first, spatial)))]
        padded = torch.nn.functional.pad(basis, torch_pad(pads[:d], pads[d:]))
        out = CONV[d](padded, kernel, stride=self.stride)
        return out.reshape(n, *self.shape)

    def apply(self, x: Tensor) -> Tensor:
        """The map on a batch of anchor values (B, *anchor_shape), part by part: the 1×1 factors as
        channel products, each core as its own convolution (no kernel is written out whole)."""
        batch, d = x.shape[0], self.dims
        flat = x.reshape(batch * self.anchor_shape[0], *self.anchor_shape[1:]).to(torch.float64)
        total = torch.zeros((batch * self.shape[0], *self.shape[1:]), dtype=torch.float64)
        for p in self.parts:
            core = p.core_kernel(d)
            found = padded_conv(core.shape[2:], self.stride, p.offset, self.anchor_shape[2:], self.shape[2:])
            if found is None or p.scalar == 0:
                continue
            spatial, pads, first = found
            z = flat if p.right is None else torch.einsum("oc,bc...->bo...", p.right, flat)
            z = z[(slice(None), slice(None), *(slice(f, f + s) for f, s in zip(first, spatial)))]
            z = CONV[d](torch.nn.functional.pad(z, torch_pad(pads[:d], pads[d:])), core, stride=self.stride)
            if p.left is not None:
                z = torch.einsum("oc,bc...->bo...", p.left, z)
            total = total + z
        return total.reshape(batch, *self.shape)


def node_cost(node: NetworkNode) -> float:
    """The work of a node's own norm (the product's work), by the same cost model."""
    return node.op.cost() if isinstance(node.op, Linear) else 0.0


@functools.lru_cache(maxsize=4096)
def _predicted_operations(kernel_shape, spatial, strides, pads) -> float:
    """spectral.conv.predicted_seconds in operations (a pure function of the shapes: cached)."""
    return predicted_seconds(kernel_shape, tuple(spatial), tuple(strides), tuple(pads)) * OPERATIONS_PER_SECOND


def _basis(factors: list[Tensor | None], channels: int) -> Tensor | None:
    """Orthonormal basis of the span of the factors' columns, or None (no reduction) when some
    factor is missing (the identity) or the span is not smaller than the channels."""
    given = [f for f in factors if f is not None]
    if len(given) < len(factors):
        return None
    stacked = torch.cat(given, dim=1)
    if stacked.shape[1] >= channels:
        return None
    return torch.linalg.qr(stacked).Q


def padded_conv(kernel_size, stride, offset, anchor_spatial, out_spatial):
    """(input spatial size, ONNX pads, first) of the padded convolution by a kernel of this size
    that equals the map y[j] = Σ_t K_t·s̃[stride·j + t + offset], once the anchor positions before
    ``first`` and past the last one read are dropped (they are never read).  None if it reads none.

    With b = −offset (and first = offset, b = 0 when the offset is positive) the padded input
    index of anchor position q is q − first + b, so the kernel's tap t at output j reads
    s·j + t − b + first = s·j + t + offset.  The end padding makes the output count right."""
    spatial, begins, ends, firsts = [], [], [], []
    for size, k, s, o, out in zip(anchor_spatial, kernel_size, stride, offset, out_spatial):
        begin, first = -o, 0
        if begin < 0:
            first, begin = -begin, 0
        size -= first
        end = (out - 1) * s + k - (size + begin)
        if end < 0:
            size, end = size + end, 0
        if size <= 0:
            return None
        spatial.append(size)
        begins.append(begin)
        ends.append(end)
        firsts.append(first)
    return tuple(spatial), tuple(begins + ends), tuple(firsts)


def _dilated(weight: Tensor, dilations) -> Tensor:
    """A dilated kernel as an undilated one (zeros between the taps), still grouped, float64."""
    weight = weight.to(torch.float64)
    if not any(d > 1 for d in dilations):
        return weight
    span = tuple(d * (kk - 1) + 1 for d, kk in zip(dilations, weight.shape[2:]))
    stuffed = torch.zeros((*weight.shape[:2], *span), dtype=torch.float64)
    stuffed[(slice(None), slice(None), *(slice(None, None, d) for d in dilations))] = weight
    return stuffed


def _full_kernel(weight: Tensor, groups: int, dilations) -> Tensor:
    """A grouped, dilated kernel as an ungrouped, undilated one: block-diagonal over groups,
    zeros between the dilated taps."""
    c_out, c_in_g = weight.shape[:2]
    k = weight.shape[2:]
    if groups > 1:
        full = torch.zeros((c_out, c_in_g * groups, *k), dtype=torch.float64)
        step = c_out // groups
        for g in range(groups):
            full[g * step : (g + 1) * step, g * c_in_g : (g + 1) * c_in_g] = weight[g * step : (g + 1) * step]
        weight = full
    if any(d > 1 for d in dilations):
        span = tuple(d * (kk - 1) + 1 for d, kk in zip(dilations, k))
        stuffed = torch.zeros((*weight.shape[:2], *span), dtype=torch.float64)
        stuffed[(slice(None), slice(None), *(slice(None, None, d) for d in dilations))] = weight
        weight = stuffed
    return weight.to(torch.float64)


def _part_sum(p: Part, q: Part, dims: int) -> Part:
    """p + q for two parts with cores and the same factors: one core over the taps both span."""
    live = [x for x in (p, q) if x.box(dims) is not None]
    if not live:
        return p
    core, offset = _aligned_sum([(x.core_kernel(dims), x.offset) for x in live], present(p.core, "a core").shape[:2])
    return Part.spanning(core, p.left, p.right, offset)


def _aligned_sum(parts: list[tuple[Tensor, tuple[int, ...]]], channels) -> tuple[Tensor, tuple[int, ...]]:
    d = len(parts[0][1])
    offset = tuple(min(o[i] for _, o in parts) for i in range(d))
    span = tuple(max(o[i] + k.shape[2 + i] for k, o in parts) - offset[i] for i in range(d))
    total = blanks.zeros((*channels, *span), blanks.is_blank(*(k for k, _ in parts)))
    for kernel, o in parts:
        index = (
            slice(None),
            slice(None),
            *(slice(o[i] - offset[i], o[i] - offset[i] + kernel.shape[2 + i]) for i in range(d)),
        )
        total[index] += kernel
    return total, offset
