"""The pipeline: load → rewrite → analyse → compose → report.

The layers' factors may be measured ahead of compose by an executor (``--workers``, ``--ray``):
compose then only propagates them, and the report is the same. A model whose external data is
larger than ``in_memory_limit`` is read memory-mapped, one layer at a time; what needs the whole
model in memory (the runtime probe, verification, the lower bound) is skipped with a notice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from .compose import compose
from .errors import ExecutionError, UsageError
from .execute.empirical_lower_bound import DEFAULT_SAMPLES, DEFAULT_STEPS, empirical_lower_bound
from .execute.verify import AUTO_MAX_PARAMETERS, apply_executed_shapes
from .execute.verify import verify as run_verification
from .ir import Graph, Node
from .load import LoadedModel, load_model
from .load.onnx import external_data_bytes
from .ops import RuleContext
from .passes import run_passes
from .report import Report, Verification, build_report, skipped
from .shapes import parse_input_shapes
from .spectral.device import exact_cuda_math, resolve_device

METHODS = ("auto", "exact", "gram", "power", "frobenius")
DEVICES = ("auto", "cpu", "cuda")

if TYPE_CHECKING:
    from .parallel.jobs import Executor

ProgressFn = Callable[[int, int, Node], None]
# Weights (external data) above this are memory-mapped rather than loaded, and the model is not run whole.
DEFAULT_IN_MEMORY_LIMIT = 2 * 2**30


def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def audit(path: str, *, input_shape: list[str] | None = None, method: str = "auto", device: str = "auto",
          max_lipschitz: float | None = None, on_node: ProgressFn | None = None, verify: bool | None = None,
          lower_bound: bool = False, seed: int = 0, samples: int = DEFAULT_SAMPLES,
          steps: int = DEFAULT_STEPS, executor: "Executor | None" = None,
          in_memory_limit: int = DEFAULT_IN_MEMORY_LIMIT) -> Report:
    """Audit one model file and return its report. Raises LipauditError for bad input.

    ``verify``: compare the IR with the model's own runtime first (None: only for models under
    50M parameters); a mismatch raises VerificationError. ``lower_bound``: also search for an
    empirical lower bound (``samples`` random inputs, ``steps`` ascent steps, seeded by ``seed``).
    ``executor``: measures the layers (lipaudit.parallel); ``on_node`` then follows its jobs.
    ``in_memory_limit``: bytes of external data above which the weights stay on disk.
    """
    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'", hint=f"choose one of: {', '.join(METHODS)}")
    if samples < 1 or steps < 0:
        raise UsageError("--samples must be at least 1 and --steps at least 0",
                         hint="for example --samples 16 --steps 20")
    try:
        torch_device, device_notice = resolve_device(device)
    except ValueError as error:
        raise UsageError(str(error), hint="use --device auto, cpu or cuda") from error
    started = time.perf_counter()
    on_disk = external_data_bytes(Path(path))
    too_large = on_disk > in_memory_limit
    # The runtime is probed even with --no-verify: the rules need the shapes it really produces.
    # Not a model too large for memory: its runtime would load every weight at once.
    loaded = load_model(path, parse_input_shapes(input_shape), seed=seed, probe=not too_large,
                        map_external_data=too_large)
    graph = run_passes(loaded.graph)
    if too_large:
        from .parallel.mapped import release_resident_pages

        release_resident_pages(value.const for value in graph.values.values())
    loaded_at = time.perf_counter()
    notices = ([device_notice] if device_notice else []) + loaded.notices
    whole_model = ""
    if too_large:
        whole_model = (f"needs the whole model in memory, and its weights ({_size(on_disk)}) are above the "
                       f"in-memory limit ({_size(in_memory_limit)}); raise --in-memory-limit to run it")
        notices.append(f"weights memory-mapped and read one layer at a time: {_size(on_disk)} of external data, "
                       f"above the in-memory limit of {_size(in_memory_limit)}")
        verification = skipped(f"verification {whole_model}")
    else:
        # raises VerificationError on a mismatch
        verification = _verify(graph, loaded, verify, torch_device, notices)
    loaded.probe = None  # the runtime's values are no longer needed: free them before the analysis
    verified_at = time.perf_counter()
    if not verification.checked and verify is not False:
        notices.append(f"not verified against the model's runtime: {verification.reason}")
    ctx = RuleContext(graph, method=method, device=torch_device)
    precomputed = None
    if executor is not None or too_large:
        from .parallel.jobs import InlineExecutor
        from .parallel.layers import measure_layers

        # A model on disk is measured layer by layer even here: each job maps its weights, then lets them go.
        with exact_cuda_math(torch_device):
            precomputed, failures = measure_layers(graph, ctx, executor or InlineExecutor(threads=None), on_node)
        notices += failures
    with exact_cuda_math(torch_device):
        network = compose(graph, ctx, on_node if precomputed is None else None, precomputed)
    analyzed_at = time.perf_counter()
    lower = None
    if lower_bound and too_large:
        notices.append(f"no lower bound: the search {whole_model}")
    elif lower_bound:
        try:
            lower = empirical_lower_bound(graph, samples=samples, steps=steps, seed=seed, device=torch_device)
        except ExecutionError as error:
            notices.append(f"no lower bound: {error}")
        if lower is not None and network.upper_bound is not None and lower.value > network.upper_bound:
            notices.append(f"warning: the empirical lower bound {lower.value:.6g} exceeds the upper bound "
                           f"{network.upper_bound:.6g}: the upper bound is wrong; please report this model")
    finished = time.perf_counter()

    settings: dict = {"norm": "l2", "method": method, "device": str(torch_device)}
    if lower_bound:
        settings["lower_bound"] = {"seed": seed, "samples": samples, "steps": steps}
    timings = {"load_s": round(loaded_at - started, 4), "verify_s": round(verified_at - loaded_at, 4),
               "analyze_s": round(analyzed_at - verified_at, 4)}
    if lower_bound:
        timings["lower_bound_s"] = round(finished - analyzed_at, 4)
    timings["total_s"] = round(finished - started, 4)
    return build_report(loaded=loaded, graph=graph, network=network, lower=lower, settings=settings,
                        verification=verification, max_lipschitz=max_lipschitz, timings=timings, notices=notices)


def _verify(graph: Graph, loaded: LoadedModel, requested: bool | None, device: torch.device,
            notices: list[str]) -> Verification:
    if requested is False:
        return skipped("turned off (--no-verify)")
    parameters = graph.parameter_count()
    if requested is None and parameters >= AUTO_MAX_PARAMETERS:
        return skipped(f"not run by default for {parameters / 1e6:.0f}M parameters "
                       f"(≥ {AUTO_MAX_PARAMETERS // 1_000_000}M); ask for it with --verify")
    verification, shapes = run_verification(graph, loaded.probe, device=device, unavailable=loaded.probe_missing)
    notices += apply_executed_shapes(graph, shapes)
    return verification
