"""The pipeline: load → rewrite → verify → analyse → compose → report.

The layers' factors may be measured ahead of compose by an executor (``--workers``, ``--ray``):
compose then only propagates them, and the report is the same. A model whose external data is
larger than ``in_memory_limit`` is read memory-mapped: its layers are measured one at a time, and
its runtime probe runs one node at a time; it then gets the same checks (runtime shapes,
verification, recursion, lower bound) as a model read whole, so the figure never depends on the limit.
With ``input_range`` the figure is a local bound on that box of inputs, and the report says so.
With ``bound="recursion"`` (the default) the product of the factors is then tightened by the
slope-restricted recursion over the graph (lipaudit.tight), which also bounds each residual branch;
on a domain, the figure is then the lower of that and the interval-Jacobian bound (lipaudit.domain.jacobian).

Every figure is a function of the file, the settings and the version: the recursion spends a budget
of work counted in its cost model's operations, the lower-bound search a fixed number of samples
and steps.  A wall-clock limit (``recursion_time``, ``lower_bound_time``) is used only on request;
the report then says ``reproducible: false`` and why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .compose import NetworkBound, compose
from .domain import Domain, box_lower_bound, prepare_domain
from .errors import ContradictionError, ExecutionError, UsageError
from .execute.empirical_lower_bound import LowerBound, empirical_lower_bound
from .execute.verify import AUTO_MAX_PARAMETERS, apply_executed_shapes, confirm_unconfirmed_shapes
from .execute.verify import verify as run_verification
from .ir import Graph, Node
from .load import LoadedModel, load_model
from .load.onnx import external_data_bytes
from .load.probe import graph_feeds
from .ops import RuleContext
from .options import AuditOptions
from .passes import run_passes
from .report import Report, Verification, build_report, skipped
from .shapes import parse_input_shapes
from .spectral.device import exact_cuda_math, resolve_device
from .tight.graph_bound import GraphBound, NotMappable, tighten

if TYPE_CHECKING:
    from .parallel.jobs import Executor

ProgressFn = Callable[[int, int, Node], None]
# A lower bound above the upper bound by more than this (relative) is a contradiction: the lower
# bound is a ratio evaluated in float64 at separations far above rounding, so its own error is
# orders of magnitude below this.
CONTRADICTION_SLACK = 1e-9


def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


class _Clock:
    """Seconds spent in each stage, for the report's timings."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[f"{stage}_s"] = round(now - self.last, 4)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total_s": round(time.perf_counter() - self.started, 4)}


