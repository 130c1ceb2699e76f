"""How long each certified method would take on one convolution: the cost model behind 'auto'.

Two certified methods can measure a convolution at its input size (conv.py):

  embedding     the circulant / polyphase frequency blocks by branch and bound (blocks.py, bnb.py),
                plus a dozen Lanczos steps on the true operator for the lower estimate.  Cheap at
                any size, but it bounds the circulant, of which the zero-padded operator is only a
                compression: how far above the true norm it lands is known only afterwards, from
                the estimate (``gap``).  Measured with Kaiming-normal 3×3 kernels, padding 1, the
                circulant is above the true norm by ~0.1 % at 32×32, 0.4 % at 16×16, 1.5–2.5 % at
                8×8, 9–13 % at 4×4, ~50 % at 2×2 and ~200 % at 1×1 (one tap of nine is live).
  materialized  the true operator's Gram matrix on its smaller side (n = channels·positions per
                group), assembled from the kernel's tap pairs (conv_gram.py), then Lanczos and a
                Cholesky certificate (an eigensolver for small ones): within ~1e-8 of the true
                norm, at O(n³) — milliseconds for n ≤ 1024, ~0.5 s at 4096, ~3 s at 8192 on 2 cores.

'auto' (``plan``) takes the materialised operator first when it is predicted no slower than the
embedding, or cheap in absolute terms (``exact_floor_s``), or when the embedding is forecast to be
too loose (``predicted_gap``) and the exact test fits the device's tightening budget; otherwise the
embedding, replaced by the materialised operator afterwards if its measured gap exceeds the
target and the exact test fits the budget.

The predictions are flop and element counts times per-device constants.  ``bench/calibrate_cost.py``
measures them; on the 2-core development machine (torch 2.13.0; shared with other jobs, so the
primitives were timed single-threaded on CPU time, best of three, and divided by the measured
two-thread speed-up, ~1.8 for dense float64 work, ~1.3 for the memory-bound scatter):

    primitive (single thread)            measured     CPU table (two threads)
    GEMM, float64 batched 256³           2.2e-11 s/flop         1.2e-11
    Cholesky, float64, n = 2048–4096     4.2e-11 s/flop         2.3e-11   (n³/3 flops)
    eigensolver, float64, n = 256–1024   1.2e-10 s/n³           7.5e-11
    conv passes, float32                 1.2e-11 s/flop         6.7e-12
    Gram scatter, float64                6.0e-9 s/element       4.6e-9
    per call / per tap pair / per block  5e-3 / 1e-4 / 1e-6 s (fitted on the grid of layers)

Against whole methods on a grid of 20 layers (16–512 channels, 1×1 to 32×32 inputs, strides 1–2,
depthwise 3×3 and 7×7; single thread, CPU time) measured / predicted was 0.6–2.9 for the
embedding on dense kernels (0.3–0.8 on depthwise ones) and 0.4–1.4 for the materialised operator
— enough to order two methods that mostly differ by far more (a wrong constant costs time, never
soundness).

The CUDA table is NOT calibrated (no GPU was lent when this was written): it scales the CPU
figures by rough H100-class ratios and keeps the same budgets.  Run the calibration script with
``--device cuda`` where a GPU exists and replace it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .blocks import PolyphaseKernel

# Up to this Gram side, and this much work over all blocks (count·side³), the materialised
# operator goes through a symmetric eigensolver (exact); above, Lanczos on the operator and one
# Cholesky per block (about 3× cheaper at 2048, and for many blocks — a depthwise convolution's
# groups — the Lanczos estimate is shared by all of them).
EIGEN_SIDE = 1024
EIGEN_WORK = 2**30


def uses_eigensolver(count: int, side: int) -> bool:
    return side <= EIGEN_SIDE and count * side**3 <= EIGEN_WORK


# Lanczos on the true operator before the Cholesky certificate of a large Gram matrix: at most
# this many steps, fewer once the Ritz value moves by less than the tolerance (relative).  Stopping
# at 1e-6 per step left estimates 3e-4 low on a 64-channel 8×8 layer (top gap 8e-4); 80 steps
# reach ~1e-13 there, even in float32, because ‖A v‖ is evaluated in float64.
OPERATOR_LANCZOS_STEPS = 80
OPERATOR_LANCZOS_TOL = 1e-12
# The branch and bound's first Lanczos runs on this many candidate blocks, this many steps.
_CANDIDATES, _LANCZOS_STEPS = 8, 80
# A warm Lanczos estimate costs this many operator passes (conv.WARM_STEPS forward + adjoint).
_WARM_PASSES = 24


@dataclass(frozen=True)
class DeviceCosts:
    """Seconds per unit of work on one kind of device, and how much 'auto' may spend."""

    name: str
    calibrated: bool
    call_s: float  # fixed cost of one method on one layer (Python, allocations, small kernels)
    gemm_s: float  # per float64 flop in batched matrix products (a complex flop counts as 4)
    cholesky_s: float  # per flop of a float64 Cholesky (n³/3 flops)
    eigen_s: float  # per n³ of a float64 symmetric eigensolver
    conv_s: float  # per float32 convolution flop (operator passes)
    scatter_s: float  # per float64 element scattered into a Gram matrix
    pair_s: float  # per distinct tap pair scattered (one indexed add each)
    block_s: float  # per frequency block handled by the branch and bound
    survivors: int  # blocks the branch and bound typically certifies one by one
    tighten_budget_s: float  # 'auto' may spend this long on the exact test when the embedding is too loose
    exact_budget_s: float  # 'exact' materialises the operator up to this predicted time
    exact_floor_s: float  # below this, the exact test is taken even when the embedding is cheaper
    tie_s: float  # the exact test is taken when it costs at most this more than the embedding
    gram_bytes: int  # the largest single Gram matrix materialised


# The operator's matrix (all groups) is written out to build its Gram matrix by one GEMM only up to
# this many bytes (conv_gram.ConvGram: the large kernels of composite convolutions on small grids).
OPERATOR_BYTES = 512 * 2**20

# The tightening budget lets the largest exact test small-input networks need through: 128
# channels at 8×8 (n = 8192, ResNet-18 at 64×64) takes ~3 s on 2 cores and turns a 2–4 % loose
# embedding into the exact norm; every other layer of the benchmark models costs well under 2 s.
CPU_COSTS = DeviceCosts(
    name="cpu",
    calibrated=True,
    call_s=5e-3,
    gemm_s=1.2e-11,
    cholesky_s=2.3e-11,
    eigen_s=7.5e-11,
    conv_s=6.7e-12,
    scatter_s=4.6e-9,
    pair_s=1e-4,
    block_s=1e-6,
    survivors=8,
    tighten_budget_s=5.0,
    exact_budget_s=60.0,
    exact_floor_s=0.5,
    tie_s=0.01,
    gram_bytes=1024 * 2**20,
)

# Uncalibrated: an H100-class GPU taken as ~20× the 2-core CPU on dense float64 work, ~50× on
# float32 convolutions, with a launch-bound floor per call, per tap pair and per block.
CUDA_COSTS = replace(
    CPU_COSTS,
    name="cuda",
    calibrated=False,
    call_s=1e-2,
    gemm_s=CPU_COSTS.gemm_s / 20,
    cholesky_s=CPU_COSTS.cholesky_s / 10,
    eigen_s=CPU_COSTS.eigen_s / 5,
    conv_s=CPU_COSTS.conv_s / 50,
    scatter_s=CPU_COSTS.scatter_s / 20,
    pair_s=5e-5,
    block_s=1e-6,
)


def device_costs(device: torch.device) -> DeviceCosts:
    return CUDA_COSTS if torch.device(device).type == "cuda" else CPU_COSTS


@dataclass(frozen=True)
class ConvShape:
    """What the cost of a (forward) convolution depends on."""

    c_out: int
    c_in_g: int
    groups: int
    kernel: tuple[int, ...]
    spatial: tuple[int, ...]
    pads: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def outputs(self) -> tuple[int, ...]:
        n = len(self.spatial)
        return tuple(
            (self.spatial[i] + self.pads[i] + self.pads[n + i] - self.dilations[i] * (self.kernel[i] - 1) - 1)
            // self.strides[i]
            + 1
            for i in range(n)
        )

    @property
    def conv_flops(self) -> int:
        """Flops of one forward pass on one input."""
        return 2 * self.c_out * self.c_in_g * self.taps * math.prod(self.outputs)

    @property
    def input_side(self) -> int:
        return self.c_in_g * math.prod(self.spatial)

    @property
    def output_side(self) -> int:
        return (self.c_out // self.groups) * math.prod(self.outputs)

    @property
    def gram_on_input(self) -> bool:
        return self.input_side <= self.output_side

    @property
    def gram_side(self) -> int:
        """n: the materialised Gram matrix's side, per group."""
        return min(self.input_side, self.output_side)

    def gram_work(self) -> tuple[int, int, int]:
        """(distinct tap pairs, block additions, reads) of conv_gram.ConvGram on the smaller side.

        Whether a read lands inside the input is decided axis by axis, so the counts are
        products over the axes of the same counts in 1-D (conv_gram's module docstring).
        """
        pairs, scatters, count = 1, 1, 1
        n = len(self.spatial)
        for i in range(n):
            k, s, d, size, out = self.kernel[i], self.strides[i], self.dilations[i], self.spatial[i], self.outputs[i]
            reads = [(j, t, j * s + d * t - self.pads[i]) for j in range(out) for t in range(k)]
            reads = [(j, t, p) for j, t, p in reads if 0 <= p < size]
            key = 0 if self.gram_on_input else 2  # share the output j, or the input p
            groups: dict[int, list[int]] = {}
            for read in reads:
                groups.setdefault(read[key], []).append(read[1])
            scatters *= sum(len(taps) ** 2 for taps in groups.values())
            pairs *= len({(a, b) for taps in groups.values() for a in taps for b in taps})
            count *= len(reads)
        return pairs, scatters, count


