"""ℓ2 operator norms of N-d convolutions, transposed convolutions and average pooling.

A convolution's norm depends on the input size, padding, stride, dilation and groups, so every
figure here is for the operator at a given input size (docs/design.md, "Convolutions").  Layouts follow ONNX:
Conv weight (C_out, C_in/g, *k), ConvTranspose weight (C_in, C_out/g, *k), pads
(begin_1..begin_N, end_1..end_N).  Bias is an affine offset and never matters.  A ConvTranspose
is measured as the Conv it is the adjoint of (``adjoint_conv_geometry``: same norm, exactly).

Two certified figures, chosen per layer by a cost model (cost.py) for 'auto':

* the circulant embedding that keeps the stride (blocks.py: the zero-padded convolution embeds
  with no wrap-around in an N-periodic one with s | N, whose polyphase frequency blocks give its
  norm exactly), computed over the blocks by bnb.py.  ``method`` '<embedding>-<figure>':
    embedding  fft        stride 1: the kernel's DFT blocks, C_out × C_in/g (Sedghi et al. 2019);
               polyphase  stride > 1: polyphase blocks C_out × C_in/g·s^D (Senderovich et al. 2022),
                          exact for the strided circulant, so the stride is not thrown away;
               kmat       every frequency gives the same block (1×1 kernels, stride ≥ kernel span):
                          no FFT, the reshaped kernel's norm, once;
    figure     bnb        'auto': branch and bound over the blocks, within BNB_TOL of 'exact';
               exact      every block through a Hermitian eigensolver;
               gram       Gram iteration per block (blocks leave once below the lower estimate);
               frobenius  Frobenius norm per block (loose).
  The circulant's norm can exceed the zero-padded operator's by a lot on small inputs (cost.py
  has the figures): the operator is a compression of it.
* ``materialized``: the true operator's Gram matrix, from the kernel's tap pairs (conv_gram.py),
  certified by an eigensolver or Lanczos + Cholesky (materialize.py): within ~1e-8 of the truth.

'auto' follows cost.plan: the materialised operator when it is predicted no slower, cheap in
absolute terms, or needed because the embedding is forecast too loose (and it fits the tightening
budget); else the embedding, and when its ``gap`` to the lower estimate exceeds ``target``
(AUTO_TARGET, 0.5 %), the materialised operator as well if that fits the budget, keeping the
smaller certified figure.  Plus: power (power iteration on the true operator: an estimate from
below, not certified) and, for average pooling with partial windows, schur.

``estimate`` is Lanczos on the true operator, started from the embedding's top singular vector
(a plane wave cropped to the input), so a dozen steps suffice; ``gap`` = value / estimate − 1
bounds how far the certified figure can be from the truth.  ``seconds`` is the wall time spent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import PolyphaseKernel
from .bnb import BNB_TOL, max_singular_value
from .conv_gram import ConvGram
from .conv_operator import (
    _CONV,
    ConvOperator,
    _torch_pad,
    adjoint_conv_geometry,
    block_source,
    circulant_norm,
    circulant_sizes,
    conv_operator,
    group_kernel_matrices,
    kmat_multiplicity_bound,
    window_multiplicity,
)
from .cost import (
    CPU_COSTS,
    FORECAST_MARGIN,
    OPERATOR_LANCZOS_STEPS,
    OPERATOR_LANCZOS_TOL,
    ConvShape,
    DeviceCosts,
    device_costs,
    format_seconds,
    materialized_seconds,
    operator_gram_seconds,
    plan,
    predicted_gap,
    uses_eigensolver,
)
from .dense import DENSE_METHODS, SVD_MARGIN, _gap, as_float64
from .device import one_thread
from .geometry import transposed_size, window_count
from .materialize import gram_norm, materialized_norm
from .power import forward_and_adjoint, lanczos_operator, power_iteration
from .result import NormResult
from .scaling import rescaled, scale_of

# Re-exported: callers and tests import them from here.
__all__ = [
    "AUTO_TARGET",
    "CONV_METHODS",
    "ConvOperator",
    "adjoint_conv_geometry",
    "avgpool_norm",
    "circulant_norm",
    "circulant_sizes",
    "conv_norm",
    "conv_operator",
    "kmat_multiplicity_bound",
    "predicted_seconds",
    "window_multiplicity",
]

CONV_METHODS = DENSE_METHODS  # the same names as for dense layers
# 'auto' never settles for a figure more than this far above its lower estimate when a tighter
# certified method fits the tightening budget.
AUTO_TARGET = 0.005
POWER_ITERATIONS = 50
# Lanczos on the true operator from the embedding's top singular vector, for the estimate: at
# most this many steps (each one forward and one adjoint), fewer once the Ritz value settles.
WARM_STEPS = 12
WARM_TOL = 1e-6
# Below this many flops per pass, Lanczos steps (and the whole embedding, when predicted cheaper
# than SMALL_WORK_S) run on one thread (device.one_thread says why).
SMALL_PASS_FLOPS = 2e8
SMALL_WORK_S = 0.1
# An embedding whose gap is above the target by at most this factor first gets a longer Lanczos
# run for a sharper estimate: the gap is measured against the estimate, not the truth.
REFINE_BELOW = 2.0
REFINE_STEPS = 24
_FIGURES = {"auto": "bnb", "exact": "exact", "gram": "gram", "frobenius": "frobenius"}


@dataclass
class _Layer:
    """One forward convolution (ONNX Conv semantics) at one input size, float64."""

    weight: Tensor
    spatial: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    groups: int

    @cached_property
    def operator(self) -> ConvOperator:
        return self._operator(self.weight)

    @cached_property
    def fast_operator(self) -> ConvOperator:
        """The same operator in float32, for Lanczos steps (several times faster on a CPU)."""
        return self._operator(self.weight.to(torch.float32))

    def _operator(self, weight: Tensor) -> ConvOperator:
        return conv_operator(
            weight, self.spatial, strides=self.strides, pads=self.pads, dilations=self.dilations, groups=self.groups
        )

    @cached_property
    def shape(self) -> ConvShape:
        return ConvShape(
            self.weight.shape[0],
            self.weight.shape[1],
            self.groups,
            tuple(self.weight.shape[2:]),
            self.spatial,
            self.pads,
            self.strides,
            self.dilations,
        )

    @cached_property
    def polyphase(self) -> PolyphaseKernel:
        return PolyphaseKernel.from_conv(
            self.weight, self.spatial, self.pads, self.strides, self.dilations, self.groups
        )

    @property
    def smaller_side(self) -> int:
        """min(input dimension, output dimension) over all channels (the old materialisation test)."""
        return min(math.prod(self.operator.input_shape), math.prod(self.operator.output_shape))


def predicted_seconds(
    weight_shape: tuple[int, ...],
    spatial: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    groups: int = 1,
    *,
    target: float = AUTO_TARGET,
) -> float:
    """The seconds conv_norm's 'auto' is predicted to spend on the materialised operator of a
    forward convolution (no dilation) of this shape, where the plan takes it first because the
    embedding is forecast too loose or because it is cheap in absolute terms; 0 where the plan
    starts with the embedding (whose cost needs the kernel's block structure, too dear to build for
    every candidate).  The CPU table of the cost model (cost.py) whatever the device, so that a
    work budget counted in it selects the same work everywhere; from the shapes alone.  A
    tightening after the embedding depends on the gap it measures, which no shape forecasts: it
    is not counted."""
    d = len(spatial)
    shape = ConvShape(
        weight_shape[0],
        weight_shape[1],
        groups,
        tuple(weight_shape[2:]),
        tuple(spatial),
        tuple(pads),
        tuple(strides),
        (1,) * d,
    )
    costs = CPU_COSTS
    materialized = materialized_seconds(shape, costs)
    if materialized is None:
        return 0.0
    gap = predicted_gap(shape)
    first = (gap > 0 and materialized <= costs.exact_floor_s) or (
        materialized <= costs.tighten_budget_s and gap > FORECAST_MARGIN * target
    )
    return materialized if first else 0.0


def conv_norm(weight, input_spatial: tuple[int, ...], **settings) -> NormResult:
    """ℓ2 operator norm of an N-d Conv / ConvTranspose at the given input size: see _unit_conv_norm.

    Measured on the kernel divided by a power of two near its largest entry (exact), and scaled
    back: the squares of a kernel of 1e-160 or 1e200 would leave float64's range."""
    scale = scale_of(weight)
    if scale == 1.0:
        return _unit_conv_norm(weight, input_spatial, **settings)
    return rescaled(_unit_conv_norm(weight / scale, input_spatial, **settings), scale)


