"""Compare two reports: what grew, shrank, appeared or vanished, and whether that is a regression."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import UsageError
from .report import Report


def parse_increase(text: str) -> float:
    """'5%' → 0.05, '0.05' → 0.05."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"cannot read --max-increase '{text}'", hint="write it as 5% or 0.05") from None
    if value < 0 or not math.isfinite(value):
        raise UsageError(f"--max-increase must be a non-negative number, not '{text}'")
    return value


@dataclass
class Change:
    name: str
    op: str
    before: float | None
    after: float | None

    @property
    def ratio(self) -> float | None:
        if self.before is None or self.after is None or self.before == 0:
            return None
        return self.after / self.before


@dataclass
class ReportDiff:
    network_before: float | None
    network_after: float | None
    max_increase: float
    grew: list[Change] = field(default_factory=list)
    shrank: list[Change] = field(default_factory=list)
    appeared: list[Change] = field(default_factory=list)
    vanished: list[Change] = field(default_factory=list)

    @property
    def network_ratio(self) -> float | None:
        if self.network_before in (None, 0) or self.network_after is None:
            return None
        return self.network_after / self.network_before

    @property
    def regressed(self) -> bool:
        if self.network_after is None:
            return self.network_before is not None  # it had a bound and lost it
        if self.network_before is None:
            return False
        return self.network_after > self.network_before * (1 + self.max_increase)


def _factors(report: Report) -> dict[str, tuple[str, float | None]]:
    return {layer.name: (layer.op, layer.factor) for layer in report.layers}


def diff_reports(base: Report, new: Report, max_increase: float = 0.0) -> ReportDiff:
    result = ReportDiff(base.upper_bound, new.upper_bound, max_increase)
    before, after = _factors(base), _factors(new)
    for name, (op, value) in after.items():
        if name not in before:
            result.appeared.append(Change(name, op, None, value))
            continue
        old = before[name][1]
        change = Change(name, op, old, value)
        if old is not None and value is not None:
            if value > old * (1 + 1e-9):
                result.grew.append(change)
            elif value < old * (1 - 1e-9):
                result.shrank.append(change)
        elif (old is None) != (value is None):
            (result.grew if value is None else result.shrank).append(change)
    result.vanished = [Change(name, op, value, None) for name, (op, value) in before.items() if name not in after]
    return result
