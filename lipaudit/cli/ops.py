"""`lipaudit ops`: every op with a rule, and what the rule says."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..ops import all_ops
from ..render.operators import operators_markdown, since_opset
from .errors import report_errors


def operators_json() -> str:
    """Every op with a rule, as a JSON list of {op, domain, since_opset, family, rule, certified}."""
    entries = [
        {
            "op": entry.op_type,
            "domain": entry.domain or "ai.onnx",
            "since_opset": since_opset(entry.op_type, entry.domain),
            "family": entry.family,
            "rule": entry.summary,
            "certified": bool(entry.certified),
        }
        for entry in all_ops(latest_only=True)
    ]
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


@report_errors
def ops(output_format: str = typer.Option("table", "--format", "-f", help="table, markdown or json.")) -> None:
    """List the supported operators, their Lipschitz rules, and whether the factor is certified."""
    if output_format == "markdown":
        sys.stdout.write(operators_markdown())
        return
    if output_format == "json":
        sys.stdout.write(operators_json())
        return
    if output_format != "table":
        raise UsageError(f"unknown format '{output_format}'", hint="choose table, markdown or json")
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