def _unit_conv_norm(
    weight,
    input_spatial: tuple[int, ...],
    *,
    strides,
    pads,
    dilations,
    groups: int = 1,
    transposed: bool = False,
    output_padding=None,
    method: str = "auto",
    device: torch.device = torch.device("cpu"),
    materialize_limit: int | None = None,
    power_iterations: int = POWER_ITERATIONS,
    tol: float = BNB_TOL,
    target: float = AUTO_TARGET,
    costs: DeviceCosts | None = None,
) -> NormResult:
    """ℓ2 operator norm of an N-d Conv / ConvTranspose at the given input size (N = 1, 2, 3).

    method 'auto': the cost model's choice (module docstring); certified, and within ``target``
    of the truth whenever a tighter method fits the budget (``notes`` say when not).  'exact':
    'materialized' (within ``tol`` of the true norm) when predicted under the device's exact
    budget, else the embedding with every block through the eigensolver.  'gram' and 'frobenius'
    bound the embedding's blocks more cheaply; 'power' is power iteration on the operator (not
    certified).  ``materialize_limit``: instead of the cost model, materialise exactly when
    min(input, output dimension) ≤ it (0: never).  ``costs``: the cost table (default: the
    device's, cost.py).

    ``estimate``: a lower estimate on the true operator — Lanczos from the embedding's top singular
    vector, at most min(``power_iterations``, WARM_STEPS) steps (0 skips it); for 'power', power
    iteration from a random start.  ``gap`` = value / estimate − 1.
    ``frobenius``: √multiplicity · max_g ‖K_g‖_F, a cheap certified figure for any input size.
    """
    started = time.perf_counter()
    if method not in CONV_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(CONV_METHODS)}")
    device = torch.device(device)
    w = as_float64(weight, device)
    spatial, strides, pads, dilations, output_padding = _check_conv_arguments(
        w, input_spatial, strides, pads, dilations, groups, transposed, output_padding
    )
    mult = window_multiplicity(w.shape[2:], strides, dilations)
    frobenius = (
        math.sqrt(mult)
        * float(torch.linalg.matrix_norm(group_kernel_matrices(w, groups), ord="fro").max())
        * SVD_MARGIN
    )
    if transposed:
        geometry = adjoint_conv_geometry(spatial, pads, output_padding, w.shape[2:], strides, dilations)
        if geometry is None:
            return NormResult(
                0.0,
                "materialized",
                True,
                estimate=0.0,
                frobenius=frobenius,
                gap=0.0,
                notes=["every output is output padding: the zero map"],
                seconds=time.perf_counter() - started,
            )
        spatial, pads = geometry
    layer = _Layer(w, spatial, strides, pads, dilations, groups)
    if method == "power":
        estimate = _operator_power(layer.operator, device, max(1, power_iterations))
        result = NormResult(estimate, "power", False, estimate=estimate, frobenius=frobenius)
    else:
        with one_thread(small=False):  # one thread only if other processes share the cores
            result = _certified(
                layer, method, costs or device_costs(device), materialize_limit, power_iterations, tol, target
            )
        result.frobenius = frobenius
    result.seconds = time.perf_counter() - started
    return result