def tap_pair_seconds(
    *, groups: int, taps: int, pairs: int, scatters: int, channels: int, long: int, costs: DeviceCosts
) -> float:
    """Predicted seconds to assemble a convolution's Gram matrices from its tap pairs
    (conv_gram.ConvGram.gram: a product per pair, then one indexed add per pair, which dominates
    when a large kernel covers a small grid); ``channels`` on the Gram's side, ``long`` the other's."""
    products = taps**2 if 4 * pairs >= taps**2 else pairs  # conv_gram: one GEMM for all pairs
    build = groups * (products * 2 * long * channels**2 * costs.gemm_s + scatters * channels**2 * costs.scatter_s)
    return build + pairs * costs.pair_s


def operator_matrix_seconds(
    *, groups: int, reads: int, channels: int, long: int, side: int, other: int, costs: DeviceCosts
) -> float | None:
    """Predicted seconds to assemble them by writing the operator's matrix (one kernel block per
    read) and one GEMM, per group of side ``side`` = channels·positions and ``other`` = long·positions;
    None when the matrix is over OPERATOR_BYTES."""
    if 8 * groups * side * other > OPERATOR_BYTES:
        return None
    return groups * (reads * long * channels * costs.scatter_s + 2 * side * side * other * costs.gemm_s)


