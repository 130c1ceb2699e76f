"""The faithfulness check: does the IR compute what the model file computes, value by value?

An upper bound is only worth something for the function that ships. We run the IR (the graph
after loading and rewriting, exactly what the rules measured) with the torch executor on the
inputs of the runtime probe, and compare every value the runtime also computed — each node's
output, not only the graph's — with a tolerance set by that tensor's own scale, so a large
constant added at the end cannot hide a wrong reading earlier. The first node whose output
differs is named. The shapes the executor produces also replace any the IR still has wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ExecutionError, VerificationError
from ..ir import Graph, Node
from ..load.probe import RuntimeProbe
from ..report_types import Verification, skipped
from .executor import GraphInterpreter

AUTO_MAX_PARAMETERS = 50_000_000  # verification is on by default below this
RTOL = 1e-3  # relative to the value's own largest entry: float32 noise is far below
# Cancellation (a − b with a ≈ b) leaves float32 noise at the scale of the node's inputs, not of
# its output; this much of the inputs' scale is tolerated on top.  A node after a cancellation (a
# Relu reading the small a − b) gets it at the scale its inputs were computed from (``carried``),
# but only when it computes the runtime's output from the runtime's own inputs: a misreading
# small per node still fails where it builds up over the layers.
INPUT_RTOL = 1e-5
ATOL = 1e-30
# A discrete output of float inputs (ArgMax, a comparison, MaxPool's indices) may flip where the
# runtime and the IR round a tie differently: this share of its entries may differ.
DISCRETE_FLIPS = 1e-3


# The runtime's value holds inf or NaN where lipaudit's does not (or not the same ones): the model
# itself overflows or divides by 0 on the probe inputs, which says nothing of lipaudit's reading of it.
OVERFLOW = "(the runtime's value is inf or NaN there)"


class RuntimeNotFinite(Exception):
    """The reference's own value is not finite: verification stops there, unverified, not failed."""


def tolerance_for(probe: RuntimeProbe) -> float:
    """RTOL, or more where the reference computes in a coarser float (bfloat16 keeps 8 bits)."""
    return max(RTOL, 8 * probe.rounding)


@dataclass
class Comparison:
    max_abs_diff: float
    tolerance: float
    ok: bool
    detail: str = ""


def _scale(array: np.ndarray) -> float:
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    return float(np.abs(finite).max()) if finite.size else 0.0


def compare(
    got: torch.Tensor | np.ndarray,
    want: np.ndarray,
    *,
    input_scale: float = 0.0,
    discrete_of_floats: bool = False,
    rtol: float = RTOL,
) -> Comparison:
    """Entrywise, with a tolerance relative to the reference tensor's own largest entry."""
    have = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = np.asarray(want)
    if have.shape != want.shape:
        return Comparison(float("inf"), 0.0, False, f"shape {list(have.shape)} instead of {list(want.shape)}")
    if want.size == 0:
        return Comparison(0.0, 0.0, True)
    if want.dtype.kind in "biu" or have.dtype.kind in "biu":
        differ = int(np.count_nonzero(have.astype(np.float64) != want.astype(np.float64)))
        allowed = max(1, int(DISCRETE_FLIPS * want.size)) if discrete_of_floats else 0
        return Comparison(
            float(differ), float(allowed), differ <= allowed, f"{differ} entries differ" if differ else ""
        )
    a, b = have.astype(np.float64), want.astype(np.float64)
    finite = np.isfinite(b)
    same_specials = (
        np.array_equal(np.isfinite(a), finite)
        and np.array_equal(np.isnan(a), np.isnan(b))
        and np.array_equal(a[np.isinf(b)], b[np.isinf(b)])
    )
    if not same_specials and not finite.all():
        return Comparison(float("inf"), 0.0, False, OVERFLOW)
    if not finite.any():
        return Comparison(0.0 if same_specials else float("inf"), 0.0, same_specials)
    diff = float(np.abs(a[finite] - b[finite]).max()) if np.isfinite(a[finite]).all() else float("inf")
    tolerance = ATOL + rtol * _scale(b) + INPUT_RTOL * input_scale
    ok = same_specials and diff <= tolerance
    return Comparison(diff, tolerance, ok, "" if same_specials else "non-finite entries differ")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _input_scale(args: list[Any]) -> tuple[float, bool]:
    """(the largest float entry of a node's tensor inputs, whether any is float)."""
    arrays = [a.detach().cpu().numpy() for a in args if isinstance(a, torch.Tensor)]
    floats = [a for a in arrays if a.dtype.kind == "f"]
    return max((_scale(a) for a in floats), default=0.0), bool(floats)


