"""The operator reference, generated from the rule registry (docs/operators.md is its output)."""

from __future__ import annotations

from ..analyzers import all_rules

HEADER = """# Supported operators

Generated from lipaudit's rule registry by `lipaudit ops --format markdown`; a test keeps this file
in sync. Any op not listed here is reported as *unsupported*: it never counts as 1, the bound is
marked incomplete and `lipaudit check` exits 3.

Certified ✓: the rule gives a guaranteed upper bound. ✗: the op is not globally Lipschitz, and
is reported as *unbounded* with its reason.
"""


def operators_markdown() -> str:
    lines = [HEADER]
    family = None
    for entry in all_rules():
        if entry.family != family:
            family = entry.family
            lines += ["", f"## {family.capitalize()}", "",
                      "| Op | Domain | Since opset | Factor | Certified |", "|---|---|---:|---|:---:|"]
        summary = entry.summary.replace("|", "\\|")
        lines.append(f"| {entry.op_type} | {entry.domain or 'ai.onnx'} | {entry.since_opset} | {summary} | "
                     f"{'✓' if entry.certified else '✗'} |")
    return "\n".join(lines) + "\n"
