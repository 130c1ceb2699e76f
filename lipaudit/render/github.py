"""GitHub Actions workflow commands: annotations that show on the pull request."""

from __future__ import annotations

from ..report import Report
from .verdict import verdict


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(level: str, path: str, message: str) -> str:
    return f"::{level} file={_escape_property(path)},title=lipaudit::{_escape_data(message)}"


def render_github(report: Report, **_: object) -> str:
    path = report.model.path
    lines = []
    for blocker in report.network.unsupported:
        lines.append(_command("error", path, f"unsupported op {blocker.op} at '{blocker.node}': {blocker.reason}"))
    for blocker in report.network.unbounded:
        lines.append(_command("error", path, f"unbounded op {blocker.op} at '{blocker.node}': {blocker.reason}"))
    status, line = verdict(report)
    if status == "FAILED":
        lines.append(_command("error", path, line))
    elif status in ("PASSED", "DONE"):
        lines.append(_command("notice", path, line))
    for layer in report.layers:
        for note in layer.notes:
            if note.startswith("warning"):
                lines.append(_command("warning", path, f"{layer.name}: {note}"))
    return "\n".join(lines) + "\n"