class _Checker:
    """Compares each node's outputs with the probe as the executor produces them."""

    def __init__(self, graph: Graph, probe: RuntimeProbe, executor: GraphInterpreter | None = None) -> None:
        self.graph = graph
        self.probe = probe
        self.rtol = tolerance_for(probe)
        self.executor = executor
        self.compared = 0
        self.worst = 0.0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.carried: dict[str, float] = {}  # value -> the largest float entry it was computed from

    def __call__(self, node: Node, args: list[Any], outputs: list[Any]) -> None:
        input_scale, floats_in = _input_scale(args)
        carried = max([input_scale, *(self.carried.get(name, 0.0) for name in node.inputs if name)])
        for name, tensor in zip(node.outputs, outputs):
            if not name or not isinstance(tensor, torch.Tensor):
                continue
            self.shapes[name] = tuple(int(d) for d in tensor.shape)
            self.carried[name] = carried
            want = self.probe.values.get(name)
            if want is None:
                continue
            result = compare(tensor, want, input_scale=input_scale, discrete_of_floats=floats_in, rtol=self.rtol)
            self.compared += 1
            if not result.ok and carried > input_scale:
                wider = compare(tensor, want, input_scale=carried, discrete_of_floats=floats_in, rtol=self.rtol)
                if wider.ok:
                    again = self._on_runtime_inputs(node, args, list(node.outputs).index(name), want)
                    result = wider if again is not None and again.ok else result
            if not result.ok and result.detail == OVERFLOW:
                raise RuntimeNotFinite(
                    f"{self.probe.reference}'s value '{name}' of node '{node.name}' ({node.op_type}) is inf or NaN "
                    "on the probe inputs (the model overflows or divides by 0 there): nothing after it is compared"
                )
            if not result.ok:
                how = result.detail or f"by up to {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g})"
                raise VerificationError(
                    f"the IR differs from {self.probe.reference} at node '{node.name}' ({node.op_type}): its output "
                    f"'{name}' differs {how}",
                    _HINT,
                    node=node.name,
                    op=node.op_type,
                )
            if want.dtype.kind == "f":
                self.worst = max(self.worst, result.max_abs_diff)

    def _on_runtime_inputs(self, node: Node, args: list[Any], index: int, want: np.ndarray) -> Comparison | None:
        """The node run again on the runtime's own values of its float inputs, where it exposed them
        all; None where it did not (or the node refuses them)."""
        if self.executor is None:
            return None
        again = []
        for name, arg in zip(node.inputs, args):
            if isinstance(arg, torch.Tensor) and arg.is_floating_point() and not self.graph.is_const(name):
                given = self.probe.values.get(name) if name in self.probe.values else self.probe.feeds.get(name)
                if given is None:
                    return None
                arg = torch.as_tensor(np.asarray(given)).to(arg.device, arg.dtype)
            again.append(arg)
        try:
            outputs = self.executor.run_node(node, again)
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, ArithmeticError):
            return None
        if index >= len(outputs) or not isinstance(outputs[index], torch.Tensor):
            return None
        input_scale, floats_in = _input_scale(again)
        return compare(outputs[index], want, input_scale=input_scale, discrete_of_floats=floats_in, rtol=self.rtol)


_HINT = (
    "lipaudit's reading of the model does not compute what the model computes, so no bound is "
    "reported; please report this model (--no-verify skips the check)"
)


def _executor(graph: Graph, feeds: Mapping[str, Any], device: str | torch.device) -> GraphInterpreter:
    # A float64 model runs in float64: its weights may lie outside float32's range.
    wide = any(np.asarray(feed).dtype == np.float64 for feed in feeds.values())
    return GraphInterpreter(graph, device=device, dtype=torch.float64 if wide else torch.float32)


