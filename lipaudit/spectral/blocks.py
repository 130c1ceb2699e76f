"""A convolution's circulant embedding and its polyphase frequency blocks (docs/design.md, "Convolutions").

Everything here is about one *forward* convolution (ONNX Conv semantics): weight (C_out, C_in/g, *k),
input size H, pads (begin, end), stride s, dilation d, groups g.  A ConvTranspose is bounded through
the convolution it is (a crop of) the adjoint of; conv.py does that translation.

The embedding, per spatial dimension (the dimensions are independent, so the argument is 1-D):

    Let H_out = ⌊(H + b + e − d·(k − 1) − 1)/s⌋ + 1 and take a period N with
        (1) N ≥ H + b,   (2) N ≥ (H_out − 1)·s + d·(k − 1) + 1,   (3) s | N.
    Put the input at offset b in a zero vector z of length N: z[p + b] = x[p] (an isometry; (1)
    makes room for it).  The circular correlation c[j] = Σ_t W_t·z[(j + d·t) mod N] at a kept
    output j = m·s, m < H_out, reads indices m·s + d·t ≤ (H_out − 1)·s + d·(k − 1) < N by (2), so
    it never wraps around; there z holds x[m·s + d·t − b] where that is inside the input and 0
    where the convolution reads padding (z is 0 on [0, b) and [b + H, N)).  So the convolution is
    R·S·C·E: embedding E, N-periodic correlation C, subsampling S to the N/s outputs m·s, and R
    keeping the first H_out of them.  ‖E‖ = 1 and ‖R‖ ≤ 1, hence ‖conv‖ ≤ ‖S·C‖.  N = H + b + e
    always satisfies (1) and (2); we take the smallest N satisfying all three.

Polyphase decomposition of S·C (Senderovich et al. 2022), with (3): write z_r[q] = z[q·s + r]
(r < s, q < M = N/s: a permutation of z) and split each tap as d·t = a_t·s + r_t.  Then

    (S·C z)[m] = Σ_t W_t·z[(m + a_t)·s + r_t] = Σ_r Σ_{t: r_t = r} W_t·z_r[(m + a_t) mod M],

a stride-1 M-periodic correlation with C_in·s input channels (c, r).  The DFT over Z_M
block-diagonalises it: at frequency ω the block is K(ω) = [K_r(ω)]_r with
K_r(ω) = Σ_{t: r_t = r} W_t·exp(−2πi ω·a_t/M), of size C_out × C_in·(phases), and
‖S·C‖ = max_ω σ_max(K(ω)) exactly.  Phases no tap reaches give zero columns and are dropped;
groups give a block per group.  In D dimensions the grid, the phases and the shifts are products.

Two reductions keep the work small:
  * a real kernel gives K(−ω) = conj K(ω), with the same singular values, so half the grid
    (along one axis, as rfftn does) covers every block;
  * along an axis where each phase holds taps of a single shift a(r) (e.g. a 1×1 kernel, or
    stride ≥ dilated kernel span), the factor exp(−2πi ω a(r)/M) is one unit scalar per
    column block: a diagonal unitary on the right, which changes no singular value.  We set
    those shifts to 0 and the axis drops out of the grid (size 1).  When every axis drops out
    there is a single real block: the reshaped kernel, and the bound is ‖K_mat‖₂ itself.

Gram matrices without the blocks.  What the bounds need is G(ω) = K(ω)K(ω)ᴴ (or KᴴK, the
smaller side).  With φ_t(ω) = exp(−2πi ω·a_t/M) and K_r = Σ_{t∈T_r} W_t φ_t,

    K Kᴴ = Σ_r Σ_{t,t'∈T_r} W_t W_t'ᵀ φ_t conj(φ_t') = Σ_δ exp(−2πi ω·δ/M)·H_δ,
    H_δ = Σ_r Σ_{t,t'∈T_r, a_t − a_t' = δ} W_t W_t'ᵀ            (C_out × C_out, real),

and likewise KᴴK = Σ_δ exp(−2πi ω·δ/M)·H'_δ with block (r, r') of H'_δ equal to
Σ_{t∈T_r, t'∈T_r', a_t' − a_t = δ} W_tᵀ W_t'.  The H_δ (an autocorrelation of the kernel,
(2A−1)^D of them) cost one real product per pair of taps, once; each frequency then costs a
short sum of real matrices instead of a complex product over the long side.  For a 3×3 kernel
with 256 channels at 14×14 that is ~7× fewer operations, for a strided one ~25×.  ``gram`` picks
whichever way is cheaper.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .geometry import window_count

# Work memory for one chunk of blocks while they are computed (the kernel's DFT as real matrix
# products over the taps).
BLOCK_CHUNK_BYTES = 128 * 2**20
# Rows of taps whose differences _pair_counts forms at once (rows × taps int64 entries).
_PAIR_CHUNK = 256


def embedding_period(size: int, begin: int, end: int, kernel: int, stride: int, dilation: int) -> int:
    """Smallest period N satisfying (1)–(3) of the module docstring, for one spatial dimension."""
    span = dilation * (kernel - 1) + 1
    out = window_count(size, begin, end, kernel, stride, dilation)
    need = max(size + begin, (out - 1) * stride + span, 1)
    return -(-need // stride) * stride


@dataclass(frozen=True)
class PolyphaseKernel:
    """The frequency blocks of one strided, dilated, grouped convolution's circulant embedding.

    ``weight``: (groups, C_out/g, C_in/g, taps) float64; ``shifts``: (taps, D) the a_t per axis
    (0 on axes that dropped out); ``phase``: (taps,) index of the tap's phase among the
    ``phase_residues`` that occur (the r of each axis).  ``grid``: M per axis (1 where the axis
    dropped out); ``half_axis``:
    the axis cut to M//2 + 1 by conjugate symmetry (None when the grid is a single point).
    """

    weight: Tensor
    shifts: Tensor
    phase: Tensor
    phase_residues: tuple[tuple[int, ...], ...]
    grid: tuple[int, ...]
    periods: tuple[int, ...]
    half_axis: int | None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_conv(
        cls,
        weight: Tensor,
        input_spatial,
        pads,
        strides,
        dilations,
        groups: int,
        periods: tuple[int, ...] | None = None,
    ) -> PolyphaseKernel:
        """Blocks of the convolution at this input size (``weight`` float64, any device).

        ``periods`` overrides the embedding periods N (each must satisfy (1)–(3); tests use it).
        """
        n = weight.ndim - 2
        kernel = tuple(weight.shape[2:])
        if periods is None:
            periods = tuple(
                embedding_period(input_spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i])
                for i in range(n)
            )
        if any(p % s for p, s in zip(periods, strides)):
            raise ValueError(f"periods {periods} are not multiples of the strides {strides}")
        # Per axis: shift a and residue r of every kernel index t (d·t = a·s + r).
        axis_shift, axis_residue = [], []
        for k, s, d in zip(kernel, strides, dilations):
            offsets = [d * t for t in range(k)]
            shift = [o // s for o in offsets]
            residue = [o % s for o in offsets]
            # One shift per residue on this axis: the axis' phase factors are unit scalars per
            # column block (module docstring), so the axis drops out of the grid.
            if all(len({a for a, r in zip(shift, residue) if r == q}) <= 1 for q in set(residue)):
                shift = [0] * k
            axis_shift.append(shift)
            axis_residue.append(residue)
        grid = tuple(1 if not any(axis_shift[i]) else periods[i] // strides[i] for i in range(n))
        taps = list(itertools.product(*(range(k) for k in kernel)))
        shifts = torch.tensor([[axis_shift[i][t[i]] for i in range(n)] for t in taps], dtype=torch.int64)
        residues = [tuple(axis_residue[i][t[i]] for i in range(n)) for t in taps]
        distinct = sorted(set(residues))
        phase = torch.tensor([distinct.index(r) for r in residues], dtype=torch.int64)
        c_out, c_in_g = weight.shape[:2]
        w = weight.reshape(groups, c_out // groups, c_in_g, len(taps))
        live = [i for i in range(n) if grid[i] > 1]
        return cls(
            w,
            shifts.to(weight.device),
            phase.to(weight.device),
            tuple(distinct),
            grid,
            tuple(periods),
            live[-1] if live else None,
        )

    # ------------------------------------------------------------------ shape

    @property
    def phases(self) -> int:
        return len(self.phase_residues)

    @property
    def groups(self) -> int:
        return self.weight.shape[0]

    @property
    def block_shape(self) -> tuple[int, int]:
        return self.weight.shape[1], self.weight.shape[2] * self.phases

    @property
    def frequency_grid(self) -> tuple[int, ...]:
        """The frequencies we evaluate: the grid with ``half_axis`` cut to M//2 + 1."""
        if self.half_axis is None:
            return self.grid
        return tuple(m // 2 + 1 if i == self.half_axis else m for i, m in enumerate(self.grid))

    @property
    def frequencies(self) -> int:
        return math.prod(self.frequency_grid)

    @property
    def count(self) -> int:
        """Blocks in all: one per evaluated frequency and group."""
        return self.frequencies * self.groups

    @property
    def is_real(self) -> bool:
        return self.half_axis is None

    @property
    def taps(self) -> int:
        return self.weight.shape[-1]

    def bytes_per_block(self) -> int:
        m, n = self.block_shape
        return 16 * m * n

    # ------------------------------------------------------------------ blocks

    def frequency_vectors(self, index: Tensor) -> Tensor:
        """(F, D) integer frequency vectors of flat frequency indices (row-major over the grid)."""
        # Not torch.unravel_index: its first call imports sympy, ~0.5 s.
        coordinates = []
        for size in reversed(self.frequency_grid):
            coordinates.append(index % size)
            index = index // size
        return torch.stack(coordinates[::-1], dim=1)

    def frequency_blocks(self, index: Tensor) -> Tensor:
        """Blocks at the flat frequency indices ``index``: (F, groups, C_out/g, phases·C_in/g).

        complex128, or float64 when the grid is a single point.  Column p·C_in/g + c is input
        channel c of phase p.  Evaluated as a direct sum over the taps, one complex matrix product
        per phase, so any subset of frequencies costs only its own share; the angles are formed
        from integer products reduced mod M, exact to ~1e-16.
        """
        device = self.weight.device
        index = index.to(device)
        g, c_out_g, c_in_g, taps = self.weight.shape
        if self.is_real:
            blocks = torch.zeros((g, c_out_g, self.phases, c_in_g), dtype=torch.float64, device=device)
            blocks.index_add_(2, self.phase, self.weight.permute(0, 1, 3, 2))
            blocks = blocks.reshape(g, c_out_g, self.phases * c_in_g)
            return blocks.unsqueeze(0).expand(index.numel(), -1, -1, -1).contiguous()
        omega = self.frequency_vectors(index)
        angle = torch.zeros((omega.shape[0], taps), dtype=torch.float64, device=device)
        for axis, size in enumerate(self.grid):
            if size == 1:
                continue
            residue = (omega[:, axis, None] * self.shifts[None, :, axis]) % size
            angle += residue.to(torch.float64) / size
        angle *= -2 * math.pi
        phasors = torch.polar(torch.ones_like(angle), angle)  # (F, taps)
        blocks = torch.empty((omega.shape[0], g, c_out_g, self.phases, c_in_g), dtype=torch.complex128, device=device)
        for p, (members, weights) in enumerate(self._phase_weights()):
            # (F, |T_p|) @ (|T_p|, g·C_out/g·C_in/g)
            blocks[:, :, :, p] = (phasors[:, members] @ weights).reshape(-1, g, c_out_g, c_in_g)
        return blocks.reshape(omega.shape[0], g, c_out_g, self.phases * c_in_g)

    def _phase_weights(self) -> list[tuple[Tensor, Tensor]]:
        """Per phase: its taps and their weights as a complex (|T_p|, g·C_out/g·C_in/g) matrix (cached)."""
        cached = self.__dict__.get("_phase_cache")
        if cached is None:
            flat = self.weight.permute(3, 0, 1, 2).reshape(self.taps, -1)
            cached = []
            for p in range(self.phases):
                members = (self.phase == p).nonzero().flatten()
                cached.append((members, flat[members].to(torch.complex128)))
            object.__setattr__(self, "_phase_cache", cached)
        return cached

    def blocks(self, index: Tensor) -> Tensor:
        """Blocks at flat block indices (frequency·groups + group): (len, C_out/g, phases·C_in/g)."""
        index = index.to(self.weight.device)
        g = self.groups
        if g == 1:
            return self.frequency_blocks(index)[:, 0]
        unique, inverse = torch.unique(index // g, return_inverse=True)
        per_frequency = self.frequency_blocks(unique)
        return per_frequency[inverse, index % g]

    # ------------------------------------------------------------------ Gram matrices

    @property
    def left(self) -> bool:
        """True when the Gram side is K Kᴴ (C_out/g ≤ phases·C_in/g), else KᴴK."""
        m, n = self.block_shape
        return m <= n

    @property
    def side(self) -> int:
        return min(self.block_shape)

    def _shift_codes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(code per tap, radix, span): each tap's shift as one integer whose differences code the
        shifts δ = a_t − a_u one to one, in the lexicographic order of δ (balanced mixed radix:
        per axis the difference lies in ±range, the radix is the product of the later 2·range + 1)."""
        shifts = self.shifts.cpu().numpy().astype(np.int64).reshape(self.taps, -1)
        low = shifts.min(axis=0)
        span = (shifts.max(axis=0) - low) * 2 + 1
        radix = np.concatenate([np.cumprod(span[::-1])[::-1][1:], [1]]).astype(np.int64)
        return (shifts - low) @ radix, radix, span

    def _pair_chunks(self):
        """Every pair of taps (t, u) that meets in one Gram entry (left side: same phase), in chunks
        of rows t: (t, u, code of δ) arrays; δ = a_t − a_u on the left side, a_u − a_t on the right."""
        code, _, _ = self._shift_codes()
        phase = self.phase.cpu().numpy() if self.left else np.zeros(self.taps, dtype=np.int64)
        sign = 1 if self.left else -1
        for p in np.unique(phase):
            members = np.flatnonzero(phase == p)
            for start in range(0, len(members), _PAIR_CHUNK):
                rows = members[start : start + _PAIR_CHUNK]
                t = np.repeat(rows, len(members))
                u = np.tile(members, len(rows))
                yield t, u, sign * (code[t] - code[u])

    def _pair_counts(self) -> tuple[int, int]:
        """(pairs of taps, distinct shifts δ among them), which the cost model reads on every plan."""
        cached = self.__dict__.get("_pair_counts_cache")
        if cached is not None:
            return cached
        npairs, seen = 0, np.empty(0, dtype=np.int64)
        for t, _, delta in self._pair_chunks():
            npairs += len(t)
            seen = np.union1d(seen, delta)
        result = (npairs, len(seen))
        object.__setattr__(self, "_pair_counts_cache", result)
        return result

    def _autocorrelation(self) -> tuple[Tensor, Tensor]:
        """(δ (Δ, D) int64, H (Δ, groups, side, side) float64), cached; see the module docstring.

        H_{−δ} = H_δᵀ (swap the two taps of every pair), so only the shifts δ ≥ 0 cost products,
        formed as batched matrix products and added into their δ (index_add_: in a fixed order).
        """
        cached = self.__dict__.get("_autocorrelation_cache")
        if cached is not None:
            return cached
        device = self.weight.device
        _, radix, span = self._shift_codes()
        codes = np.unique(np.concatenate([delta for _, _, delta in self._pair_chunks()]))
        g, c_in_g, phases = self.groups, self.weight.shape[2], self.phases
        w = self.weight.permute(3, 0, 1, 2)  # (taps, g, C_out/g, C_in/g)
        if self.left:
            h = torch.zeros((len(codes), g, self.side, self.side), dtype=torch.float64, device=device)
            target, size = h, self.side
        else:  # blocks of C_in/g per phase pair: (Δ, phases, phases, g, C_in/g, C_in/g)
            target = torch.zeros((len(codes), phases, phases, g, c_in_g, c_in_g), dtype=torch.float64, device=device)
            size = c_in_g
        flat = target.view(-1, g, size, size)
        phase = self.phase.cpu().numpy()
        step = max(1, BLOCK_CHUNK_BYTES // (16 * g * size * size))
        for t, u, delta in self._pair_chunks():
            keep = delta >= 0
            t, u, delta = t[keep], u[keep], delta[keep]
            index = np.searchsorted(codes, delta)
            if not self.left:
                index = (index * phases + phase[t]) * phases + phase[u]
            for start in range(0, len(t), step):
                rows = slice(start, start + step)
                left, right = w[torch.from_numpy(t[rows]).to(device)], w[torch.from_numpy(u[rows]).to(device)]
                value = left @ right.transpose(-1, -2) if self.left else left.transpose(-1, -2) @ right
                flat.index_add_(0, torch.from_numpy(index[rows]).to(device), value)
        if not self.left:
            h = target.permute(0, 3, 1, 4, 2, 5).reshape(len(codes), g, self.side, self.side)
        mirror = np.searchsorted(codes, -codes[codes < 0])  # sorted: the negative codes come first
        if len(mirror):
            h[: len(mirror)] = h[torch.from_numpy(mirror).to(device)].transpose(-1, -2)
        offset = (span // 2) @ radix
        digits = ((codes[:, None] + offset) // radix[None, :]) % span[None, :] - span[None, :] // 2
        result = (torch.from_numpy(digits).to(device), h)
        object.__setattr__(self, "_autocorrelation_cache", result)
        return result

    def gram_flops(self) -> tuple[int, int]:
        """Flops to form every block's Gram matrix (through the autocorrelation, through the blocks)."""
        m, n = self.block_shape
        side, long = min(m, n), max(m, n)
        npairs, shifts = self._pair_counts()
        inner = self.weight.shape[2] if self.left else self.weight.shape[1]
        through_pairs = self.groups * (npairs * 2 * side * side * inner + self.frequencies * shifts * 4 * side * side)
        per_block = (2 if self.is_real else 8) * side * side * long + 8 * self.taps * side * long
        return through_pairs, self.count * per_block

    def _use_autocorrelation(self) -> bool:
        """Whether the autocorrelation route to the Gram matrices is the cheaper one (flop count)."""
        through_pairs, through_blocks = self.gram_flops()
        return through_pairs < through_blocks

    def gram(self, index: Tensor) -> Tensor:
        """Gram matrices (len, side, side) of the blocks at flat indices (frequency·groups + group).

        complex128, or float64 when the grid is a single point.  The lower triangle is what the
        Cholesky and eigen solvers read; the whole matrix is Hermitian up to rounding.
        """
        index = index.to(self.weight.device)
        if not self._use_autocorrelation():
            blocks = self.blocks(index)
            return blocks @ blocks.mH if self.left else blocks.mH @ blocks
        deltas, h = self._autocorrelation()
        g = self.groups
        frequency, group = index // g, index % g
        if self.is_real:
            return h[0, group].clone()
        phasors = self._phasors(frequency, deltas)  # (len, Δ)
        flat = h.permute(1, 0, 2, 3).reshape(g, h.shape[0], -1)  # (g, Δ, side²)
        out = torch.empty((index.numel(), self.side * self.side), dtype=torch.complex128, device=index.device)
        for j in range(g):
            rows = (group == j).nonzero().flatten() if g > 1 else None
            p = phasors if rows is None else phasors[rows]
            value = torch.complex(p.real @ flat[j], p.imag @ flat[j])
            if rows is None:
                out = value
            else:
                out[rows] = value
        return out.reshape(-1, self.side, self.side)

    def _phasors(self, frequency: Tensor, shifts: Tensor) -> Tensor:
        """exp(−2πi ω·δ/M) for flat frequency indices (F,) and integer shifts (S, D): (F, S)."""
        omega = self.frequency_vectors(frequency)
        angle = torch.zeros((omega.shape[0], shifts.shape[0]), dtype=torch.float64, device=omega.device)
        for axis, size in enumerate(self.grid):
            if size == 1:
                continue
            residue = (omega[:, axis, None] * shifts[None, :, axis]) % size
            angle += residue.to(torch.float64) / size
        angle *= -2 * math.pi
        return torch.polar(torch.ones_like(angle), angle)

    def profile(self) -> tuple[Tensor, Tensor | None, Tensor]:
        """Per block, for every block at once: (Frobenius figure, Gram figure or None, lower).

        From the autocorrelation: ‖K‖_F² = tr G(ω) = Σ_δ φ_δ·tr H_δ, the largest row (left
        side) or column norm² = max diag G(ω), and ‖G(ω)‖_F² = cᵀMc + sᵀMs with
        M_{δδ'} = ⟨H_δ, H_δ'⟩ and φ = c − i·s.  The first two figures are certified upper bounds
        on σ_max — ‖K‖_F and ‖G‖_F^{1/2} — with an explicit allowance for rounding added under the
        root: every quantity is a sum of products of kernel entries and unit phasors whose
        absolute values add up to at most S = (Σ_t ‖W_t‖_F)² (per group), so the computed
        trace is within 4·γ·S and ‖G‖_F² within 8·γ·S² of the exact ones, γ = (k + 10)·u with k
        the number of terms.  The third is a lower estimate (the largest row or column norm).
        """
        if not self._use_autocorrelation():
            frobenius, lower = self._profile_from_blocks()
            return frobenius, None, lower
        deltas, h = self._autocorrelation()
        g, side, count = self.groups, self.side, deltas.shape[0]
        diagonal = h.diagonal(dim1=-2, dim2=-1)  # (Δ, g, side)
        flat = h.permute(1, 0, 2, 3).reshape(g, count, -1)
        inner = flat @ flat.transpose(1, 2)  # (g, Δ, Δ)
        total = self.weight.pow(2).sum((1, 2)).sqrt().sum(-1) ** 2  # S per group
        summed = self.weight.shape[2] if self.left else self.weight.shape[1]  # the product's inner size
        terms = count * (side * side + summed * self.taps + 10)
        gamma = (terms + 10) * 2.0**-53
        slack_trace, slack_gram = 4 * gamma * total, 8 * gamma * total**2
        squares_f = torch.empty(self.count, dtype=torch.float64)
        squares_g = torch.empty(self.count, dtype=torch.float64)
        squares_l = torch.empty(self.count, dtype=torch.float64)
        step = max(1, 2**22 // max(1, count * g * (side + count + 1)))
        for start in range(0, self.frequencies, step):
            frequency = torch.arange(start, min(self.frequencies, start + step), device=h.device)
            if self.is_real:
                cos = torch.ones((frequency.numel(), count), dtype=torch.float64, device=h.device)
                sin = torch.zeros_like(cos)
            else:
                phasors = self._phasors(frequency, deltas)  # (F, Δ)
                cos, sin = phasors.real, -phasors.imag
            values = (cos @ diagonal.reshape(count, -1)).reshape(-1, g, side)
            gram = torch.einsum("fd,gde,fe->fg", cos, inner, cos) + torch.einsum("fd,gde,fe->fg", sin, inner, sin)
            rows = slice(start * g, (start + frequency.numel()) * g)
            squares_f[rows] = (values.sum(-1) + slack_trace).reshape(-1).cpu()
            squares_g[rows] = (gram + slack_gram).reshape(-1).cpu()
            squares_l[rows] = values.amax(-1).reshape(-1).cpu()
        return squares_f.clamp_min(0.0).sqrt(), squares_g.clamp_min(0.0).sqrt().sqrt(), squares_l.clamp_min(0.0).sqrt()

    def _profile_from_blocks(self) -> tuple[Tensor, Tensor]:
        frobenius = torch.empty(self.count, dtype=torch.float64)
        lower = torch.empty(self.count, dtype=torch.float64)
        step = self.chunk_size()
        for start in range(0, self.frequencies, step):
            frequency = torch.arange(start, min(self.frequencies, start + step), device=self.weight.device)
            blocks = self.frequency_blocks(frequency)
            squares = blocks.real**2 + blocks.imag**2 if blocks.is_complex() else blocks**2
            rows = slice(start * self.groups, (start + frequency.numel()) * self.groups)
            frobenius[rows] = squares.sum((-2, -1)).reshape(-1).sqrt().cpu()
            norms = squares.sum(-1 if self.left else -2).amax(-1)
            lower[rows] = norms.reshape(-1).sqrt().cpu()
        return frobenius, lower

    def chunk_size(self, budget: int = BLOCK_CHUNK_BYTES) -> int:
        """Frequencies per chunk so that one chunk of blocks and its work stay within ``budget``."""
        per_frequency = 3 * self.groups * self.bytes_per_block() + 48 * self.taps
        return max(1, budget // per_frequency)

    # ------------------------------------------------------------------ vectors

    def plane_wave(self, block: int, vector: Tensor, input_spatial, pads, strides) -> Tensor:
        """A real input of the true convolution built from a right singular vector of one block.

        ``vector`` (phases·C_in/g,) is a right singular vector of block ``block``.  The circulant
        input z_r[q] = v_r·exp(−2πi ω·q/M) is mapped by K(ω) onto exp(−2πi ω·m/M)·K(ω)v; its real
        part, laid out on the N-periodic grid and cropped to where the true input sits, is a
        good start for power iteration on the true operator.  Returns (C_in, *input_spatial).
        """
        device = self.weight.device
        g, _, c_in_g, _ = self.weight.shape
        n = len(self.grid)
        frequency, group = divmod(int(block), g)
        omega = self.frequency_vectors(torch.tensor([frequency], device=device))[0].tolist()
        strides = tuple(int(s) for s in strides)
        # Phase ρ_j = Σ_i ω_i·q_i / M_i over the grid of q (M_i = N_i / s_i), per axis.
        wave = torch.ones((1,) * n, dtype=torch.complex128, device=device)
        for i in range(n):
            q = torch.arange(self.periods[i] // strides[i], device=device, dtype=torch.float64)
            factor = (
                torch.exp(-2j * math.pi * omega[i] * q / self.periods[i] * strides[i])
                if self.grid[i] > 1
                else torch.ones_like(q, dtype=torch.complex128)
            )
            shape = [1] * n
            shape[i] = -1
            wave = wave * factor.reshape(shape)
        coefficients = vector.to(torch.complex128).reshape(self.phases, c_in_g)
        z = torch.zeros((c_in_g, *self.periods), dtype=torch.complex128, device=device)
        for p, residue in enumerate(self.phase_residues):
            target = (slice(None), *(slice(r, None, s) for r, s in zip(residue, strides)))
            z[target] = coefficients[p].reshape(-1, *([1] * n)) * wave
        crop = (slice(None), *(slice(pads[i], pads[i] + int(input_spatial[i])) for i in range(n)))
        x = torch.zeros((c_in_g * g, *input_spatial), dtype=torch.float64, device=device)
        x[group * c_in_g : (group + 1) * c_in_g] = _real_part(z[crop])
        return x

    def output_wave(self, block: int, vector: Tensor, output_spatial) -> Tensor:
        """A real output of the convolution built from a left singular vector of one block.

        ``vector`` (C_out/g,) is a left singular vector u of block ``block``; the circulant maps the
        plane wave of the right vector onto u·exp(−2πi ω·m/M), whose real part, on the kept outputs
        m < H_out, starts power iteration on the adjoint (ConvTranspose).  Returns (C_out, *H_out).
        """
        device = self.weight.device
        g, c_out_g = self.weight.shape[:2]
        n = len(self.grid)
        frequency, group = divmod(int(block), g)
        omega = self.frequency_vectors(torch.tensor([frequency], device=device))[0].tolist()
        wave = torch.ones((1,) * n, dtype=torch.complex128, device=device)
        for i in range(n):
            m = torch.arange(int(output_spatial[i]), device=device, dtype=torch.float64)
            factor = (
                torch.exp(-2j * math.pi * omega[i] * m / self.grid[i])
                if self.grid[i] > 1
                else torch.ones_like(m, dtype=torch.complex128)
            )
            shape = [1] * n
            shape[i] = -1
            wave = wave * factor.reshape(shape)
        y = torch.zeros((c_out_g * g, *output_spatial), dtype=torch.float64, device=device)
        coefficients = vector.to(torch.complex128).reshape(-1, *([1] * n))
        y[group * c_out_g : (group + 1) * c_out_g] = _real_part(coefficients * wave)
        return y


def _real_part(z: Tensor) -> Tensor:
    """The real or the imaginary part, whichever is larger: both are as good a start, but for a
    self-conjugate frequency one of them can vanish."""
    real, imag = z.real, z.imag
    return real if float(torch.linalg.vector_norm(real)) >= float(torch.linalg.vector_norm(imag)) else imag
