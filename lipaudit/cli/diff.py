"""`lipaudit diff BASE.json NEW.json`: compare two reports and gate on the increase."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..diff import Change, ReportDiff, diff_reports, parse_increase
from ..errors import UsageError
from ..render.verdict import format_number
from ..report import EXIT_PASSED, EXIT_THRESHOLD_EXCEEDED, SCHEMA_VERSION, Report
from .errors import report_errors


def read_report(path: Path) -> Report:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="pass two JSON reports from `lipaudit check -f json`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(
            f"{path} is not a JSON report ({type(error).__name__})",
            hint="write one with `lipaudit check MODEL -f json -o report.json`",
        ) from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or "network" not in data:
        raise UsageError(f"{path} is not a lipaudit report of schema version {SCHEMA_VERSION}")
    try:
        return Report.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{path} is not a complete lipaudit report ({type(error).__name__}: {error})") from None


def _change_line(sign: str, change: Change) -> str:
    ratio = f"  ×{change.ratio:.3f}" if change.ratio is not None else ""
    return (
        f"  {sign} {change.name} ({change.op}): {format_number(change.before)} → {format_number(change.after)}{ratio}"
    )


def describe(result: ReportDiff) -> list[str]:
    lines = []
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
) -> None:
    """Compare two reports by layer name. Exit 1 when the network bound grew by more than --max-increase."""
    result = diff_reports(read_report(base), read_report(new), parse_increase(max_increase))
    typer.echo("\n".join(describe(result)))
    raise typer.Exit(EXIT_THRESHOLD_EXCEEDED if result.regressed else EXIT_PASSED)
