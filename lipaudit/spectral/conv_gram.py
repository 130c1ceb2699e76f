"""The Gram matrix of a zero-padded convolution, assembled from its kernel's tap pairs.

A convolution (ONNX Conv: weight (C_out, C_in/g, *k), input size H, pads b/e, stride s, dilation
d, groups g) is, per group, the block matrix A with blocks A[j, p] = Σ W_t over the taps t with
p = j·s + d·t − b (C_out/g × C_in/g blocks, j an output position, p an input position).  Call
(j, t, p) a *read*; for a fixed j distinct taps read distinct positions, and for a fixed p distinct
(j, t) do.  Hence, per group,

    AᵀA[p, p'] = Σ_j  Σ_{reads (j, t, p), (j, t', p')}  W_tᵀ W_t'       (reads sharing their output j)
    AAᵀ[j, j'] = Σ_p  Σ_{reads (j, t, p), (j', t', p)}  W_t W_t'ᵀ       (reads sharing their input p)

Every term is one of the tap-pair products, computed once for the pairs that occur and then
scattered into place: about keys·(reads per key)² block additions.  Pushing n basis vectors through
the convolution and its adjoint instead costs n times a whole convolution — for 256 channels at
4×4 that is ~150 GFLOP against ~3 here.

Rounding: every entry is a sum of at most ``inner`` = (the long channel count)·(reads per key)
products of kernel entries, so |Ĝ − G| ≤ γ_inner·|A|ᵀ|A| entrywise and ‖Ĝ − G‖₂ ≤ γ_inner·r·σ_max²
with r the rank — the bound bnb.rounding_margin(side, inner) allows for.  Only the lower triangle
is certified (Cholesky reads it); the bound holds entry by entry, so for that triangle too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..invariants import present
from .cost import device_costs, operator_matrix_seconds, tap_pair_seconds
from .device import one_thread
from .geometry import window_count
from .materialize import GramSource

# Up to this size, all tap-pair products come from one product of the reshaped kernel.
PRODUCT_BYTES = 256 * 2**20


def output_sizes(spatial, pads, kernel, strides, dilations) -> tuple[int, ...]:
    n = len(spatial)
    return tuple(window_count(spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i]) for i in range(n))


def reads(kernel, spatial, pads, strides, dilations, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(j, t, p): flat output position, flat tap and flat input position of every read that lands
    inside the input (the others read padding and contribute nothing)."""
    n = len(spatial)
    outs = output_sizes(spatial, pads, kernel, strides, dilations)
    shape = (*outs, *kernel)
    position = torch.zeros(shape, dtype=torch.int64, device=device)
    inside = torch.ones(shape, dtype=torch.bool, device=device)
    for i in range(n):
        j = torch.arange(outs[i], device=device)[:, None]
        t = torch.arange(kernel[i], device=device)[None, :]
        p = j * strides[i] + dilations[i] * t - pads[i]  # (out_i, k_i)
        view = [1] * (2 * n)
        view[i], view[n + i] = outs[i], kernel[i]
        p = p.reshape(view)
        inside = inside & (p >= 0) & (p < spatial[i])
        position = position * spatial[i] + p
    taps = math.prod(kernel)
    flat_inside = inside.reshape(-1, taps)
    j, t = flat_inside.nonzero(as_tuple=True)
    return j, t, position.reshape(-1, taps)[j, t]


