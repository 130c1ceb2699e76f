"""`lipaudit ops`: every op with a rule, and what the rule says."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from ..analyzers import all_rules


def ops() -> None:
    """List the supported operators, their Lipschitz rules, and whether the factor is certified."""
    table = Table(header_style="bold")
    for column in ("Op", "Domain", "Since opset", "Family", "Rule", "Certified"):
        table.add_column(column)
    for entry in all_rules():
        table.add_row(entry.op_type, entry.domain or "ai.onnx", str(entry.since_opset), entry.family, entry.summary,
                      "✓" if entry.certified else "✗ (no finite bound)")
    Console(file=sys.stdout, width=160).print(table)