def audit(
    path: str,
    options: AuditOptions | None = None,
    *,
    on_node: ProgressFn | None = None,
    on_stage: Callable[[str], None] | None = None,
    executor: Executor | None = None,
    **fields: Any,
) -> Report:
    """Audit one model file with ``options`` and return its report. Raises LipauditError for bad input.

    ``fields``: fields of AuditOptions by keyword (``audit(path, bound="product")``), over
    ``options``; they are checked as the options are. ``executor``: measures the layers
    (lipaudit.parallel); ``on_node`` then follows its jobs. ``on_stage``: told the name of each stage
    as it starts (load, verify, layers, recursion, lower_bound), for progress displays.

    The options: ``verify``: compare the IR with the model's own runtime first (None: only for
    models under 50M parameters); a mismatch raises VerificationError. ``lower_bound``: also search
    for an empirical lower bound (``samples`` random inputs, ``steps`` ascent steps, seeded by
    ``seed``; with ``lower_bound_time``, stopped after that many seconds). ``input_range``: the bound
    is then local to that box; so it is with ``around`` (``--around`` centres: files or arrays) and
    ``radius`` (the ℓ∞ box around them). ``bound``: 'recursion' tightens the product of the factors (never
    above it), 'product' keeps it. ``recursion_budget``: the recursion's work, in multiples of the
    layers' norms' operations (None: no limit); ``recursion_time``: also stop it after that many
    seconds (only on request: the figure then depends on the machine, and the report says so).
    ``in_memory_limit``: bytes of external data above which the weights stay on disk.
    """
    options = replace(options or AuditOptions(), **fields)
    stage = on_stage or (lambda name: None)
    try:
        torch_device, device_notice = resolve_device(options.device)
    except ValueError as error:
        raise UsageError(str(error), hint="use --device auto, cpu or cuda") from error
    clock = _Clock()
    stage("load")
    on_disk = external_data_bytes(Path(path))
    too_large = on_disk > options.in_memory_limit
    # The runtime is probed even with --no-verify: the rules need the shapes it really produces.
    # A model too large for memory is probed one node at a time, each reading its own weights only.
    loaded = load_model(path, parse_input_shapes(options.input_shape), seed=options.seed, map_external_data=too_large)
    # Shapes no runtime showed (inside an inlined If) come from a run of the graph before the
    # passes read them; where no probe ran, so do the values after such a branch.
    if loaded.graph.metadata.get("unconfirmed_shapes"):
        feeds = loaded.probe.feeds if loaded.probe is not None else graph_feeds(loaded.graph, options.seed)
        loaded.notices += confirm_unconfirmed_shapes(
            loaded.graph, feeds, torch_device, every_value=loaded.probe is None
        )
    graph = run_passes(loaded.graph)
    if too_large:
        from .load.mapped import release_resident_pages

        release_resident_pages(value.const for value in graph.values.values())
    clock.lap("load")
    notices = ([device_notice] if device_notice else []) + loaded.notices
    if too_large:
        notices.append(
            f"weights memory-mapped and read one layer at a time: {_size(on_disk)} of external data, "
            f"above the in-memory limit of {_size(options.in_memory_limit)}"
        )
    stage("verify")
    # raises VerificationError on a mismatch
    verification = _verify(graph, loaded, options.verify, torch_device, notices)
    loaded.probe = None  # the runtime's values are no longer needed: free them before the analysis
    clock.lap("verify")
    if not verification.checked and options.verify is not False:
        notices.append(f"not verified against the model's runtime: {verification.reason}")

    domain = _usable_box(
        prepare_domain(graph, options.input_range, around=options.around, radius=options.radius), graph, notices
    )
    ctx = RuleContext(graph, method=options.method, device=torch_device, ranges=domain.ranges if domain else None)
    stage("layers")
    network = _analyse(graph, ctx, executor, too_large, on_node, notices)
    clock.lap("analyze")
    stage("recursion")
    tight = _tighten(
        graph, network, options.bound, options.seed, notices, options.recursion_budget, options.recursion_time, domain
    )
    if domain is not None and options.bound == "recursion":
        tight = _with_interval_jacobian(graph, network, tight, domain, notices)
    clock.lap("tighten")
    upper = tight.upper_bound if tight is not None else network.upper_bound

    lower = None
    if options.lower_bound:
        stage("lower_bound")
        lower = _lower_bound(
            graph,
            upper,
            network.certified,
            domain,
            notices,
            samples=options.samples,
            steps=options.steps,
            seed=options.seed,
            device=torch_device,
            time_limit=options.lower_bound_time,
        )
        clock.lap("lower_bound")

    settings: dict = {"norm": "l2", "method": options.method, "device": str(torch_device), "bound": options.bound}
    if options.bound == "recursion":
        settings["recursion"] = {"budget": options.recursion_budget, "time_limit_s": options.recursion_time}
    if domain is not None:
        settings["domain"] = domain.settings
        if domain.around is not None:
            settings["around"] = domain.around
    if options.lower_bound:
        settings["lower_bound"] = {
            "seed": options.seed,
            "samples": options.samples,
            "steps": options.steps,
            "time_limit_s": options.lower_bound_time,
        }
    irreproducible = _time_dependence(tight, options.recursion_time if options.bound == "recursion" else None, lower)
    return build_report(
        loaded=loaded,
        graph=graph,
        network=network,
        tight=tight,
        lower=lower,
        settings=settings,
        verification=verification,
        max_lipschitz=options.max_lipschitz,
        timings=clock.total(),
        notices=notices,
        irreproducible=irreproducible,
    )


