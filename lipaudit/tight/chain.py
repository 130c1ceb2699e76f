"""Certified bounds on the linear map A_{u←s} of a window, from one source s to its target u.

In the linearised window (every expanded activation replaced by a·Id, the cuts and the other
sources held fixed) u is a linear function of s; we build that function node by node, forward
from s, as a list of *terms* Σ_k c_k·E_k∘R_k: E_k an exact map (maps.py) from an *anchor* value
r_k to the current value, and c_k a certified bound on ‖R_k‖, the map from s to r_k.  Then
‖A_{u←s}‖ ≤ Σ_k c_k·‖E_k‖ (triangle inequality and submultiplicativity).

At the source: one term, the identity from s, c = 1.  Through a node:
  * unary linear node N: E_k ← N∘E_k when the form allows it (always for dense matrices within the
    memory limit; for a composite convolution when no grid mask is in the way, maps.py);
  * otherwise the input value x is *collapsed*: it becomes an anchor with c_x = Σ_k c_k·‖E_k‖ and
    one term, N∘(identity of x); if even that has no exact form, the output y is collapsed:
    c_y = ‖N‖·c_x, the product rule at N;
  * Add: the inputs' terms, each times its coefficient; terms with the same anchor are summed into
    one exact map when the forms allow (the residual block's I + a·W₂W₁ is made here);
  * Concat: per anchor the parts are stacked (zero where an input does not depend on the anchor);
    failing that, c_y = √(Σ_i c_i²) with c_i the inputs' bounds (the product rule for Concat);
  * an expanded activation: its linear part a·Id multiplies every term.
Each step only replaces an exact map by a certified upper bound of its norm, so the end result is
a certified upper bound on ‖A_{u←s}‖, and never above the product of the certified node norms
along the window's paths (``cheap``).
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

from ..invariants import present
from ..linear_maps import Concat, Linear, Permutation, Reshape, Sum
from ..spectral import dense_norm
from ..spectral.scaling import in_safe_range, product_up, root_sum_squares
from .conv_maps import ConvMap
from .maps import DenseMap, LinearMap, ScalarMap, ShapeOnlyDense, rounding_allowance
from .network import Activation, Network, NetworkNode
from .operators import conv_operator, cropped_forward

# Build explicit matrices for anchors of at most this many entries, and while the matrix holds at
# most DENSE_ENTRIES numbers (128 MiB in float64).
DENSE_LIMIT = 2048
DENSE_ENTRIES = 2**24
# Explicit matrices already pushed through a node, kept for the next target whose window starts
# at the same source (each one-step bound propagates from its sources anew): up to this many bytes.
MEMO_BYTES = 2 * 2**30
# A composite convolution must agree with the composition it stands for on a random input (both in
# float64) to this relative accuracy; a wrong composition (a permutation taken for the identity, a
# kernel merged from two different maps) is off by O(1).
COMPOSITION_CHECK_TOLERANCE = 1e-9


# Composite convolutions (with their probe images) kept for the next chain that passes the same
# map through the same node: up to this many bytes.
CONV_MEMO_BYTES = 2**30
# Convolution nodes' explicit matrices (operators.py) kept: up to this many bytes.
OPERATOR_MEMO_BYTES = 2**30


class ChainCache:
    """What every chain builder of one network (and of its residual branches) shares: the
    composite convolutions made so far, keyed by the identity of the map and of the node's op (a
    map pushed through the same op is the same map, so one made for one target serves the next
    target whose window starts at the same source), and the norms of the composite kernels
    measured so far (conv_maps.ConvMap._measure, keyed by the kernel's bytes).  Every entry is a
    pure function of its key, so a figure does not depend on what was cached."""

    def __init__(self) -> None:
        self.norms: dict = {}
        self.identities: dict[tuple[tuple[int, ...], bool], ConvMap] = {}
        # key -> (the maps and ops the key names, kept alive so their ids stay unique; the result)
        self._maps: OrderedDict[tuple, tuple[tuple, ConvMap | None]] = OrderedDict()
        self._bytes = 0
        # convolution nodes' explicit matrices (operators.py), keyed by the op (kept alive) and shapes
        self._operators: dict[tuple, tuple[object, Tensor | None]] = {}
        self._operator_bytes = 0

    def operator(self, node: NetworkNode, in_shape: tuple[int, ...]) -> Tensor | None:
        """operators.conv_operator, kept while they take at most OPERATOR_MEMO_BYTES."""
        key = (id(node.op), tuple(in_shape), tuple(node.shape))
        if key in self._operators:
            return self._operators[key][1]
        made = conv_operator(node, tuple(in_shape))
        size = 0 if made is None else made.numel() * made.element_size()
        if self._operator_bytes + size <= OPERATOR_MEMO_BYTES:
            self._operators[key] = (node.op, made)
            self._operator_bytes += size
        return made

    def identity(self, shape: tuple[int, ...], skeleton: bool = False) -> ConvMap:
        if (shape, skeleton) not in self.identities:
            self.identities[shape, skeleton] = ConvMap.identity(shape, self.norms, skeleton)
        return self.identities[shape, skeleton]

    def remember(self, key: tuple, keep: tuple, compute) -> ConvMap | None:
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key][1]
        made = compute()
        size = _conv_bytes(made)
        if size <= CONV_MEMO_BYTES:
            self._maps[key] = (keep, made)
            self._bytes += size
            while self._bytes > CONV_MEMO_BYTES:
                _, (_, dropped) = self._maps.popitem(last=False)
                self._bytes -= _conv_bytes(dropped)
        return made


def _conv_bytes(m: ConvMap | None) -> int:
    if m is None:
        return 0
    tensors = [t for p in m.parts for t in (p.core, p.left, p.right) if t is not None]
    if m.probe_image is not None:
        tensors.append(m.probe_image)
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Term:
    anchor: int
    weight: float  # certified bound on the norm of the map from the source to the anchor
    map: LinearMap


class ChainBuilder:
    def __init__(self, network: Network, dense_limit: int = DENSE_LIMIT, dense_entries: int = DENSE_ENTRIES):
        self.network = network
        self.dense_limit = dense_limit
        self.dense_entries = dense_entries
        self.collapses = 0
        self.measure = True  # off: collapses take the product figure (a dry run for the work budget)
        self.collapse_cost = math.inf  # under a work budget, collapses measure only what is cheap
        # on: explicit matrices are shape-only (ShapeOnlyDense) and composite convolutions skeletons
        # (conv_maps.ConvMap.skeleton), for terms that will not be measured
        self.shape_only = False
        self.shared: ChainCache = network.shared.setdefault("chain", ChainCache())
        self.norm_cache = self.shared.norms  # composite kernels measured so far (maps.ConvMap._measure)
        # (operation, id of the input columns, ...) -> (the inputs, kept alive so ids stay unique; the result)
        self._memo: OrderedDict[tuple, tuple[tuple[Tensor, ...], Tensor]] = OrderedDict()
        self._memo_bytes = 0
        self._identities: dict[int, DenseMap] = {}
        self._probes: dict[tuple[int, ...], Tensor] = {}  # a random anchor value per anchor shape
        self.refused = 0  # composite convolutions that failed their check (and were not used)
        # set when a collapse would have measured a skeleton (cheap enough, but it has no values):
        # the caller builds that chain again with values (recursion._Sweep._terms)
        self.wanted_values = False
        # A collapse is keyed by the value whose terms it measures (the input of the unary node, or
        # the Concat's output): every collapse of one propagation with that key measures the same
        # terms the same way, so terms that share an anchor share its weight (_merge relies on it).
        # Under a plan, the keys whose collapse measures its terms whatever they cost:
        self.planned_collapses: set[int] = set()
        # Of the last propagation: per key, the maps a measurement of that collapse would measure
        # (identity -> (the map, kept alive so identities stay unique; its cost): a map shared by
        # several collapses is measured once), and per anchor the keys of the collapses its weight
        # goes through (a dry run ranks them by what they feed).
        self.collapse_units: dict[int, dict[int, tuple[LinearMap, float]]] = {}
        self.origins: dict[int, frozenset[int]] = {}

    def _remember(self, key: tuple, inputs: tuple[Tensor, ...], compute) -> Tensor:
        """compute(), or the result of the same operation on the same tensors earlier."""
        found = self._memo.get(key)
        if found is not None:
            self._memo.move_to_end(key)
            return found[1]
        result = compute()
        size = result.numel() * result.element_size()
        if size <= MEMO_BYTES:
            self._memo[key] = (inputs, result)
            self._memo_bytes += size
            while self._memo_bytes > MEMO_BYTES:
                _, (_, dropped) = self._memo.popitem(last=False)
                self._memo_bytes -= dropped.numel() * dropped.element_size()
        return result

    # ------------------------------------------------------------------ forms

    def identity(self, value: int) -> LinearMap:
        shape = self.network.shape(value)
        size = math.prod(shape)
        if size <= self.dense_limit:
            if self.shape_only:
                return ShapeOnlyDense(size, size, 1.0)
            if value not in self._identities:  # one object per value, so the memo recognises it
                self._identities[value] = DenseMap.identity(shape)
            found = self._identities[value]
            return DenseMap(found.columns, 1.0)
        if len(shape) >= 3:
            return self.shared.identity(tuple(shape), self.shape_only)
        return ScalarMap(1.0)

    def then(self, m: LinearMap, node: NetworkNode) -> LinearMap | None:
        """node∘m in an exact form, or None."""
        op = node.linear
        norm = _linear_norm(node, node.norm())
        ops = m.ops + (0 if op is not None and op.isometry else 1)
        if isinstance(m, ScalarMap):
            return ScalarMap(product_up(m.cheap, norm), ops)
        if isinstance(m, ShapeOnlyDense):
            size = math.prod(node.shape)
            if m.rows * size > self.dense_entries:
                return None
            return ShapeOnlyDense(m.rows, size, product_up(m.cheap, norm), ops, m.summed)
        if not _in_range(m.cheap, norm):
            return None
        if isinstance(m, DenseMap):
            if m.columns.shape[0] * math.prod(node.shape) > self.dense_entries:
                return None
            columns = self._remember(
                ("then", id(m.columns), node.id), (m.columns,), lambda: self._push(m.columns, node)
            )
            return DenseMap(columns, product_up(m.cheap, norm), ops, m.summed)
        if isinstance(m, ConvMap) and op is not None:
            return self.shared.remember(
                ("then", id(m), id(op), tuple(node.shape), norm), (m, op), lambda: self._then_conv(m, node, op, norm)
            )
        return None

    def _push(self, columns: Tensor, node: NetworkNode) -> Tensor:
        """node.forward(columns): by the node's explicit matrix where that costs less
        (operators.py); an identity's image is that matrix itself."""
        in_shape = self.network.shape(node.inputs[0])
        operator = self.shared.operator(node, in_shape)
        if operator is None:
            cropped = cropped_forward(node, columns, tuple(in_shape))
            return node.forward(columns) if cropped is None else cropped
        rows = columns.shape[0]
        if any(columns is found.columns for found in self._identities.values()):
            return operator.T.reshape(rows, *node.shape)
        return (columns.reshape(rows, -1) @ operator.T).reshape(rows, *node.shape)

    def _then_conv(self, m: ConvMap, node: NetworkNode, op: Linear, norm: float) -> ConvMap | None:
        """node∘m as one composite convolution, checked against node.forward∘m (docs/design.md,
        "Checks"): a reshape to the same shape is the identity; a permutation only when it is one."""
        same = tuple(node.shape) == m.shape
        if same and (isinstance(op, Reshape) or (isinstance(op, Permutation) and op.is_identity)):
            return m
        conv = op.conv_form(node.shape)
        if conv is not None:
            weight, strides, pads, dilations, groups = conv
            made = m.then_conv(weight, strides, pads, dilations, groups, node.shape, norm)
        else:
            factor = op.channel_factor(node.shape)
            made = None if factor is None else m.scaled_channels(factor, norm)
        if made is None or made.skeleton:  # a skeleton has no values to check (made as the map is)
            return made
        probe = self._probe(m.anchor_shape)
        return self._checked(made, probe, node.forward(self._image(m, probe)))

    def _probe(self, shape: tuple[int, ...]) -> Tensor:
        """The random anchor value of this shape: seeded by the shape alone, so that the images
        kept on the maps (``_image``) stay valid whichever builder made them."""
        if shape not in self._probes:
            seed = zlib.crc32(repr(tuple(shape)).encode())
            generator = torch.Generator().manual_seed(seed)
            self._probes[shape] = torch.randn((1, *shape), generator=generator, dtype=torch.float64)
        return self._probes[shape]

    def _image(self, m: ConvMap, probe: Tensor) -> Tensor:
        """m.apply(probe), kept on the map: the check of the map made from m needs it, and the
        map's own check computed it already."""
        if m.probe_image is None:
            m.probe_image = m.apply(probe)
        return m.probe_image

    def _checked(self, made: ConvMap, probe: Tensor, expected: Tensor) -> ConvMap | None:
        """``made`` when it maps ``probe`` to ``expected`` (the whole output, entry by entry)."""
        found = made.apply(probe)
        if found.shape != expected.shape or _largest(found - expected) > COMPOSITION_CHECK_TOLERANCE * _largest(
            expected
        ):
            self.refused += 1
            return None
        made.probe_image = found
        return made

    def times(self, m: LinearMap, a: float) -> LinearMap:
        if isinstance(m, ScalarMap) or not _in_range(m.cheap, abs(a)):
            return ScalarMap(product_up(m.cheap, abs(a)), m.ops, m.summed)
        if isinstance(m, ShapeOnlyDense):
            return ShapeOnlyDense(m.rows, m.size, product_up(m.cheap, abs(a)), m.ops, m.summed)
        if isinstance(m, DenseMap):
            if a == 1.0:
                return m
            columns = self._remember(("times", id(m.columns), a), (m.columns,), lambda: m.columns * a)
            return DenseMap(columns, product_up(m.cheap, abs(a)), m.ops, m.summed)
        if isinstance(m, ConvMap):
            scaled = self.shared.remember(("times", id(m), a), (m,), lambda: m.times(a))
            return present(scaled, "a scaled convolution")  # m.times never refuses
        raise TypeError(f"{type(m).__name__} cannot be scaled")

    def plus(self, x: LinearMap, y: LinearMap) -> LinearMap | None:
        if isinstance(x, ScalarMap) and isinstance(y, ScalarMap):
            return ScalarMap(x.cheap + y.cheap, max(x.ops, y.ops), True)
        if isinstance(x, ShapeOnlyDense) and isinstance(y, ShapeOnlyDense):
            return ShapeOnlyDense(x.rows, x.size, x.cheap + y.cheap, max(x.ops, y.ops), True)
        if isinstance(x, DenseMap) and isinstance(y, DenseMap):
            columns = self._remember(
                ("plus", id(x.columns), id(y.columns)), (x.columns, y.columns), lambda: x.columns + y.columns
            )
            return DenseMap(columns, x.cheap + y.cheap, max(x.ops, y.ops), True)
        if isinstance(x, ConvMap) and isinstance(y, ConvMap):
            return self.shared.remember(("plus", id(x), id(y)), (x, y), lambda: self._plus_conv(x, y))
        return None

    def _plus_conv(self, x: ConvMap, y: ConvMap) -> ConvMap | None:
        made = x.plus(y)
        if made is None or made.skeleton:
            return made
        probe = self._probe(x.anchor_shape)
        return self._checked(made, probe, self._image(x, probe) + self._image(y, probe))

    # ------------------------------------------------------------------ propagation

    def bound(self, terms: list[Term], key: int | None = None) -> float:
        """Σ c_k·‖E_k‖, at the collapse ``key`` when given (the exact figures only when ``measure``
        is on, and only for maps whose measurement costs at most ``collapse_cost``, or any when
        the plan names the collapse)."""
        if key is not None:
            units = self.collapse_units.setdefault(key, {})
            units.update((id(t.map), (t.map, t.map.cost())) for t in terms if t.map.improvable)
        if not self.measure:
            return math.fsum(product_up(t.weight, t.map.cheap) for t in terms)
        limit = math.inf if key in self.planned_collapses else self.collapse_cost
        skeletons = [t.map for t in terms if isinstance(t.map, ConvMap) and t.map.skeleton]
        if any(m.improvable and m.cost() <= limit for m in skeletons):
            self.wanted_values = True
        return math.fsum(product_up(t.weight, t.map.norm() if t.map.cost() <= limit else t.map.cheap) for t in terms)

    def _anchored(self, anchor: int, key: int, terms: list[Term]) -> None:
        """Record that ``anchor``'s weight comes from the collapse ``key`` of ``terms``."""
        self.origins[anchor] = frozenset({key}).union(*(self.origins.get(t.anchor, frozenset()) for t in terms))

    def propagate(self, source: int, target: int, inside: set[int]) -> list[Term]:
        """The terms of A_{target←source} within the window ``inside`` (region.py)."""
        terms: dict[int, list[Term]] = {source: [Term(source, 1.0, self.identity(source))]}
        self.collapse_units, self.origins = {}, {}
        for value in sorted(v for v in inside if source < v <= target):
            node = self.network[value]
            inputs = [terms.get(i) for i in node.inputs]
            if all(t is None for t in inputs):
                continue
            terms[value] = self.apply(node, inputs)
        return terms.get(target, [])

    def apply(self, node: NetworkNode, inputs: list[list[Term] | None]) -> list[Term]:
        op = node.op
        if isinstance(op, Activation):  # expanded (or linear): its linear part a·Id
            a = op.split[0]
            return [Term(t.anchor, t.weight, self.times(t.map, a)) for t in _unary_terms(node, inputs)]
        if isinstance(op, Sum):
            scaled = [
                Term(t.anchor, t.weight, self.times(t.map, c))
                for c, ts in zip(op.coefficients, inputs)
                if ts is not None
                for t in ts
            ]
            return self._merge(scaled)
        if isinstance(op, Concat):
            return self._concat(node, op, inputs)
        return self._unary(node, _unary_terms(node, inputs))

    def _unary(self, node: NetworkNode, terms: list[Term]) -> list[Term]:
        mapped = [self.then(t.map, node) for t in terms]
        exact = [m for m in mapped if m is not None]
        if len(exact) == len(mapped):
            return [Term(t.anchor, t.weight, m) for t, m in zip(terms, exact)]
        self.collapses += 1
        x = node.inputs[0]
        bound_x = self.bound(terms, x)
        fresh = self.then(self.identity(x), node)
        if fresh is not None:
            self._anchored(x, x, terms)
            return [Term(x, bound_x, fresh)]
        self._anchored(node.id, x, terms)
        return [Term(node.id, product_up(bound_x, _linear_norm(node, node.norm())), self.identity(node.id))]

    def _merge(self, terms: list[Term]) -> list[Term]:
        merged: list[Term] = []
        for term in terms:
            for i, other in enumerate(merged):
                if other.anchor == term.anchor:
                    total = self.plus(other.map, term.map)
                    if total is not None:
                        merged[i] = Term(other.anchor, other.weight, total)
                        break
            else:
                merged.append(term)
        return merged

    def _concat(self, node: NetworkNode, op: Concat, inputs: list[list[Term] | None]) -> list[Term]:
        anchors = sorted({t.anchor for ts in inputs if ts is not None for t in ts})
        shapes = [self.network.shape(i) for i in node.inputs]
        out: list[Term] = []
        for anchor in anchors:
            parts: list[Term | None] = []
            for ts in inputs:
                mine = [t for t in ts if t.anchor == anchor] if ts is not None else []
                if len(mine) > 1:
                    return self._collapse_concat(node, inputs)
                parts.append(mine[0] if mine else None)
            stacked = self._stack(node, op.axis, [p.map if p else None for p in parts], shapes)
            if stacked is None:
                return self._collapse_concat(node, inputs)
            weight = next(p.weight for p in parts if p is not None)
            out.append(Term(anchor, weight, stacked))
        return out

    def _stack(self, node: NetworkNode, axis: int, maps: list[LinearMap | None], shapes) -> LinearMap | None:
        given = [m for m in maps if m is not None]
        kinds = {type(m) for m in given}
        if len(kinds) != 1:
            return None
        kind = kinds.pop()
        ops = max(m.ops for m in given)
        cheap = root_sum_squares(m.cheap for m in given)
        if kind is ScalarMap:
            return ScalarMap(cheap, ops, True)
        if kind is ShapeOnlyDense:
            rows = next(m.rows for m in given if isinstance(m, ShapeOnlyDense))
            size = math.prod(node.shape)
            return None if rows * size > self.dense_entries else ShapeOnlyDense(rows, size, cheap, ops, True)
        if kind is DenseMap:
            columns = [m.columns if isinstance(m, DenseMap) else None for m in maps]
            n = next(c for c in columns if c is not None).shape[0]
            if n * math.prod(node.shape) > self.dense_entries:
                return None
            blocks = [
                c if c is not None else torch.zeros((n, *s), dtype=torch.float64) for c, s in zip(columns, shapes)
            ]
            return DenseMap(torch.cat(blocks, dim=axis + 1), cheap, ops, True)
        if kind is not ConvMap or axis != 1:
            return None
        convs = [m if isinstance(m, ConvMap) else None for m in maps]
        key = (
            "stack",
            tuple(None if m is None else id(m) for m in convs),
            tuple(map(tuple, shapes)),
            tuple(node.shape),
        )
        return self.shared.remember(key, tuple(convs), lambda: self._stack_convs(node, convs, shapes))

    def _stack_convs(self, node: NetworkNode, convs: list[ConvMap | None], shapes) -> ConvMap | None:
        anchor_shape = next(m for m in convs if m is not None).anchor_shape
        made = ConvMap.stack(convs, shapes, node.shape, anchor_shape)
        if made is None or made.skeleton:
            return made
        probe = self._probe(anchor_shape)
        zeros = [torch.zeros((1, *s), dtype=torch.float64) for s in shapes]
        images = [self._image(c, probe) if c is not None else z for c, z in zip(convs, zeros)]
        return self._checked(made, probe, torch.cat(images, dim=2))

    def _collapse_concat(self, node: NetworkNode, inputs: list[list[Term] | None]) -> list[Term]:
        self.collapses += 1
        bound = root_sum_squares(self.bound(ts, node.id) for ts in inputs if ts is not None)
        self._anchored(node.id, node.id, [t for ts in inputs if ts is not None for t in ts])
        return [Term(node.id, bound, self.identity(node.id))]


# An explicit map is built only while the product of its factors' norms stays in scaling's safe
# range [2^-900, 2^900] (in_safe_range checks the recursion's figure, not the maps inside it: a
# chain 1e-170·1e-170 → ReLU → 1e170·1e170 reached a figure of 1 so).  Below float64's normal range
# an entry loses up to 2^-1075 absolutely, which the later factors magnify by at most
# cheap / (the norms so far) ≤ 2^900·cheap: 2^-175·cheap, inside rounding_allowance (its 2^-52 is
# twice the unit roundoff).  Above it the entries could overflow.  Out of that range the map is
# collapsed (a fresh anchor at its input) or kept as its figure only.


def _in_range(cheap: float, factor: float) -> bool:
    """Whether an explicit map of figure ``cheap`` may be taken through a factor of norm ``factor``
    (an exactly zero map always can: its columns stay exactly 0)."""
    return cheap == 0.0 or factor == 0.0 or in_safe_range(cheap * factor)


def _largest(t: Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _unary_terms(node: NetworkNode, inputs: list[list[Term] | None]) -> list[Term]:
    """The terms of a unary node's input (propagate applies a node only when some input has terms)."""
    return present(inputs[0], f"the terms of the input of '{node.name}'")


def _linear_norm(node: NetworkNode, norm: float | None) -> float:
    """``node.norm()`` of a linear node, which always has one."""
    return present(norm, f"the norm of linear node '{node.name}'")


# ---------------------------------------------------------------------------------------------
# Several sources at once

JOINT_STEPS = 4
JOINT_TOL = 1e-3


def joint_bound(items: list[tuple[float, DenseMap]], norms: list[float]) -> float:
    """A certified bound on sup ‖Σ_s A_s·Δ_s‖ over ‖Δ_s‖ ≤ c_s (explicit matrices A_s from the
    sources to one target): min over μ in the simplex of ‖[c_s·A_s/√μ_s]_s‖.

    Proof: Σ_s A_s·Δ_s = [c_s·A_s/√μ_s]_s · (√μ_s·Δ_s/c_s)_s and the second vector has norm
    √(Σ μ_s‖Δ_s‖²/c_s²) ≤ √(Σ μ_s) = 1.  With μ_s ∝ c_s·‖A_s‖ the stacked norm is at most
    √(Σ_s c_s²‖A_s‖²/μ_s) = Σ_s c_s‖A_s‖, the triangle inequality's figure; it is lower when the
    sources' images point in different directions.  A few fixed-point steps μ_s ∝ c_s·‖A_sᵀv‖
    (v the top left singular vector estimate: the stationarity condition of the minimum) move μ
    towards it; only the final μ's figure is certified, so the steps need not be exact.

    The stacked norm² is λ_max(G), G = Σ_s (c_s²/μ_s)·A_s·A_sᵀ on the target's side, formed from
    the per-source Gram matrices once.  Rounding: |Ĝ − G| ≤ γ_k·|S|ᵀ|S| entrywise (k = Σ n_s the
    inner dimension, S the stacked matrix), so ‖Ĝ − G‖₂ ≤ γ_k·‖S‖_F² ≤ γ_k·r·λ_max(G) with r the
    side of G, and λ_max(G) ≤ σ_max(Ĝ)/(1 − γ_k·r); dense_norm certifies σ_max(Ĝ).  The factor
    (1 + 1e-12) covers the rounding of the scalings and of Σ μ_s = 1.
    """
    mats = [m.columns.reshape(m.columns.shape[0], -1) for _, m in items]  # A_sᵀ, (n_s, d)
    # the matrices are the computed ones: ‖Σ A_sΔ_s‖ ≤ (figure for the computed) + Σ c_s·‖A_s − Â_s‖
    slack = math.fsum(c * rounding_allowance(m.ops, max(a.shape), m.cheap) for (c, m), a in zip(items, mats))
    return _joint(mats, items, norms) * (1.0 + 1e-12) + slack


def _joint(mats: list[Tensor], items, norms: list[float]) -> float:

    weights = torch.tensor([c for c, _ in items], dtype=torch.float64)
    mu = weights * torch.tensor(norms, dtype=torch.float64)
    if float(mu.sum()) == 0.0:
        return 0.0
    inner, side = sum(a.shape[0] for a in mats), mats[0].shape[1]
    if inner <= side:  # few source entries: work with the stacked matrix itself

        def stacked(mu: Tensor) -> Tensor:
            return torch.cat([a * (float(c) / math.sqrt(float(m))) for a, c, m in zip(mats, weights, mu)])

        mu = _keep_all(mu / mu.sum())
        for _ in range(JOINT_STEPS):
            s = stacked(mu)
            v = _top_vector(s.T @ s)
            proposal = weights * torch.stack([torch.linalg.vector_norm(a @ v) for a in mats])
            if not float(proposal.sum()) > 0.0:
                break
            mu = _keep_all(proposal / proposal.sum())
        return dense_norm(stacked(_keep_all(mu)), tol=JOINT_TOL).value

    grams = [a.T @ a for a in mats]  # A_s A_sᵀ, (d, d)

    def combined(mu: Tensor) -> Tensor:
        return sum((g * (float(c) ** 2 / float(m)) for g, c, m in zip(grams, weights, mu)), torch.zeros_like(grams[0]))

    mu = _keep_all(mu / mu.sum())
    for _ in range(JOINT_STEPS):
        v = _top_vector(combined(mu))
        proposal = weights * torch.stack([torch.sqrt(torch.clamp(v @ g @ v, min=0.0)) for g in grams])
        if not float(proposal.sum()) > 0.0:
            break
        mu = _keep_all(proposal / proposal.sum())
    terms = inner + len(mats) + 4  # the products, then the weighted sum over the sources
    gamma = terms * 2.0**-53 / (1 - terms * 2.0**-53)
    top = dense_norm(combined(_keep_all(mu)), tol=JOINT_TOL).value
    return math.sqrt(top / (1.0 - gamma * side))


def _keep_all(mu: Tensor) -> Tensor:
    """μ on the simplex with every entry positive (a source the steps dropped gets a tiny share)."""
    mu = torch.clamp(mu, min=1e-9 * float(mu.max()))
    return mu / mu.sum()


def _top_vector(gram: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """Power iteration for the top eigenvector of a PSD matrix (an estimate)."""
    v = gram.sum(0)
    if float(torch.linalg.vector_norm(v)) == 0.0:
        v = torch.ones(gram.shape[1], dtype=gram.dtype)
    for _ in range(steps):
        v = gram @ v
        length = torch.linalg.vector_norm(v)
        if float(length) == 0.0:
            break
        v = v / length
    return v
