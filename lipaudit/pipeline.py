"""The pipeline: load → rewrite → analyse → compose → report."""

from __future__ import annotations

import time
from typing import Callable

from . import __version__
from .analyzers import AnalysisContext
from .compose import compose
from .errors import UsageError
from .ir import Node
from .loaders import load_model
from .passes import run_passes
from .report import LayerReport, Report, finite_or_none, threshold_verdict
from .shapes import parse_input_shapes
from .spectral.device import resolve_device

METHODS = ("auto", "exact", "gram", "power", "frobenius")
DEVICES = ("auto", "cpu", "cuda")

ProgressFn = Callable[[int, int, Node], None]


def audit(path: str, *, input_shape: list[str] | None = None, method: str = "auto", device: str = "auto",
          max_lipschitz: float | None = None, on_node: ProgressFn | None = None) -> Report:
    """Audit one model file and return its report. Raises LipauditError for bad input."""
    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'", hint=f"choose one of: {', '.join(METHODS)}")
    try:
        torch_device, device_notice = resolve_device(device)
    except ValueError as error:
        raise UsageError(str(error), hint="use --device auto, cpu or cuda") from error
    started = time.perf_counter()
    loaded = load_model(path, parse_input_shapes(input_shape))
    graph = run_passes(loaded.graph)
    loaded_at = time.perf_counter()
    ctx = AnalysisContext(graph, method=method, device=torch_device)
    network = compose(graph, ctx, on_node)
    finished = time.perf_counter()

    layers = []
    for result in network.layers:
        factor, node = result.factor, result.node
        shape = graph.shape(node.outputs[0])
        layers.append(LayerReport(
            name=node.name, op=node.op_type, output_shape=None if shape is None else [int(d) for d in shape],
            factor=finite_or_none(factor.value), method=factor.method, certified=factor.certified,
            estimate=finite_or_none(factor.estimate), frobenius=finite_or_none(factor.frobenius),
            running_bound=finite_or_none(result.bound.value) if result.bound.finite else None,
            status=factor.status, reason=factor.reason, notes=list(node.notes) + list(factor.notes)))
    upper = finite_or_none(network.upper_bound)
    return Report(
        tool={"name": "lipaudit", "version": __version__},
        model={"path": str(loaded.path), "format": loaded.format, "sha256": loaded.sha256, "opset": graph.opset,
               "inputs": [{"name": n, "shape": list(graph.shape(n) or [])} for n in graph.inputs],
               "outputs": [{"name": n, "upper_bound": finite_or_none(v)} for n, v in network.outputs.items()],
               "parameters": graph.parameter_count()},
        settings={"norm": "l2", "method": method, "device": str(torch_device)},
        layers=layers,
        network={"upper_bound": upper, "certified": network.certified, "complete": network.complete,
                 "unsupported": [vars(b) for b in network.unsupported],
                 "unbounded": [vars(b) for b in network.unbounded]},
        threshold=threshold_verdict(upper, max_lipschitz),
        timings={"load_s": round(loaded_at - started, 4), "analyze_s": round(finished - loaded_at, 4),
                 "total_s": round(finished - started, 4)},
        notices=[device_notice] if device_notice else [],
    )