def _usable_box(domain: Domain | None, graph: Graph, notices: list[str]) -> Domain | None:
    """The domain, or None with a notice where a constant is so small or so large that the box
    analysis's float64 products could leave the normal range (lipaudit.domain.normal_range)."""
    if domain is None:
        return None
    from .domain.normal_range import extreme_constant

    extreme = extreme_constant(graph)
    if extreme is None:
        return domain
    notices.append(
        f"the input box was not used: constant '{extreme}' has entries below 2^-400 or above 2^400, "
        "where the box analysis's float64 products would leave the normal range; the figure is the "
        "global bound, which holds on the box too"
    )
    return None


def _time_dependence(tight: GraphBound | None, recursion_time: float | None, lower: LowerBound | None) -> str | None:
    """Why the report's figures depend on the machine (a wall-clock limit the user asked for), or None."""
    reasons = []
    if tight is not None and recursion_time is not None:
        cut = "it cut the work short" if not tight.finished else "it did not cut the work this time"
        reasons.append(f"the recursion ran under a time limit of {recursion_time:.3g} s (--recursion-time; {cut})")
    if lower is not None and lower.cut_short:
        reasons.append("the lower-bound search stopped at its time limit (--lower-bound-time)")
    return "; ".join(reasons) or None


def _verify(
    graph: Graph, loaded: LoadedModel, requested: bool | None, device: torch.device, notices: list[str]
) -> Verification:
    parameters = graph.parameter_count()
    if requested is False:
        verification = skipped("turned off (--no-verify)")
    elif requested is None and parameters >= AUTO_MAX_PARAMETERS:
        verification = skipped(
            f"not run by default for {parameters / 1e6:.0f}M parameters "
            f"(≥ {AUTO_MAX_PARAMETERS // 1_000_000}M); ask for it with --verify"
        )
    else:
        verification, shapes = run_verification(graph, loaded.probe, device=device, unavailable=loaded.probe_missing)
        notices += apply_executed_shapes(graph, shapes)
    return verification


def _analyse(
    graph: Graph,
    ctx: RuleContext,
    executor: Executor | None,
    too_large: bool,
    on_node: ProgressFn | None,
    notices: list[str],
) -> NetworkBound:
    """Every node's factors (measured ahead by the executor where there is one) composed into the bound."""
    precomputed = None
    if executor is not None or too_large:
        from .parallel.jobs import InlineExecutor
        from .parallel.layers import measure_layers

        # A model on disk is measured layer by layer even here: each job maps its weights, then lets them go.
        with exact_cuda_math(ctx.device):
            precomputed, failures = measure_layers(graph, ctx, executor or InlineExecutor(threads=None), on_node)
        notices += failures
    with exact_cuda_math(ctx.device):
        return compose(graph, ctx, on_node if precomputed is None else None, precomputed)


def _tighten(
    graph: Graph,
    network: NetworkBound,
    bound: str,
    seed: int,
    notices: list[str],
    budget: float | None,
    time_limit: float | None,
    domain: Domain | None = None,
) -> GraphBound | None:
    """The recursion's bound and the residual branches (None: the product stands, with a notice why),
    within ``budget`` (work) and, on request, ``time_limit`` seconds."""
    if not network.upper_bound:  # none, or 0: a model whose outputs do not move has nothing to tighten
        return None
    try:
        with torch.no_grad():
            ranges = domain.ranges if domain is not None else None
            tight = tighten(graph, network, bound=bound, seed=seed, budget=budget, time_limit=time_limit, ranges=ranges)
    except NotMappable as error:
        notices.append(f"the network bound is the product: the recursion cannot describe the graph ({error})")
        return None
    except (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError) as error:
        # The product is already certified: a graph the recursion trips on costs tightness, not the run.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        notices.append(f"the network bound is the product: the recursion failed on this graph ({first})")
        return None
    if tight.proof:
        notices.append(f"the network bound is LipSDP-Neuron's, certified: {tight.proof}")
    if not tight.finished:
        notices.append(
            f"the recursion stopped at its time limit ({time_limit:.3g} s): the values it did not reach keep the "
            "product's figure (without --recursion-time it spends its work budget, whatever the machine)"
        )
    return tight


