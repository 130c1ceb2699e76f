"""`lipaudit diff BASE.json NEW.json`: compare two reports and gate on the increase."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from ..diff import Change, ReportDiff, diff_reports, parse_increase
from ..errors import UsageError
from ..render.collection import COLLECTION_KIND
from ..render.verdict import format_number
from ..report import EXIT_PASSED, EXIT_THRESHOLD_EXCEEDED, SCHEMA_VERSION, Report
from .errors import report_errors

NUMBER_FIELDS = {
    "network": ("upper_bound", "lower_bound", "product_bound"),
    "threshold": ("max_lipschitz",),
}


def _strict_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_strict_constant)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="pass two JSON reports from `lipaudit check -f json`") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UsageError(
            f"{path} is not a JSON report ({type(error).__name__})",
            hint="write one with `lipaudit check MODEL -f json -o report.json`",
        ) from None


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _malformed(data: dict) -> str:
    """What makes ``data`` unreadable as a report ('' when nothing): the fields diff and gates compare."""
    for section, names in NUMBER_FIELDS.items():
        part = data.get(section, {})
        if not isinstance(part, dict):
            return f"'{section}' is not an object"
        for name in names:
            if not _is_number(part.get(name)):
                return f"{section}.{name} is {part.get(name)!r}, not a number or null"
    if not isinstance(data.get("model"), dict) or not isinstance(data["model"].get("path"), str):
        return "model.path is missing"
    layers = data.get("layers", [])
    if not isinstance(layers, list):
        return "'layers' is not a list"
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            return f"layers[{index}] has no name"
        if not _is_number(layer.get("factor")):
            return f"layers[{index}].factor is {layer.get('factor')!r}, not a number or null"
    return ""


def report_from_data(data: Any, where: str) -> Report:
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or "network" not in data:
        raise UsageError(f"{where} is not a lipaudit report of schema version {SCHEMA_VERSION}")
    problem = _malformed(data)
    if problem:
        raise UsageError(f"{where} is not a valid lipaudit report: {problem}", hint="compare reports lipaudit wrote")
    try:
        return Report.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UsageError(f"{where} is not a complete lipaudit report ({type(error).__name__}: {error})") from None


def read_report(path: Path) -> Report:
    data = _load_json(path)
    if isinstance(data, dict) and data.get("kind") == COLLECTION_KIND:
        reports = [entry.get("report") for entry in data.get("models", []) if isinstance(entry, dict)]
        reports = [report for report in reports if report is not None]
        if len(reports) != 1:
            raise UsageError(
                f"{path} holds {len(reports)} reports, not one",
                hint="compare one model's reports, or give it to `check --baseline`, which matches models by path",
            )
        return report_from_data(reports[0], str(path))
    return report_from_data(data, str(path))


@dataclass
class Baselines:
    """The reports of --baseline: one report, or a multi-model document matched by model path."""

    path: Path
    reports: dict[str, Report] = field(default_factory=dict)
    single: Report | None = None

    def for_model(self, model: Path, report: Report, several: bool = False) -> Report | None:
        """The baseline of ``model``: the one report when one model is checked; else the report
        of the same model path (None when the baseline has none)."""
        if self.single is not None and not several:
            return self.single
        reports = self.reports or ({self.single.model.path: self.single} if self.single is not None else {})
        for key in (str(model), os.path.normpath(model), report.model.path):
            if key in reports:
                return reports[key]
        return None


def read_baselines(path: Path) -> Baselines:
    data = _load_json(path)
    if isinstance(data, dict) and data.get("kind") == COLLECTION_KIND:
        found = {}
        for index, entry in enumerate(data.get("models", [])):
            if isinstance(entry, dict) and entry.get("report") is not None:
                report = report_from_data(entry["report"], f"{path} (models[{index}])")
                found[os.path.normpath(str(entry.get("path", report.model.path)))] = report
                found[str(entry.get("path", report.model.path))] = report
        return Baselines(path, found)
    return Baselines(path, single=report_from_data(data, str(path)))


def _change_line(sign: str, change: Change) -> str:
    ratio = f"  ×{change.ratio:.3f}" if change.ratio is not None else ""
    return (
        f"  {sign} {change.name} ({change.op}): {format_number(change.before)} → {format_number(change.after)}{ratio}"
    )


def describe(result: ReportDiff) -> list[str]:
    lines = [f"warning: {warning}" for warning in result.warnings]
    ratio = f" (×{result.network_ratio:.4f})" if result.network_ratio is not None else ""
    lines.append(
        f"network bound: {format_number(result.network_before)} → {format_number(result.network_after)}{ratio}"
    )
    for title, sign, changes in (
        ("grew", "+", result.grew),
        ("shrank", "-", result.shrank),
        ("appeared", ">", result.appeared),
        ("vanished", "<", result.vanished),
    ):
        if changes:
            lines.append(f"{title} ({len(changes)}):")
            lines.extend(_change_line(sign, change) for change in changes)
    limit = f"{result.max_increase:.2%}"
    lines.append(
        f"REGRESSED  the bound grew by more than {limit}"
        if result.regressed
        else f"OK  within the allowed increase of {limit}"
    )
    return lines


@report_errors
def diff(
    base: Path = typer.Argument(..., help="The baseline JSON report.", show_default=False),
    new: Path = typer.Argument(..., help="The new JSON report.", show_default=False),
    max_increase: str = typer.Option("0%", "--max-increase", help="Allowed growth of the network bound: 5% or 0.05."),
    output_format: str = typer.Option("text", "--format", "-f", metavar="FORMAT", help="text or json."),
) -> None:
    """Compare two reports by layer name. Exit 1 when the network bound grew by more than --max-increase.

    Warns when the two reports come from different model files (their content hashes differ) or
    from different settings: the figures then differ for more reasons than a change of weights."""
    if output_format not in ("text", "json"):
        raise UsageError(f"unknown format '{output_format}'", hint="choose text or json")
    before, after = read_report(base), read_report(new)
    result = diff_reports(before, after, parse_increase(max_increase))
    if output_format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        for warning in result.warnings:
            typer.echo(f"lipaudit: warning: {warning}", err=True)
        typer.echo("\n".join(line for line in describe(result) if not line.startswith("warning: ")))
    raise typer.Exit(EXIT_THRESHOLD_EXCEEDED if result.regressed else EXIT_PASSED)
