"""The report: everything a renderer shows and the JSON schema (version 1) that carries it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1

EXIT_PASSED = 0
EXIT_THRESHOLD_EXCEEDED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


def finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


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


@dataclass
class Report:
    tool: dict[str, str]
    model: dict[str, Any]
    settings: dict[str, Any]
    layers: list[LayerReport]
    network: dict[str, Any]
    threshold: dict[str, Any]
    # The faithfulness check: {"checked": true, "reference", "max_abs_diff", "inputs"} or {"checked": false, "reason"}.
    verification: dict[str, Any] = field(default_factory=lambda: {"checked": False, "reason": "not run"})
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def upper_bound(self) -> float | None:
        return self.network["upper_bound"]

    @property
    def lower_bound(self) -> float | None:
        return self.network.get("lower_bound")

    @property
    def bounded_and_complete(self) -> bool:
        return self.network["complete"] and not self.network["unbounded"] and self.upper_bound is not None

    def exit_code(self, allow_incomplete: bool = False) -> int:
        if not self.bounded_and_complete and not allow_incomplete:
            return EXIT_INCOMPLETE
        if self.threshold.get("passed") is False:
            return EXIT_THRESHOLD_EXCEEDED
        return EXIT_PASSED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        ordered = {"schema_version": data.pop("schema_version")}
        ordered.update(data)
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported report schema_version {data.get('schema_version')!r}")
        fields = {k: v for k, v in data.items() if k != "layers"}
        return cls(layers=[LayerReport(**layer) for layer in data.get("layers", [])], **fields)


def threshold_verdict(upper_bound: float | None, max_lipschitz: float | None) -> dict[str, Any]:
    if max_lipschitz is None:
        return {"max_lipschitz": None, "passed": None}
    if upper_bound is None:
        return {"max_lipschitz": max_lipschitz, "passed": None}
    return {"max_lipschitz": max_lipschitz, "passed": bool(upper_bound <= max_lipschitz)}


__all__ = ["EXIT_INCOMPLETE", "EXIT_PASSED", "EXIT_THRESHOLD_EXCEEDED", "EXIT_USAGE", "LayerReport", "Report",
           "SCHEMA_VERSION", "finite_or_none", "threshold_verdict"]
