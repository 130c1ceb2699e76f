"""The report: typed dataclasses for everything a renderer shows, and the JSON schema that carries it.

Each dataclass owns its part of the schema through one ``to_dict``/``from_dict`` pair; renderers
and ``diff`` read attributes. ``build_report`` assembles a report from what the pipeline computed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .report_types import (
    EXIT_INCOMPLETE,
    EXIT_PASSED,
    EXIT_THRESHOLD_EXCEEDED,
    EXIT_USAGE,
    Blocker,
    BranchViolation,
    LayerViolation,
    OutputBound,
    ResidualBranch,
    TensorInfo,
    Verification,
    finite_or_none,
    skipped,
)
from .version import __version__

if TYPE_CHECKING:
    from .compose import NetworkBound
    from .execute.empirical_lower_bound import LowerBound
    from .ir import Graph
    from .load import LoadedModel
    from .tight.graph_bound import GraphBound

SCHEMA_VERSION = 1


def json_safe(data: Any, where: str, replaced: list[dict[str, str]]) -> Any:
    """``data`` with every infinite or NaN float replaced by None, each replacement recorded in
    ``replaced`` with its field and why: JSON has no Infinity or NaN, and strict parsers reject them."""
    if isinstance(data, float) and not math.isfinite(data):
        value = "nan" if math.isnan(data) else ("+inf" if data > 0 else "-inf")
        reason = f"the figure is {value}, which JSON cannot hold: written as null"
        replaced.append({"field": where, "value": value, "reason": reason})
        return None
    if isinstance(data, dict):
        return {key: json_safe(item, f"{where}.{key}" if where else str(key), replaced) for key, item in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(item, f"{where}[{index}]", replaced) for index, item in enumerate(data)]
    return data


@dataclass
class ToolInfo:
    name: str = "lipaudit"
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolInfo:
        return cls(**data)


@dataclass
class ModelInfo:
    path: str
    format: str
    sha256: str
    opset: int
    inputs: list[TensorInfo]
    outputs: list[OutputBound]
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        fields = dict(data)
        fields["inputs"] = [TensorInfo(**item) for item in data.get("inputs", [])]
        fields["outputs"] = [OutputBound(**item) for item in data.get("outputs", [])]
        return cls(**fields)


@dataclass
class NetworkResult:
    upper_bound: float | None
    certified: bool
    complete: bool
    lower_bound: float | None = None
    gap: float | None = None
    unsupported: list[Blocker] = field(default_factory=list)
    unbounded: list[Blocker] = field(default_factory=list)
    # The figure is for the function the model file computes: the IR was checked against the runtime.
    verified: bool = False
    # "global": a Lipschitz constant on all inputs. "domain": it holds only for inputs in the box of
    # settings.domain (some factor used the value ranges there): a local figure.
    scope: str = "global"
    # How upper_bound was reached: "product" of the layers' factors, or "recursion-w<window>" (the
    # slope-restricted recursion, never above the product, which is kept in product_bound).
    method: str = "product"
    product_bound: float | None = None
    branches: list[ResidualBranch] = field(default_factory=list)
    # Whether the figures are a function of the file, the settings and the version alone; false only
    # when the user asked for a wall-clock limit (--recursion-time, or --lower-bound-time that cut the
    # search), and then ``reproducible_reason`` says which.
    reproducible: bool = True
    reproducible_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkResult:
        fields = dict(data)
        fields["unsupported"] = [Blocker(**item) for item in data.get("unsupported", [])]
        fields["unbounded"] = [Blocker(**item) for item in data.get("unbounded", [])]
        fields["branches"] = [ResidualBranch(**item) for item in data.get("branches", [])]
        return cls(**fields)


@dataclass
class Threshold:
    max_lipschitz: float | None = None
    passed: bool | None = None
    layers: list[LayerViolation] | None = None  # layers over their max_layer_factor, when any
    max_branch_lipschitz: float | None = None
    branches: list[BranchViolation] | None = None  # residual branches over max_branch_lipschitz, when any
    # The gate passes a bound up to max_lipschitz·(1 + rtol) (and a layer up to its limit·(1 + rtol)):
    # a 1-Lipschitz net measured in float32 can then pass a limit of 1 honestly.
    rtol: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"max_lipschitz": self.max_lipschitz, "passed": self.passed, "rtol": self.rtol}
        if self.layers is not None:
            data["layers"] = [asdict(layer) for layer in self.layers]
        if self.max_branch_lipschitz is not None:
            data["max_branch_lipschitz"] = self.max_branch_lipschitz
        if self.branches is not None:
            data["branches"] = [asdict(branch) for branch in self.branches]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threshold:
        layers, branches = data.get("layers"), data.get("branches")
        return cls(
            data.get("max_lipschitz"),
            data.get("passed"),
            None if layers is None else [LayerViolation(**item) for item in layers],
            data.get("max_branch_lipschitz"),
            None if branches is None else [BranchViolation(**item) for item in branches],
            float(data.get("rtol", 0.0)),
        )


@dataclass
class LayerReport:
    name: str
    op: str
    output_shape: list[int] | None
    factor: float | None
    method: str
    certified: bool
    estimate: float | None
    frobenius: float | None
    running_bound: float | None
    status: str = "bounded"  # bounded | unbounded | unknown
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float | None = field(default=None, compare=False)  # time its rule took (operator norms: most of it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerReport:
        return cls(**data)


@dataclass
class Report:
    tool: ToolInfo
    model: ModelInfo
    settings: dict[str, Any]
    layers: list[LayerReport]
    network: NetworkResult
    threshold: Threshold
    verification: Verification = field(default_factory=lambda: skipped("not run"))
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def upper_bound(self) -> float | None:
        return self.network.upper_bound

    @property
    def lower_bound(self) -> float | None:
        return self.network.lower_bound

    @property
    def bounded_and_complete(self) -> bool:
        return self.network.complete and not self.network.unbounded and self.upper_bound is not None

    def exit_code(self, allow_incomplete: bool = False) -> int:
        if not self.bounded_and_complete and not allow_incomplete:
            return EXIT_INCOMPLETE
        if self.threshold.passed is False:
            return EXIT_THRESHOLD_EXCEEDED
        return EXIT_PASSED

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every figure that is not finite is null, and ``non_finite`` says which and why."""
        replaced: list[dict[str, str]] = []
        data = json_safe(self._fields(), "", replaced)
        data["non_finite"] = replaced
        return data

    def _fields(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tool": self.tool.to_dict(),
            "model": self.model.to_dict(),
            "settings": dict(self.settings),
            "layers": [layer.to_dict() for layer in self.layers],
            "network": self.network.to_dict(),
            "threshold": self.threshold.to_dict(),
            "verification": self.verification.to_dict(),
            "timings": dict(self.timings),
            "notices": list(self.notices),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported report schema_version {data.get('schema_version')!r}")
        return cls(
            tool=ToolInfo.from_dict(data["tool"]),
            model=ModelInfo.from_dict(data["model"]),
            settings=dict(data.get("settings", {})),
            layers=[LayerReport.from_dict(layer) for layer in data.get("layers", [])],
            network=NetworkResult.from_dict(data["network"]),
            threshold=Threshold.from_dict(data.get("threshold", {})),
            verification=Verification.from_dict(data.get("verification", {"checked": False, "reason": "not run"})),
            timings=dict(data.get("timings", {})),
            notices=list(data.get("notices", [])),
        )


def network_scope(network: NetworkBound) -> str:
    """'domain' when any factor holds on the input domain only (method "domain"), else 'global'."""
    for result in network.layers:
        for factor in result.output_factors or [result.factor]:
            if factor.method == "domain":
                return "domain"
    return "global"


def within(value: float, limit: float, rtol: float = 0.0) -> bool:
    """The gate's comparison: ``value`` ≤ ``limit``·(1 + ``rtol``)."""
    return bool(value <= limit * (1.0 + rtol)) if limit >= 0 else bool(value <= limit)


def threshold_verdict(upper_bound: float | None, max_lipschitz: float | None, rtol: float = 0.0) -> Threshold:
    if max_lipschitz is None or upper_bound is None:
        return Threshold(max_lipschitz, None, rtol=rtol)
    return Threshold(max_lipschitz, within(upper_bound, max_lipschitz, rtol), rtol=rtol)


def build_report(
    *,
    loaded: LoadedModel,
    graph: Graph,
    network: NetworkBound,
    tight: GraphBound | None,
    lower: LowerBound | None,
    settings: dict[str, Any],
    verification: Verification,
    max_lipschitz: float | None,
    timings: dict[str, float],
    notices: list[str],
    irreproducible: str | None = None,
) -> Report:
    """The report of one audit, from the analysed graph and what each stage computed. ``tight``: the
    network bound beyond the product, where it was computed. ``irreproducible``: why the figures
    depend on the machine (a time limit the user asked for), None when they do not."""
    layers = []
    for result in network.layers:
        factor, node = result.factor, result.node
        shape = graph.shape(node.outputs[0])
        layers.append(
            LayerReport(
                name=node.name,
                op=node.op_type,
                output_shape=None if shape is None else [int(d) for d in shape],
                factor=finite_or_none(factor.value),
                method=factor.method,
                certified=factor.certified,
                estimate=finite_or_none(factor.estimate),
                frobenius=finite_or_none(factor.frobenius),
                running_bound=finite_or_none(result.bound.value) if result.bound.finite else None,
                status=factor.status,
                reason=factor.reason,
                notes=list(node.notes) + list(factor.notes),
                seconds=None if factor.seconds is None else round(factor.seconds, 4),
            )
        )
    product = finite_or_none(network.upper_bound)
    upper = finite_or_none(tight.upper_bound) if tight is not None else product
    output_bounds = dict(network.outputs)
    if tight is not None:
        output_bounds.update(tight.outputs)
    scope = network_scope(network)
    if tight is not None and tight.local:  # per-neuron slopes on the domain gave the figure
        scope = "domain"
    if settings.get("domain") and scope == "global":
        notices = notices + ["the input range tightened no factor: the bound is a global one"]
    lower_value = finite_or_none(lower.value) if lower is not None else None
    model = ModelInfo(
        path=str(loaded.path),
        format=loaded.format,
        sha256=loaded.sha256,
        opset=graph.opset,
        inputs=[TensorInfo(name, list(graph.shape(name) or [])) for name in graph.inputs],
        outputs=[OutputBound(name, finite_or_none(value)) for name, value in output_bounds.items()],
        parameters=graph.parameter_count(),
    )
    network_result = NetworkResult(
        upper_bound=upper,
        certified=network.certified,
        complete=network.complete,
        lower_bound=lower_value,
        gap=upper / lower_value if upper is not None and lower_value else None,
        unsupported=list(network.unsupported),
        unbounded=list(network.unbounded),
        verified=verification.checked,
        scope=scope,
        method=tight.method if tight is not None else "product",
        product_bound=product,
        branches=list(tight.branches) if tight is not None else [],
        reproducible=irreproducible is None,
        reproducible_reason=irreproducible,
    )
    return Report(
        tool=ToolInfo(),
        model=model,
        settings=settings,
        layers=layers,
        network=network_result,
        threshold=threshold_verdict(upper, max_lipschitz),
        verification=verification,
        timings=timings,
        notices=notices,
    )


__all__ = [
    "Blocker",
    "BranchViolation",
    "ResidualBranch",
    "EXIT_INCOMPLETE",
    "EXIT_PASSED",
    "EXIT_THRESHOLD_EXCEEDED",
    "EXIT_USAGE",
    "LayerReport",
    "LayerViolation",
    "ModelInfo",
    "NetworkResult",
    "Report",
    "SCHEMA_VERSION",
    "Threshold",
    "ToolInfo",
    "Verification",
    "build_report",
    "finite_or_none",
    "network_scope",
    "skipped",
    "threshold_verdict",
    "within",
    "json_safe",
    "OutputBound",
    "TensorInfo",
]
