"""A pipe table and a verdict line: for $GITHUB_STEP_SUMMARY or a pull-request comment."""

from __future__ import annotations

import re

from ..report import LayerReport, Report
from .verdict import (
    bound_text,
    branch_rows,
    format_number,
    is_local,
    method_text,
    scope_text,
    verdict,
    verification_text,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """``text`` as inline code, whatever backticks it holds: a fence one longer than its longest run."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _text(text: str) -> str:
    """Plain text from the model (node names in a sentence): Markdown's marks escaped."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text.replace("\n", " "))


def _factor(layer: LayerReport) -> str:
    if layer.status == "unknown":
        return "**unsupported**"
    if layer.status == "unbounded":
        return "**∞**"
    return format_number(layer.factor)


def render_markdown(report: Report, **_: object) -> str:
    network = report.network
    status, line = verdict(report)
    icon = {"PASSED": "✅", "FAILED": "❌", "INCOMPLETE": "⚠️", "UNBOUNDED": "⚠️"}.get(status, "ℹ️")
    lines = [f"### lipaudit · {_code(report.model.path)}", "", f"{icon} **{line}**", ""]
    bound = network.upper_bound
    kind = "certified" if network.certified else "not certified"
    lines.append(
        f"Upper bound: **{bound_text(report)}** ({kind}, "
        f"{'complete' if network.complete else 'incomplete'}); verified against the runtime: "
        f"{_text(verification_text(report))}"
    )
    if bound is not None:
        lines += ["", f"Network bound: {method_text(report)}"]
    if is_local(report):
        lines.append(f"Scope: **{scope_text(report)}**; it holds only for inputs in that box.")
    if network.lower_bound is not None:
        lines.append(f"Empirical lower bound: {format_number(network.lower_bound)}")
    lines += [
        "",
        "| # | Layer | Op | Output | Factor | Method | Certified | Estimate | Running bound |",
        "|---:|---|---|---|---:|---|:---:|---:|---:|",
    ]
    for index, layer in enumerate(report.layers, 1):
        shape = "×".join(map(str, layer.output_shape)) if layer.output_shape else "?"
        lines.append(
            "| "
            + " | ".join(
                [
                    str(index),
                    _cell(_code(layer.name)),
                    layer.op,
                    shape,
                    _factor(layer),
                    layer.method,
                    "✓" if layer.certified else "✗",
                    format_number(layer.estimate),
                    format_number(layer.running_bound),
                ]
            )
            + " |"
        )
    branches = branch_rows(report)
    if branches:
        invertible = sum(row[5] == "yes" for row in branches)
        lines += [
            "",
            f"**Residual branches g of x + g(x):** {len(branches)}, {invertible} certified invertible (Lip(g) < 1)",
            "",
            "| Add | From | Lip(g) ≤ | Product | Method | Invertible |",
            "|---|---|---:|---:|---|:---:|",
        ]
        lines += [
            f"| `{_cell(add)}` | `{_cell(fork)}` | {ratio} | {product} | {method} | {inv} |"
            for add, fork, ratio, product, method, inv in branches
        ]
    blockers = [("unsupported", b) for b in network.unsupported] + [("unbounded", b) for b in network.unbounded]
    if blockers:
        lines += ["", "**Ops without a finite bound:**", ""]
        lines += [f"- `{_cell(b.node)}` ({b.op}, {kind_}): {_cell(b.reason)}" for kind_, b in blockers]
    return "\n".join(lines) + "\n"
