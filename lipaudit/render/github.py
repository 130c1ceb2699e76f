"""GitHub Actions workflow commands: annotations that show on the pull request.

Each model gets one annotation for its verdict, one per op without a finite bound, one per layer
over its limit and one per residual branch over its limit, all at the model's file."""

from __future__ import annotations

from ..report import Report
from .verdict import bound_summary, comparison, format_number, verdict


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(level: str, path: str, message: str) -> str:
    return f"::{level} file={_escape_property(path)},title=lipaudit::{_escape_data(message)}"


def error_annotation(path: str, message: str) -> str:
    """The annotation of a model that could not be audited."""
    return _command("error", path, f"ERROR  {message}") + "\n"


def render_github(report: Report, **_: object) -> str:
    path = report.model.path
    lines = []
    for blocker in report.network.unsupported:
        lines.append(_command("error", path, f"unsupported op {blocker.op} at '{blocker.node}': {blocker.reason}"))
    for blocker in report.network.unbounded:
        lines.append(_command("error", path, f"unbounded op {blocker.op} at '{blocker.node}': {blocker.reason}"))
    for violation in report.threshold.layers or []:
        text = f"layer {violation.name} ({violation.op}): factor {comparison(violation.factor, '>', violation.limit)}"
        lines.append(_command("error", path, text))
    for branch in report.threshold.branches or []:
        lines.append(
            _command(
                "error",
                path,
                f"residual branch at {branch.add}: {format_number(branch.ratio)} ≥ limit {format_number(branch.limit)}",
            )
        )
    status, line = verdict(report)
    how = bound_summary(report)
    line += f"  ({how})" if how else ""
    if status in ("FAILED", "INCOMPLETE", "UNBOUNDED"):
        lines.append(_command("error", path, line))
    else:
        lines.append(_command("notice", path, line))
    for layer in report.layers:
        for note in layer.notes:
            if note.startswith("warning"):
                lines.append(_command("warning", path, f"{layer.name}: {note}"))
    return "\n".join(lines) + "\n"
