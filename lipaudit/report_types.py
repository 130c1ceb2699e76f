"""The report's leaf types: plain records that the analysis stages fill in (compose, tight, execute).

They import nothing from lipaudit, so a stage can build them without importing the report (which
knows every stage to assemble itself); ``lipaudit.report`` re-exports them under the old names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EXIT_PASSED = 0
EXIT_THRESHOLD_EXCEEDED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


def finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class TensorInfo:
    name: str
    shape: list[int]


@dataclass
class OutputBound:
    name: str
    upper_bound: float | None


@dataclass
class Blocker:
    """An op that keeps the network bound from being finite: unsupported (no rule) or unbounded."""

    node: str
    op: str
    reason: str


@dataclass
class ResidualBranch:
    """A residual branch g of y = c_x·x + c_g·g(x): ``bound`` ≥ Lip(g) (certified when the network's
    figure is). The layer is invertible (i-ResNet) when ``ratio`` = |c_g/c_x|·bound < 1.
    A figure is None where it was not finite (a report read back from JSON)."""

    add: str  # the Add node joining the branch and the shortcut
    fork: str  # the node (or input) whose value x both read
    bound: float | None
    product: float | None  # the product of the branch's factors, for comparison
    ratio: float | None
    method: str
    nodes: int

    @property
    def invertible(self) -> bool:
        return self.ratio is not None and self.ratio < 1.0


@dataclass
class LayerViolation:
    name: str
    op: str
    factor: float | None
    limit: float


@dataclass
class BranchViolation:
    add: str
    ratio: float | None
    limit: float


@dataclass
class Verification:
    """The faithfulness check: did the IR compute what the model's runtime computes?"""

    checked: bool
    reason: str = ""
    max_abs_diff: float | None = None
    inputs: int = 0
    reference: str = ""
    values: int = 0  # intermediate and output values compared with the runtime

    def to_dict(self) -> dict[str, Any]:
        if not self.checked:
            return {"checked": False, "reason": self.reason}
        return {
            "checked": True,
            "reference": self.reference,
            "max_abs_diff": self.max_abs_diff,
            "inputs": self.inputs,
            "values": self.values,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verification:
        return cls(**data)


def skipped(reason: str) -> Verification:
    return Verification(False, reason=reason)