def _certified(
    layer: _Layer, method: str, costs: DeviceCosts, limit: int | None, steps: int, tol: float, target: float
) -> NormResult:
    """The certified methods: the cost model's plan, then the measurement (and the tightening)."""
    if method in ("gram", "frobenius"):
        return _embedding(layer, _FIGURES[method], tol, steps)[0]
    budget = costs.exact_budget_s if method == "exact" else None
    chosen = plan(layer.shape, layer.polyphase, costs, target=target, estimate=steps > 0, budget=budget)
    if limit is not None:  # the caller's size limit instead of the cost model (memory still rules)
        fits = chosen.materialized_s is not None and layer.smaller_side <= limit
        chosen = replace(chosen, materialize_first=fits, may_tighten=False)
    if method == "exact":
        exact = chosen.materialize_first or chosen.may_tighten if limit is None else chosen.materialize_first
        result = _materialized(layer, tol, steps, None) if exact else _embedding(layer, "exact", tol, steps)[0]
        result.notes.insert(0, chosen.describe(costs))
        return result
    if chosen.materialize_first:
        result = _materialized(layer, tol, steps, None)
        result.notes.insert(0, chosen.describe(costs))
        return result
    with one_thread(chosen.embedding_s < SMALL_WORK_S):
        result, vector = _embedding(layer, "bnb", tol, steps)
    result.notes.insert(0, chosen.describe(costs))
    if result.gap is not None and target < result.gap <= REFINE_BELOW * target:
        # Just above the target: the dozen warm steps may have stopped short (they leave ~0.05 %
        # on 16×16 layers); a longer Lanczos run costs a few dozen passes, far less than the
        # materialised operator.
        estimate, refined = _lanczos_estimate(layer, vector, REFINE_STEPS, OPERATOR_LANCZOS_TOL)
        assert result.estimate is not None  # the gap is measured against it
        if estimate > result.estimate:
            result.estimate, vector = estimate, refined
            result.gap = _gap(result.value, estimate)
            result.notes.append(f"estimate refined by {REFINE_STEPS} more Lanczos steps")
    if result.gap is None or result.gap <= target:
        return result
    looseness = f"the {result.method} figure is {result.gap:.2%} above its lower estimate (target {target:.2%})"
    if not chosen.may_tighten:
        why = (
            "over the memory allowance"
            if chosen.materialized_s is None
            else (
                f"predicted {format_seconds(chosen.materialized_s)}, over the "
                f"{format_seconds(costs.tighten_budget_s)} budget"
            )
        )
        result.notes.append(f"{looseness}; the materialised operator was not tried: {why}")
        return result
    tighter = _materialized(layer, tol, steps, vector)
    if tighter.value >= result.value:
        result.notes.append(f"{looseness}; the materialised operator was no tighter ({tighter.value:.6g})")
        return result
    tighter.notes = [
        result.notes[0],
        f"{looseness} ({result.notes[1]}): measured the materialised operator",
        *tighter.notes,
    ]
    return tighter