def _with_interval_jacobian(
    graph: Graph, network: NetworkBound, tight: GraphBound | None, domain: Domain, notices: list[str]
) -> GraphBound | None:
    """The lower of the domain figure so far and the interval-Jacobian bound on the box (both
    certified; lipaudit.domain.jacobian), with a notice when the latter gives the figure."""
    from .domain.jacobian import METHOD
    from .domain.local import local_jacobian_bound
    from .domain.switching import METHOD as SWITCHING
    from .ops.context import DOMAIN_GAIN

    upper = tight.upper_bound if tight is not None else network.upper_bound
    if upper is None or not network.certified:
        return tight
    try:
        graph, domain, written_out = _cells_written_out(graph, domain)
    except _TooLarge as too_large:
        notices.append(f"no interval-Jacobian bound on the box: {too_large}")
        return tight
    found, why = local_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False)
    if found is None:
        notices.append(f"no interval-Jacobian bound on the box: {why}")
        return tight
    # Written-out cells have smooth gates: the branch and bound over slopes took 8-19 s there on a
    # 5-step LSTM/GRU/RNN at ±0.1 (20 directions, 30-120 nodes), against 0.7-2 s for the rest of the
    # audit; on the smallest, as on an export that writes the steps out itself, it is cheap.
    cheap = not written_out or _directions(domain, graph) * len(graph.nodes) <= SWITCHING_WRITTEN_OUT_LIMIT
    switched = _switching(graph, domain, found.ranges) if cheap else None
    if switched is None or not switched.converged:
        # A converged switching figure is the largest norm over the patterns left, to 10⁻³, which a
        # product over segments (each at least the sup of its own Jacobian) undercuts only where a
        # pattern left is out of reach; on residual CNNs the segments took most of the audit's time.
        found = _segmented(graph, domain, found)
    figure, found_outputs = found.upper_bound, found.outputs
    if switched is not None and switched.figure < figure:
        figure, method = switched.figure, SWITCHING
        found_outputs = {name: min(value, figure) for name, value in found.outputs.items()}
        how = (
            f"the largest Jacobian norm over the slopes of the {switched.entries} activation entries that may "
            f"switch on the box ({figure:.6g}, below {upper:.6g}), by branch and bound over {switched.boxes} "
            "boxes of their slopes"
        )
    else:
        method = METHOD
        how = f"the interval-Jacobian bound: sup of ‖J‖₂ over the box ({figure:.6g}, below {upper:.6g}), {_how(found)}"
    if not figure < upper * (1 - DOMAIN_GAIN):
        return tight  # the recursion's figure in all but the last digits keeps its name
    if written_out:
        how += f", with the {written_out} written out step by step as the nodes of their cells"
    outputs = dict(tight.outputs) if tight is not None else {k: v for k, v in network.outputs.items() if v is not None}
    for name, value in found_outputs.items():
        if name in outputs:
            outputs[name] = min(outputs[name], value)
    notices.append(f"the network bound is {how}")
    base = tight if tight is not None else GraphBound(upper, outputs, "product", upper)
    return replace(base, upper_bound=figure, outputs=outputs, method=method, local=True)


class _TooLarge(Exception):
    pass


# Input directions × nodes of a graph with recurrent cells written out, beyond which the
# interval-Jacobian engines are not run on it: a 20-step LSTM of 32 units on 16 inputs (173k) took
# 30 s there and its ranges had grown past the op rule's figure; a 5-step one of 8 on 4 (2.5k), 1.3 s.
WRITTEN_OUT_LIMIT = 20_000
SWITCHING_WRITTEN_OUT_LIMIT = 500  # and beyond this no branch and bound over their slopes


def _directions(domain: Domain, graph: Graph) -> int:
    """The input entries the box bounds: the directions the Jacobian engines follow."""
    return sum(math.prod(graph.shape(name) or ()) for name in domain.bounds)


