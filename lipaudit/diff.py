"""Compare two reports: what grew, shrank, appeared or vanished, and whether that is a regression."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UsageError
from .report import Report, json_safe


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
    # Why the two figures may differ for more than a change of weights: another model file, other settings.
    warnings: list[str] = field(default_factory=list)

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

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON: both figures, the ratio, every change, the warnings and the verdict."""
        replaced: list[dict[str, str]] = []
        data = json_safe(
            {
                "network": {"before": self.network_before, "after": self.network_after, "ratio": self.network_ratio},
                "max_increase": self.max_increase,
                "regressed": self.regressed,
                "warnings": list(self.warnings),
                **{
                    name: [{**asdict(change), "ratio": change.ratio} for change in changes]
                    for name, changes in (
                        ("grew", self.grew),
                        ("shrank", self.shrank),
                        ("appeared", self.appeared),
                        ("vanished", self.vanished),
                    )
                },
            },
            "",
            replaced,
        )
        data["non_finite"] = replaced
        return data


# Settings that change a figure but not the model: a diff across them compares two different measurements.
COMPARED_SETTINGS = ("norm", "method", "bound", "domain", "device")


def report_mismatches(base: Report, new: Report) -> list[str]:
    """Why ``base`` and ``new`` may not measure the same thing: a different model file, other settings."""
    warnings = []
    if base.model.sha256 and new.model.sha256 and base.model.sha256 != new.model.sha256:
        same_layers = _structure(base) == _structure(new)
        warnings.append(
            f"the reports are of different model files ({base.model.path}, sha256 {base.model.sha256[:12]}…; "
            f"{new.model.path}, sha256 {new.model.sha256[:12]}…)"
            + ("; the layers are the same: new weights?" if same_layers else "; their layers differ too")
        )
    changed = [
        f"{key} {base.settings.get(key)!r} → {new.settings.get(key)!r}"
        for key in COMPARED_SETTINGS
        if base.settings.get(key) != new.settings.get(key)
    ]
    if changed:
        warnings.append("the reports were made with different settings: " + ", ".join(changed))
    return warnings


def _structure(report: Report) -> list[tuple[str, str, list[int] | None]]:
    return [(layer.name, layer.op, layer.output_shape) for layer in report.layers]


def _factors(report: Report) -> dict[str, tuple[str, float | None]]:
    return {layer.name: (layer.op, layer.factor) for layer in report.layers}


def diff_reports(base: Report, new: Report, max_increase: float = 0.0) -> ReportDiff:
    result = ReportDiff(base.upper_bound, new.upper_bound, max_increase, warnings=report_mismatches(base, new))
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