def _embedding(layer: _Layer, figure: str, tol: float, steps: int) -> tuple[NormResult, Tensor | None]:
    """The circulant embedding's bound (and the estimate's Ritz vector, for a later start)."""
    kernel = layer.polyphase
    found = max_singular_value(block_source(kernel), figure, tol=tol)
    # "kmat": one block for every frequency, so no FFT and one dense norm.  For a 1×1 kernel with
    # stride 1 the operator is W applied at every pixel (I ⊗ W), norm ‖W‖₂ exactly; padding only
    # adds output pixels that read zeros.  With a stride the kept pixels are a subset: S·(I ⊗ W)
    # with S a coordinate projection, so the norm is ≤ ‖W‖₂ (= as soon as one output pixel reads
    # the input).  Likewise for any kernel with stride ≥ its dilated span: disjoint windows.
    embedding = "kmat" if kernel.is_real else ("polyphase" if any(s > 1 for s in layer.strides) else "fft")
    notes = [
        f"{embedding} embedding: period {'x'.join(map(str, kernel.periods))}, {kernel.count} block(s) of "
        f"{kernel.block_shape[0]}x{kernel.block_shape[1]}; {found.summary()}"
    ]
    estimate, vector = None, None
    if steps > 0:
        start = None
        if found.argmax is not None and found.vector is not None:
            start = kernel.plane_wave(found.argmax, found.vector, layer.spatial, layer.pads, layer.strides)
        estimate, vector = _lanczos_estimate(layer, start, min(steps, WARM_STEPS))
    return NormResult(
        found.upper, f"{embedding}-{figure}", True, estimate=estimate, notes=notes, gap=_gap(found.upper, estimate)
    ), vector