def _cells_written_out(graph: Graph, domain: Domain) -> tuple[Graph, Domain, str]:
    """The graph and domain the interval-Jacobian engines read: recurrent ops written out as the
    nodes of their cells (lipaudit.passes.unroll_recurrent; the engines have no rule for the whole
    op), with the ranges on the box propagated through the written-out graph; and which ops those
    were ("" when none)."""
    from .domain import value_ranges
    from .domain.propagate import intersected
    from .passes.unroll_recurrent import unrolled_copy

    unrolled = unrolled_copy(graph)
    if unrolled is None:
        return graph, domain, ""
    directions = _directions(domain, graph)
    if directions * len(unrolled.nodes) > WRITTEN_OUT_LIMIT:
        raise _TooLarge(
            f"the recurrent cells written out ({len(unrolled.nodes)} nodes along {directions} input directions) "
            f"are beyond the engines' limit ({WRITTEN_OUT_LIMIT} of both multiplied); the op's own rule stands"
        )
    ranges = intersected(value_ranges(unrolled, domain.bounds), domain.ranges)
    names = sorted({node.op_type for node in graph.nodes if node not in unrolled})
    return unrolled, replace(domain, ranges=ranges), "/".join(names) + " ops"


def _how(found) -> str:
    """How the interval-Jacobian figure was had: the whole pass, a product over segments, or the
    chain of the segments' centres (lipaudit.domain.telescope)."""
    how = f"from enclosures of every value's Jacobian along the {found.directions} input directions"
    each = how.replace("input", "its input")
    if found.chain:
        cut = ", ".join(end for _, end, _, _ in found.chain[:-1])
        return f"a chain over {len(found.chain)} segments cut at {cut}: ‖C₁⋯Cₘ‖ + Σ Fᵢ₋₁δᵢ‖Cᵢ₊₁⋯Cₘ‖, each {each}"
    if found.segments:
        factors = " × ".join(f"{figure:.4g}" for _, _, figure in found.segments)
        cut = ", ".join(end for _, end, _ in found.segments[:-1])
        return f"a product over {len(found.segments)} segments cut at {cut} ({factors}), each {each}"
    return how


def _segmented(graph: Graph, domain: Domain, whole):
    """The whole interval-Jacobian pass's bound, lowered by the product over the network's segments
    where that is lower (lipaudit.domain.local.with_segments); the whole pass's alone where a
    segment meets what the engine cannot enclose."""
    from .domain.jacobian import JacobianUnavailable
    from .domain.local import with_segments

    try:
        return with_segments(graph, domain.bounds, whole)
    except JacobianUnavailable:
        return whole


def _switching(graph: Graph, domain: Domain, ranges):
    """The switching-vertices bound on the box (lipaudit.domain.switching), or None where the engine
    meets an op it has no rule for."""
    from .domain.jacobian import JacobianUnavailable
    from .domain.switching import switching_bound

    try:
        return switching_bound(graph, domain.bounds, ranges)
    except JacobianUnavailable:
        return None


def _lower_bound(
    graph: Graph, upper: float | None, certified: bool, domain: Domain | None, notices: list[str], **search: Any
) -> LowerBound | None:
    """The empirical lower bound (inside the box in domain mode), with a notice when it cannot run.
    Raises ContradictionError when it exceeds the upper bound and that is ``certified``; an estimate
    (--method power) may lie below the truth, and then a notice says so."""
    try:
        if domain is not None:
            lower = box_lower_bound(graph, domain.bounds, **search)
        else:
            lower = empirical_lower_bound(graph, **search)
    except ExecutionError as error:
        notices.append(f"no lower bound: {error}")
        return None
    notices += [f"lower bound: {note}" for note in lower.notes if "time limit" in note]
    if upper is not None and lower.value > upper * (1.0 + CONTRADICTION_SLACK) and not certified:
        notices.append(
            f"the empirical lower bound {lower.value:.6g} exceeds the upper estimate {upper:.6g}: the estimate "
            "(not certified) is below the true constant"
        )
    elif upper is not None and lower.value > upper * (1.0 + CONTRADICTION_SLACK):
        raise ContradictionError(
            f"contradiction: lipaudit's own lower bound {lower.value:.17g} exceeds its upper bound {upper:.17g}, "
            "so the upper bound is wrong for this model and no certified figure is reported",
            hint="please report this model; do not rely on its upper bound",
            upper=upper,
            lower=lower.value,
        )
    return lower
