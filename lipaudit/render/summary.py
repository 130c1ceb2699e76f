"""One row per model, for `lipaudit check a.onnx b.onnx …`."""

from __future__ import annotations

import io

from rich.console import Console, JustifyMethod
from rich.table import Table

from ..report import Report
from .verdict import bound_text, is_local, verdict


def render_summary(rows: list[tuple[str, Report | None, str]], *, width: int = 120, color: bool = False) -> str:
    """``rows``: (model path, its report or None when it failed to load, error text)."""
    table = Table(title="lipaudit", title_justify="left", header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("Model", "left"),
        ("Upper bound", "right"),
        ("Certified", "center"),
        ("Complete", "center"),
        ("Verdict", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for path, report, error in rows:
        if report is None:
            table.add_row(path, "—", "—", "—", f"ERROR  {error}")
            continue
        network = report.network
        bound = bound_text(report) + (" (local)" if is_local(report) else "")
        table.add_row(
            path, bound, "✓" if network.certified else "✗", "✓" if network.complete else "✗", verdict(report)[1]
        )
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=color, no_color=not color, highlight=False).print(table)
    return buffer.getvalue()