def _materialized(layer: _Layer, tol: float, steps: int, start: Tensor | None) -> NormResult:
    """The true operator's norm from its Gram matrix (within ``tol``), started from ``start`` when
    the Gram matrix is too large for the eigensolver."""
    gram = ConvGram.build(layer.weight, layer.spatial, layer.pads, layer.strides, layer.dilations, layer.groups)
    side = "input" if gram.on_input else "output"
    estimate = None
    if not uses_eigensolver(gram.groups, gram.side):  # the certificate needs a sharp estimate
        estimate, _ = _lanczos_estimate(layer, start, max(steps, OPERATOR_LANCZOS_STEPS), OPERATOR_LANCZOS_TOL)
    found = gram_norm(gram.source(), tol=tol, estimate=estimate)
    estimate = found.lower if estimate is None else max(estimate, found.lower)
    notes = [
        f"materialized on the {side} side: {gram.groups} Gram matrix(es) of side {gram.side} from "
        f"{gram.tap_pairs.shape[0]} tap pairs",
        *found.notes,
    ]
    return NormResult(
        found.upper, "materialized", True, estimate=estimate, notes=notes, gap=_gap(found.upper, estimate)
    )


def _lanczos_estimate(layer: _Layer, start: Tensor | None, steps: int, tol: float = WARM_TOL) -> tuple[float, Tensor]:
    """Lower estimate of the true operator's norm: Lanczos from ``start`` (random when None),
    then ‖A v‖/‖v‖ for the Ritz vector v; returns (estimate, v).

    The Lanczos steps run in float32 (several times faster on a CPU); the figure returned is
    evaluated in float64, so it never exceeds ‖A‖ beyond float64 rounding.
    """
    fast, operator = layer.fast_operator, layer.operator
    if start is None or float(torch.linalg.vector_norm(start)) == 0.0:
        generator = torch.Generator(device="cpu").manual_seed(0)
        start = torch.randn(operator.input_shape, generator=generator, dtype=torch.float64).to(layer.weight.device)
    with one_thread(layer.shape.conv_flops < SMALL_PASS_FLOPS):
        v = lanczos_operator(
            fast.forward,
            start.to(torch.float32)[None],
            steps=steps,
            tol=tol,
            adjoint=fast.adjoint,
            check_every=1 if steps <= WARM_STEPS else 4,
        )
    v = v.to(torch.float64)
    with torch.no_grad():
        estimate = float(torch.linalg.vector_norm(operator.forward(v)) / torch.linalg.vector_norm(v))
    return estimate, v[0]