def pairs_sharing(key: Tensor, other: Tensor, tap: Tensor, keys: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every ordered pair of reads with the same ``key``: (other_a, other_b, tap_a, tap_b)."""
    order = torch.argsort(key, stable=True)
    key, other, tap = key[order], other[order], tap[order]
    counts = torch.bincount(key, minlength=keys)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(key.numel(), device=key.device) - starts[key]
    width = int(counts.max()) if key.numel() else 0
    table_other = torch.full((keys, width), -1, dtype=torch.int64, device=key.device)
    table_tap = torch.zeros((keys, width), dtype=torch.int64, device=key.device)
    table_other[key, rank], table_tap[key, rank] = other, tap
    a, b = table_other[:, :, None].expand(-1, -1, width), table_other[:, None, :].expand(-1, width, -1)
    ta, tb = table_tap[:, :, None].expand(-1, -1, width), table_tap[:, None, :].expand(-1, width, -1)
    mask = (a >= 0) & (b >= 0)
    return a[mask], b[mask], ta[mask], tb[mask]


@dataclass(frozen=True)
class ConvGram:
    """The Gram matrices (one per group) of a convolution's smaller side, built on demand.

    ``on_input``: AᵀA (input side) rather than AAᵀ.  ``side``: n = channels·positions per group,
    laid out position-major (row p·c + channel).  ``inner``: the most products summed into one
    entry.  ``tap_pairs``: the distinct tap pairs that occur; ``scatters``: block additions.
    """

    weight: Tensor  # (groups, C_out/g, C_in/g, taps) float64
    on_input: bool
    positions: int
    channels: int
    inner: int
    a: Tensor  # per scatter, sorted by tap pair: the Gram block row and column, and the tap pair
    b: Tensor
    pair: Tensor
    tap_pairs: Tensor  # (pairs, 2)
    diagonal_taps: Tensor  # (positions, taps) float64: how many reads of tap t fall on each Gram row
    # Where writing the operator's matrix and one GEMM is predicted cheaper than the tap pairs
    # (cost.operator_matrix_seconds against cost.tap_pair_seconds): every read (the Gram side's
    # position, the other side's, the tap).
    by_operator: bool = False
    read_side: Tensor | None = None
    read_other: Tensor | None = None
    read_tap: Tensor | None = None
    other_positions: int = 0

    @property
    def groups(self) -> int:
        return self.weight.shape[0]

    @property
    def side(self) -> int:
        return self.channels * self.positions

    @property
    def scatters(self) -> int:
        return self.a.numel()

    @classmethod
    def build(
        cls, weight: Tensor, spatial, pads, strides, dilations, groups: int, by_operator: bool | None = None
    ) -> ConvGram:
        """``by_operator``: assemble through the operator's matrix (True) or the tap pairs (False);
        None: whichever the cost model predicts cheaper."""
        kernel = tuple(weight.shape[2:])
        device = weight.device
        c_out, c_in_g = weight.shape[:2]
        taps = math.prod(kernel)
        w = weight.reshape(groups, c_out // groups, c_in_g, taps)
        outs = output_sizes(spatial, pads, kernel, strides, dilations)
        j, t, p = reads(kernel, spatial, pads, strides, dilations, device)
        n_in, n_out = c_in_g * math.prod(spatial), (c_out // groups) * math.prod(outs)
        on_input = n_in <= n_out
        if on_input:
            a, b, ta, tb = pairs_sharing(j, p, t, math.prod(outs))
            positions, channels, long = math.prod(spatial), c_in_g, c_out // groups
            row = p
        else:
            a, b, ta, tb = pairs_sharing(p, j, t, math.prod(spatial))
            positions, channels, long = math.prod(outs), c_out // groups, c_in_g
            row = j
        key = ta * taps + tb
        unique, pair = torch.unique(key, return_inverse=True)
        tap_pairs = torch.stack([unique // taps, unique % taps], dim=1)
        order = torch.argsort(pair, stable=True)  # the scatters of one tap pair side by side
        a, b, pair = a[order], b[order], pair[order]
        per_row = torch.bincount(row, minlength=positions).max() if row.numel() else torch.tensor(0)
        diagonal_taps = torch.zeros((positions, taps), dtype=torch.float64, device=device)
        diagonal_taps.index_put_((row, t), torch.ones_like(row, dtype=torch.float64), accumulate=True)
        inner = max(1, long * int(per_row))
        made = cls(w, on_input, positions, channels, inner, a, b, pair, tap_pairs, diagonal_taps)
        other_positions = math.prod(outs) if on_input else math.prod(spatial)
        if by_operator is None:
            costs = device_costs(device)
            by_pairs = tap_pair_seconds(
                groups=groups,
                taps=taps,
                pairs=tap_pairs.shape[0],
                scatters=a.numel(),
                channels=channels,
                long=long,
                costs=costs,
            )
            by_matrix = operator_matrix_seconds(
                groups=groups,
                reads=j.numel(),
                channels=channels,
                long=long,
                side=channels * positions,
                other=long * other_positions,
                costs=costs,
            )
            by_operator = by_matrix is not None and by_matrix < by_pairs
        if not by_operator:
            return made
        # One GEMM sums the products of a whole row of the operator: at most its length, not
        # only those that share a read.
        return replace(
            made,
            inner=max(inner, long * other_positions),
            by_operator=True,
            read_side=row,
            read_other=j if on_input else p,
            read_tap=t,
            other_positions=other_positions,
        )

    # ------------------------------------------------------------------ Gram matrices

    def _pair_products(self, groups: Tensor) -> Tensor:
        """(pairs, len(groups), c, c): W_taᵀW_tb (input side) or W_taW_tbᵀ for every tap pair.

        When most pairs occur, one product of the reshaped kernel with itself gives all of them
        (one large GEMM runs several times faster than many small ones); otherwise per pair.
        """
        w = self.weight[groups]  # (G, C_out/g, C_in/g, taps)
        count, c = w.shape[0], self.channels
        taps = self.weight.shape[-1]
        ta, tb = self.tap_pairs[:, 0], self.tap_pairs[:, 1]
        if 4 * ta.numel() >= taps * taps and 8 * count * (taps * c) ** 2 <= PRODUCT_BYTES:
            if self.on_input:  # columns (t, c_in): XᵀX holds every W_tᵀW_t'
                x = w.permute(0, 1, 3, 2).reshape(count, -1, taps * c)
                full = x.mT @ x
            else:  # rows (t, c_out): XXᵀ holds every W_tW_t'ᵀ
                x = w.permute(0, 3, 1, 2).reshape(count, taps * c, -1)
                full = x @ x.mT
            return full.view(count, taps, c, taps, c)[:, ta, :, tb, :]
        if self.on_input:
            left = w[..., ta].permute(3, 0, 2, 1).contiguous()  # (P, G, C_in/g, C_out/g)
            right = w[..., tb].permute(3, 0, 1, 2).contiguous()  # (P, G, C_out/g, C_in/g)
        else:
            left = w[..., ta].permute(3, 0, 1, 2).contiguous()  # (P, G, C_out/g, C_in/g)
            right = w[..., tb].permute(3, 0, 2, 1).contiguous()
        return left @ right

    def gram(self, groups: Tensor) -> Tensor:
        """(len(groups), side, side) float64 Gram matrices of these groups."""
        groups = groups.to(self.weight.device)
        if self.by_operator:
            return self._gram_by_operator(groups)
        count, c, positions = groups.numel(), self.channels, self.positions
        # Position-major rows (p, channel): each c×c block is c contiguous rows of c entries, which
        # the scatter touches far faster than channel-major rows.  The order of the basis changes
        # no eigenvalue.
        gram = torch.zeros((count, positions, c, positions, c), dtype=torch.float64, device=self.weight.device)
        scatter_view = gram.permute(1, 3, 0, 2, 4)  # (positions, positions, G, c, c), same storage
        products = self._pair_products(groups)  # (pairs, G, c, c)
        # One tap pair at a time: its positions are distinct (distinct keys), and broadcasting its
        # product avoids gathering a copy per scatter (that copy alone cost more than the adds).
        ends = torch.cumsum(torch.bincount(self.pair, minlength=products.shape[0]), 0).tolist()
        start = 0
        with one_thread():  # many small, memory-bound additions
            for k, end in enumerate(ends):
                if end > start:
                    block = products[k].expand(end - start, *products[k].shape)
                    scatter_view.index_put_((self.a[start:end], self.b[start:end]), block, accumulate=True)
                start = end
        return gram.reshape(count, self.side, self.side)

    def _gram_by_operator(self, groups: Tensor) -> Tensor:
        """The Gram matrices through the operator's matrix: each read writes its kernel block (for
        a fixed position on one side distinct taps read distinct positions on the other, so no
        entry is written twice and every entry is a kernel entry, exactly), then one GEMM."""
        side, other = present(self.read_side, "reads"), present(self.read_other, "reads")
        tap = present(self.read_tap, "reads")
        w = self.weight[groups]  # (G, C_out/g, C_in/g, taps)
        count, c = w.shape[0], self.channels
        blocks = w[..., tap].permute(3, 0, 1, 2) if not self.on_input else w[..., tap].permute(3, 0, 2, 1)
        long = blocks.shape[-1]  # blocks: (reads, G, c, long), c on the Gram side
        matrix = torch.zeros(
            (self.positions, self.other_positions, count, c, long), dtype=torch.float64, device=self.weight.device
        )
        matrix.index_put_((side, other), blocks)
        rows = matrix.permute(2, 0, 3, 1, 4).reshape(count, self.side, self.other_positions * long)
        return rows @ rows.mT

    def profile(self) -> tuple[Tensor, Tensor]:
        """Per group (‖A‖_F, √max diag of the Gram matrix): a certified bound and a lower estimate
        on σ_max, without forming the Gram matrix (its diagonal sums squared kernel columns)."""
        squares = self.weight**2  # (g, C_out/g, C_in/g, taps)
        column = squares.sum(1) if self.on_input else squares.sum(2)  # (g, c, taps)
        diagonal = column @ self.diagonal_taps.T  # (g, c, positions)
        flat = diagonal.reshape(self.groups, -1)
        return flat.sum(-1).sqrt().cpu(), flat.amax(-1).sqrt().cpu()

    def source(self) -> GramSource:
        return GramSource(self.groups, self.side, self.inner, self.gram, self.profile)