def verify(
    graph: Graph,
    probe: RuntimeProbe | None,
    *,
    device: str | torch.device = "cpu",
    unavailable: str = "no runtime probe",
) -> tuple[Verification, dict[str, tuple[int, ...]]]:
    """Compare the IR with the probe; the verification, and the shape of every value the IR computed.

    Raises VerificationError on a mismatch, naming the first node whose output differs.
    """
    if probe is None:
        return skipped(unavailable), {}
    try:
        executor = _executor(graph, probe.feeds, device)
    except ExecutionError as error:
        return skipped(_first_line(error)), {}
    checker = _Checker(graph, probe, executor)
    try:
        outputs = executor.run(probe.feeds, on_node=checker)
    except ExecutionError as error:
        return skipped(_first_line(error)), checker.shapes
    except RuntimeNotFinite as why:
        return skipped(str(why)), checker.shapes
    # The other side of each threshold the model compares its data with: a branch, a count or a
    # step the first run saw one side of must compute the same there.
    for crossing in probe.crossings:
        other = _Checker(graph, crossing, executor)
        try:
            executor.run(crossing.feeds, on_node=other)
        except ExecutionError:
            continue  # it ran on the first inputs; an op refusing these is no mismatch
        checker.compared += other.compared
        checker.worst = max(checker.worst, other.worst)
    if probe.outputs is not None:
        if len(probe.outputs) != len(graph.outputs):
            return skipped(
                f"{probe.reference} returns {len(probe.outputs)} outputs; the IR has {len(graph.outputs)}"
            ), checker.shapes
        for name, want in zip(graph.outputs, probe.outputs):
            result = compare(outputs[name], want, rtol=tolerance_for(probe))
            checker.compared += 1
            if not result.ok:
                how = result.detail or f"by up to {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g})"
                raise VerificationError(f"the IR's output '{name}' differs from {probe.reference}'s {how}", _HINT)
    if checker.compared == 0:
        return skipped(f"{probe.reference} exposed none of the IR's values to compare"), checker.shapes
    return Verification(
        True,
        max_abs_diff=checker.worst,
        inputs=1 + len(probe.crossings),
        reference=probe.reference,
        values=checker.compared,
    ), checker.shapes


def confirm_unconfirmed_shapes(
    graph: Graph, feeds: Mapping[str, Any] | None, device: str | torch.device, every_value: bool = False
) -> list[str]:
    """The values whose shapes no runtime saw get theirs from one run of the executor on ``feeds``,
    compared with nothing: inside an inlined If branch (graph.metadata "unconfirmed_shapes"), and
    with ``every_value`` (no runtime probe ran) every value a node makes. ONNX inference can be wrong
    there (MaxPool with ceil_mode, a stale declaration), and the rules and passes must read the
    shapes the model computes. Where there is no such run, a branch's inferred shapes are dropped,
    so the rules that read them say they cannot (never a figure on a guessed shape). Run before the
    passes, which act on shapes (a copy to the same shape is dropped). The notices."""
    made = {name for node in graph.nodes for name in node.outputs if name}
    unconfirmed = graph.metadata.get("unconfirmed_shapes", set())
    branch = set(unconfirmed)
    unconfirmed.clear()  # asked once: a later call has nothing left to confirm
    asked = made if every_value else branch
    left = sorted(name for name in asked if name in made and not graph.values[name].is_const)
    if not left:
        return []
    why = "no runtime inputs to run the model on"
    if feeds is not None:
        try:
            executor = _executor(graph, feeds, device)
            seen: dict[str, tuple[int, ...]] = {}

            def record(node: Node, args: list[Any], outputs: list[Any]) -> None:
                for name, tensor in zip(node.outputs, outputs):
                    if name and isinstance(tensor, torch.Tensor):
                        seen[name] = tuple(int(d) for d in tensor.shape)

            executor.run(feeds, on_node=record)
            missing = [name for name in left if name not in seen]
            if not missing:
                return apply_executed_shapes(graph, {name: seen[name] for name in left}, verified=False)
            why = f"the executor did not compute '{missing[0]}'"
        except (ExecutionError, RuntimeError, ValueError) as error:  # an op it cannot run, or a torch refusal
            why = _first_line(error)
    dropped = [name for name in left if name in branch]  # the probe's main-graph shapes stay
    for name in dropped:
        graph.values[name].shape = None
    if not dropped:
        return []
    return [
        f"the shapes of {len(dropped)} value(s) inside an inlined If branch, which no runtime showed, could not be "
        f"confirmed ({why}): left unknown"
    ]


def apply_executed_shapes(graph: Graph, shapes: Mapping[str, tuple[int, ...]], verified: bool = True) -> list[str]:
    """Correct IR shapes the executor (verified against the runtime) contradicts; the corrections."""
    corrected = []
    for name, shape in shapes.items():
        value = graph.get(name)
        if value is None or value.is_const or value.shape == shape:
            continue
        if value.shape is not None and all(d >= 0 for d in value.shape):
            corrected.append(f"'{name}': {list(value.shape)} → {list(shape)}")
        value.shape = shape
    if not corrected:
        return []
    executor = "the verified executor" if verified else "a run of the executor"
    return [
        f"shapes of {len(corrected)} value(s) the runtime did not expose were corrected from {executor}: "
        f"{'; '.join(corrected[:3])}"
    ]


__all__ = [
    "AUTO_MAX_PARAMETERS",
    "Comparison",
    "apply_executed_shapes",
    "compare",
    "confirm_unconfirmed_shapes",
    "verify",
]