def avgpool_norm(
    kernel: tuple[int, ...],
    input_spatial,
    *,
    strides,
    pads,
    count_include_pad: bool,
    channels: int,
    ceil_mode: bool = False,
    method: str = "auto",
    device: torch.device = torch.device("cpu"),
    dilations=None,
    materialize_limit: int | None = None,
    power_iterations: int = POWER_ITERATIONS,
    costs: DeviceCosts | None = None,
) -> NormResult:
    """ℓ2 norm of AveragePool as a linear operator (ONNX attributes; torch's ceil_mode rule).

    Every channel is pooled the same way and independently, so the norm is that of one channel
    (``channels`` only has to be positive).  When every window has the full divisor Πk the
    operator is a convolution with the uniform kernel 1/Πk and conv_norm measures it.  Otherwise
    (count_include_pad=0 at the borders, or ceil_mode's partial windows) the operator is
    materialized when the cost model affords it (or its smaller side is ≤ ``materialize_limit``),
    else bounded by Schur's test: ‖A‖₂ ≤ √(max row sum · max column sum) of |A|, computed on the
    true operator (method 'schur').
    """
    started = time.perf_counter()
    if method not in CONV_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(CONV_METHODS)}")
    if channels < 1:
        raise ValueError(f"AveragePool needs at least one channel, got {channels}")
    device = torch.device(device)
    costs = costs or device_costs(device)
    kernel, spatial = tuple(int(k) for k in kernel), tuple(int(h) for h in input_spatial)
    n = len(kernel)
    dilations = (1,) * n if dilations is None else tuple(int(d) for d in dilations)
    strides, pads = tuple(int(s) for s in strides), tuple(int(p) for p in pads)
    if len(spatial) != n or len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
        raise ValueError(
            f"AveragePool attributes disagree in rank: kernel {kernel}, input {spatial}, "
            f"strides {strides}, dilations {dilations}, pads {pads}"
        )
    operator, divisors = _avgpool_operator(
        kernel, spatial, strides, pads, dilations, count_include_pad, ceil_mode, device
    )
    window = math.prod(kernel)
    if bool((divisors == window).all()):
        uniform = torch.full((1, 1, *kernel), 1.0 / window, dtype=torch.float64, device=device)
        return conv_norm(
            uniform,
            spatial,
            strides=strides,
            pads=pads,
            dilations=dilations,
            method=method,
            device=device,
            materialize_limit=materialize_limit,
            power_iterations=power_iterations,
            costs=costs,
        )

    notes = ["border windows average fewer cells, so the pool is not a plain convolution"]
    if method == "power":
        power_value = _operator_power(operator, device, max(1, power_iterations))
        return NormResult(
            power_value, "power", False, estimate=power_value, notes=notes, seconds=time.perf_counter() - started
        )
    side = min(math.prod(operator.input_shape), math.prod(operator.output_shape))
    predicted = operator_gram_seconds(side, costs)
    budget = costs.exact_budget_s if method == "exact" else costs.tighten_budget_s
    small = side <= materialize_limit if materialize_limit is not None else predicted <= budget
    if method in ("auto", "exact") and small:
        found = materialized_norm(operator.forward, operator.input_shape, operator.output_shape, device=device)
        return NormResult(
            found.upper,
            "materialized",
            True,
            estimate=found.lower,
            notes=notes + found.notes,
            gap=_gap(found.upper, found.lower),
            seconds=time.perf_counter() - started,
        )
    estimate = _operator_power(operator, device, power_iterations) if power_iterations > 0 else None
    # All entries of the operator are ≥ 0, so A·1 and Aᵀ·1 are exactly the row and column sums of |A|.
    ones_in = torch.ones((1, *operator.input_shape), dtype=torch.float64, device=device)
    ones_out = torch.ones((1, *operator.output_shape), dtype=torch.float64, device=device)
    row_sums, column_sums = forward_and_adjoint(operator.forward, ones_in, ones_out)
    value = math.sqrt(float(row_sums.max()) * float(column_sums.max())) * SVD_MARGIN
    return NormResult(
        value,
        "schur",
        True,
        estimate=estimate,
        notes=notes,
        gap=_gap(value, estimate),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def avgpool_layout(kernel, spatial, strides, pads, dilations, count_include_pad, ceil_mode, device="cpu"):
    """AveragePool's geometry on one channel: (output sizes, end paddings extended to the last
    window, cells counted by each output window).

    Output count per dimension follows torch (and onnxruntime): floor, or with ceil_mode one more
    partial window unless it would start past the input and the begin padding.  Each output is
    the window's sum over the zero-padded input divided by the number of cells it covers among
    the counted ones: the real input cells, or with count_include_pad the padded region too
    (never the cells a ceil_mode window hangs out past the padding).
    """
    n = len(kernel)
    outs, extended_ends = [], []
    for i in range(n):
        span = dilations[i] * (kernel[i] - 1) + 1
        room = spatial[i] + pads[i] + pads[n + i] - span
        if room < 0:
            raise ValueError(
                f"AveragePool window {span} is larger than the padded input "
                f"{spatial[i] + pads[i] + pads[n + i]} along spatial axis {i}"
            )
        out = window_count(spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i], ceil_mode)
        outs.append(out)
        extended_ends.append(max(pads[n + i], (out - 1) * strides[i] + span - spatial[i] - pads[i]))
    begins = pads[:n]
    counted = torch.zeros(
        (1, 1, *(h + b + e for h, b, e in zip(spatial, begins, extended_ends))), dtype=torch.float64, device=device
    )
    region = [slice(None), slice(None)]
    for i in range(n):
        first = 0 if count_include_pad else begins[i]
        last = spatial[i] + begins[i] + (pads[n + i] if count_include_pad else 0)
        region.append(slice(first, last))
    counted[tuple(region)] = 1.0
    ones = torch.ones((1, 1, *kernel), dtype=torch.float64, device=device)
    divisors = _CONV[n](counted, ones, stride=strides, dilation=dilations)
    return tuple(outs), tuple(extended_ends), divisors[(slice(None), slice(None), *(slice(0, o) for o in outs))]