def embedding_seconds(shape: ConvShape, kernel: PolyphaseKernel, costs: DeviceCosts, *, estimate: bool) -> float:
    """Predicted seconds of the embedding's branch and bound (plus the warm estimate)."""
    m, n = kernel.block_shape
    side, long = min(m, n), max(m, n)
    scale = 1 if kernel.is_real else 4
    profile = min(kernel.gram_flops())
    survivors = min(kernel.count, costs.survivors)
    candidates = min(kernel.count, _CANDIDATES)
    certify = scale * (
        survivors * (side**3 / 3 + 2 * side * side * long) + candidates * _LANCZOS_STEPS * 2 * side * side
    )
    seconds = costs.call_s + (profile + certify) * costs.gemm_s + kernel.count * costs.block_s
    if estimate:
        seconds += _WARM_PASSES * shape.conv_flops * costs.conv_s
    return seconds


def materialized_seconds(shape: ConvShape, costs: DeviceCosts) -> float | None:
    """Predicted seconds of the materialised operator's certificate; None when its Gram matrix is
    over the device's memory allowance."""
    n, g = shape.gram_side, shape.groups
    if 8 * n * n > costs.gram_bytes:
        return None
    channels, long = (shape.c_in_g, shape.c_out // g) if shape.gram_on_input else (shape.c_out // g, shape.c_in_g)
    pairs, scatters, _ = shape.gram_work()
    # The tap pairs' assembly, even where conv_gram writes the operator's matrix instead (faster on
    # a large kernel over a small grid): an upper estimate that keeps every plan, and so every
    # figure, as it was before that path existed.
    build = tap_pair_seconds(
        groups=g, taps=shape.taps, pairs=pairs, scatters=scatters, channels=channels, long=long, costs=costs
    )
    if uses_eigensolver(g, n):
        certify = g * n**3 * costs.eigen_s
    else:
        certify = g * (n**3 / 3 * costs.cholesky_s + 2 * _LANCZOS_STEPS / 4 * n * n * costs.gemm_s)
        certify += 2 * OPERATOR_LANCZOS_STEPS * shape.conv_flops * costs.conv_s
    return costs.call_s + build + certify


def operator_gram_seconds(n: int, costs: DeviceCosts) -> float:
    """Predicted seconds to certify an n×n Gram matrix built from basis vectors (a cheap operator,
    such as one channel of an average pool): the basis passes move ~8 arrays of n² numbers, then
    the eigensolver or one Cholesky factorisation."""
    if 8 * n * n > costs.gram_bytes:
        return math.inf
    certify = n**3 * costs.eigen_s if uses_eigensolver(1, n) else n**3 / 3 * costs.cholesky_s
    return costs.call_s + 8 * n * n * costs.scatter_s + certify


def predicted_gap(shape: ConvShape) -> float:
    """A rough forecast of how far the circulant embedding's norm lands above the true operator's.

    The loss is at the borders: a plane wave, the circulant's top singular vector, loses to the
    zero padding a share that grows like (span / input size)² per axis.  Fitted on Kaiming-normal
    kernels (3×3 to 7×7, inputs 4–32, strides 1–2, dilation 1–2): gap / Σ_i ((span_i − 1)/H_i)²
    was 0.12–0.29 with many channels per group and 0.53–0.64 for depthwise kernels; the
    coefficient below stays at or above those.  Only used to skip an embedding that would be
    too loose anyway; the measured gap decides everything else.
    """
    spread = sum((d * (k - 1) / h) ** 2 for k, d, h in zip(shape.kernel, shape.dilations, shape.spatial))
    channels = min(shape.c_in_g, shape.c_out // shape.groups)
    return (0.3 + 0.35 / channels) * spread


# The forecast skips the embedding only when it is this many times over the target: the measured
# gap was 0.4–1 times the forecast, and a wrong skip costs a materialisation (up to seconds)
# where running the embedding first costs milliseconds.
FORECAST_MARGIN = 3.0


@dataclass(frozen=True)
class Plan:
    """What 'auto' does with one convolution, and why."""

    embedding_s: float
    materialized_s: float | None  # None: over the memory allowance
    gap: float  # predicted_gap
    materialize_first: bool
    may_tighten: bool  # materialise after the embedding if its measured gap is over the target

    def describe(self, costs: DeviceCosts) -> str:
        materialized = (
            f"~{format_seconds(self.materialized_s)}"
            if self.materialized_s is not None
            else "over the memory allowance"
        )
        return (
            f"cost model ({costs.name}{'' if costs.calibrated else ', uncalibrated'}): embedding "
            f"~{format_seconds(self.embedding_s)} (forecast gap {self.gap:.1%}), materialized {materialized}"
        )


def plan(
    shape: ConvShape,
    kernel: PolyphaseKernel,
    costs: DeviceCosts,
    *,
    target: float,
    estimate: bool,
    budget: float | None = None,
) -> Plan:
    """Materialise first when that is predicted no slower than the embedding (within ``tie_s``),
    cheap in absolute terms (``exact_floor_s``) while the embedding is not exact by construction
    (a forecast gap of 0: 1×1 kernels, disjoint windows), or when the embedding is forecast far
    too loose (FORECAST_MARGIN) and the exact test fits ``budget`` (default: the tightening
    budget); else the embedding, tightened afterwards if its measured gap asks for it and the
    budget allows."""
    embedding_s = embedding_seconds(shape, kernel, costs, estimate=estimate)
    materialized_s = materialized_seconds(shape, costs)
    gap = predicted_gap(shape)
    budget = costs.tighten_budget_s if budget is None else budget
    affordable = materialized_s is not None and materialized_s <= budget
    first = materialized_s is not None and (
        materialized_s <= embedding_s + costs.tie_s
        or (gap > 0 and materialized_s <= costs.exact_floor_s)
        or (affordable and gap > FORECAST_MARGIN * target)
    )
    return Plan(embedding_s, materialized_s, gap, first, affordable)


def format_seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
