"""The operator reference, generated from the rule registry (docs/operators.md is its output)."""

from __future__ import annotations

import functools

import onnx.defs

from ..ops import all_ops

HEADER = """# Supported operators

Generated from lipaudit's rule registry by `lipaudit ops --format markdown`; a test keeps this file
in sync. Any op not listed here is reported as *unsupported*: it never counts as 1, the bound is
marked incomplete and `lipaudit check` exits 3.

Certified ✓: the rule gives a guaranteed upper bound. ✗: the op is not globally Lipschitz, and
is reported as *unbounded* with its reason.
"""


@functools.lru_cache(maxsize=1)
def _first_versions() -> dict[tuple[str, str], int]:
    first: dict[tuple[str, str], int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        key = (schema.domain, schema.name)
        first[key] = min(first.get(key, schema.since_version), schema.since_version)
    return first


def since_opset(op_type: str, domain: str = "") -> str:
    """The ONNX opset that introduced the op, or how else lipaudit meets it."""
    version = _first_versions().get((domain, op_type))
    if version is not None:
        return str(version)
    return "fused by lipaudit" if not domain or domain == "lipaudit" else "contrib"


def operators_markdown() -> str:
    lines = [HEADER]
    family = None
    for entry in all_ops(latest_only=True):
        if entry.family != family:
            family = entry.family
            lines += [
                "",
                f"## {family.capitalize()}",
                "",
                "| Op | Domain | In ONNX since opset | Factor | Certified |",
                "|---|---|---:|---|:---:|",
            ]
        summary = entry.summary.replace("|", "\\|")
        lines.append(
            f"| {entry.op_type} | {entry.domain or 'ai.onnx'} | {since_opset(entry.op_type, entry.domain)} | "
            f"{summary} | {'✓' if entry.certified else '✗'} |"
        )
    return "\n".join(lines) + "\n"
