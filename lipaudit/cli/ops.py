"""`lipaudit ops`: every op with a rule, and what the rule says."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..ops import all_ops
from ..render.operators import operators_markdown, since_opset
from .errors import report_errors


@report_errors
def ops(output_format: str = typer.Option("table", "--format", "-f", help="table or markdown.")) -> None:
    """List the supported operators, their Lipschitz rules, and whether the factor is certified."""
    if output_format == "markdown":
        sys.stdout.write(operators_markdown())
        return
    if output_format != "table":
        raise UsageError(f"unknown format '{output_format}'", hint="choose table or markdown")
    table = Table(header_style="bold")
    for column in ("Op", "Domain", "In ONNX since", "Family", "Rule", "Certified"):
        table.add_column(column)
    for entry in all_ops(latest_only=True):
        table.add_row(
            entry.op_type,
            entry.domain or "ai.onnx",
            since_opset(entry.op_type, entry.domain),
            entry.family,
            entry.summary,
            "✓" if entry.certified else "✗ (no finite bound)",
        )
    Console(file=sys.stdout, width=160).print(table)