def _avgpool_operator(kernel, spatial, strides, pads, dilations, count_include_pad, ceil_mode, device):
    """One channel of AveragePool as (operator, divisor per output): avgpool_layout's geometry."""
    n = len(kernel)
    outs, extended_ends, divisors = avgpool_layout(
        kernel, spatial, strides, pads, dilations, count_include_pad, ceil_mode, device
    )
    padding = _torch_pad(pads[:n], extended_ends)
    ones = torch.ones((1, 1, *kernel), dtype=torch.float64, device=device)
    conv = _CONV[n]

    def window_sums(padded: Tensor) -> Tensor:
        sums = conv(padded, ones, stride=strides, dilation=dilations)
        return sums[(slice(None), slice(None), *(slice(0, o) for o in outs))]

    # A window with nothing counted sums only padding zeros; dividing by 1 keeps that output 0.
    safe = divisors.clamp(min=1.0)

    def forward(x: Tensor) -> Tensor:
        return window_sums(F.pad(x, padding)) / safe

    return ConvOperator(forward, (1, *spatial), (1, *outs)), divisors


def _check_conv_arguments(w, input_spatial, strides, pads, dilations, groups, transposed, output_padding):
    n = w.ndim - 2
    if n not in (1, 2, 3):
        raise ValueError(f"convolution weight must have 3 to 5 dimensions, got shape {tuple(w.shape)}")
    spatial = tuple(int(h) for h in input_spatial)
    strides, dilations = tuple(int(s) for s in strides), tuple(int(d) for d in dilations)
    pads = tuple(int(p) for p in pads)
    output_padding = (0,) * n if output_padding is None else tuple(int(p) for p in output_padding)
    if len(spatial) != n or len(strides) != n or len(dilations) != n or len(pads) != 2 * n or len(output_padding) != n:
        raise ValueError(
            f"{n}-d convolution needs {n} input sizes, strides, dilations and output paddings and "
            f"{2 * n} pads; got input {spatial}, strides {strides}, dilations {dilations}, "
            f"pads {pads}, output_padding {output_padding}"
        )
    if min(strides + dilations) < 1 or min(spatial) < 1 or groups < 1:
        raise ValueError("input sizes, strides, dilations and groups must be positive")
    if w.shape[0] % groups:
        raise ValueError(f"weight dimension 0 ({w.shape[0]}) is not divisible by groups={groups}")
    for i in range(n):
        span = dilations[i] * (w.shape[2 + i] - 1) + 1
        k = w.shape[2 + i]
        if transposed:
            size = transposed_size(spatial[i], pads[i], pads[n + i], k, strides[i], dilations[i], output_padding[i])
        else:
            size = window_count(spatial[i], pads[i], pads[n + i], k, strides[i], dilations[i])
        if size < 1:
            raise ValueError(
                f"the convolution has no output along spatial axis {i} "
                f"(input {spatial[i]}, kernel span {span}, pads {pads[i]}/{pads[n + i]})"
            )
    return spatial, strides, pads, dilations, output_padding


def _operator_power(operator: ConvOperator, device: torch.device, iterations: int) -> float:
    return power_iteration(operator.forward, (1, *operator.input_shape), iterations=iterations, device=device)
