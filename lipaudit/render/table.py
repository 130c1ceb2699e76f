"""The terminal table: one row per layer, then a summary that reads at a glance."""

from __future__ import annotations

import io
import re
import textwrap

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..report import LayerReport, Report
from .verdict import bound_text, comparison, format_number, is_local, scope_text, verdict, verification_text

VERDICT_STYLES = {"PASSED": "bold green", "FAILED": "bold red", "INCOMPLETE": "bold red", "UNBOUNDED": "bold red"}


def _factor_cell(layer: LayerReport) -> Text:
    if layer.status == "unknown":
        return Text("unsupported", style="bold red")
    if layer.status == "unbounded":
        return Text("∞", style="bold red")
    return Text(format_number(layer.factor))


def _shape_text(shape: list[int] | None) -> str:
    return "?" if shape is None else "×".join(map(str, shape))


def layer_table(report: Report, verbose: bool = False) -> Table:
    title = f"lipaudit · {report.model.path}"
    if is_local(report):
        title += f" · {scope_text(report)}"
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("Layer")
    table.add_column("Op")
    table.add_column("Output")
    table.add_column("Factor", justify="right")
    table.add_column("Method")
    table.add_column("Cert", justify="center")
    table.add_column("Estimate", justify="right")
    table.add_column("Running bound", justify="right")
    if verbose:
        table.add_column("Time", justify="right")
    for index, layer in enumerate(report.layers, 1):
        certified = Text("✓", style="green") if layer.certified else Text("✗", style="red")
        cells: list[str | Text] = [
            str(index),
            layer.name,
            layer.op,
            _shape_text(layer.output_shape),
            _factor_cell(layer),
            layer.method,
            certified,
            format_number(layer.estimate),
            format_number(layer.running_bound),
        ]
        if verbose:
            cells.append("—" if layer.seconds is None else f"{layer.seconds:.2f}s")
        table.add_row(*cells)
    return table


def summary_lines(report: Report) -> list[Text]:
    network = report.network
    lines: list[Text] = []
    bound = network.upper_bound
    kind = "certified upper bound" if network.certified else "estimate (not certified)"
    if is_local(report):
        kind = "local " + kind
    if bound is not None:
        if network.method != "product" and network.product_bound is not None:
            kind += f"; {network.method}, product {format_number(network.product_bound)}"
        lines.append(Text.assemble(("Lipschitz bound  ", "bold"), (bound_text(report), "bold cyan"), f"  ({kind})"))
        if is_local(report):
            lines.append(
                Text(f"scope: {scope_text(report)}; it holds only for inputs in that box", style="bold yellow")
            )
    else:
        lines.append(
            Text.assemble(
                ("Lipschitz bound  ", "bold"), ("none", "bold red"), "  (the graph has ops without a finite bound)"
            )
        )
    lower = network.lower_bound
    if lower is not None and bound is not None:
        gap = f"{bound / lower:.3g}×" if lower > 0 else "—"
        interval = f"[{format_number(lower)}, {format_number(bound)}]"
        lines.append(
            Text.assemble(
                ("Lipschitz interval  ", "bold"), interval, f"  gap upper/lower {gap}  (lower: achieved by two inputs)"
            )
        )
    elif lower is not None:
        lines.append(
            Text.assemble(
                ("Empirical lower bound  ", "bold"),
                format_number(lower),
                "  (achieved by two inputs; no finite upper bound)",
            )
        )
    lines.append(
        Text(
            f"complete: {'yes' if network.complete else 'no'}   "
            f"certified: {'yes' if network.certified else 'no'}   verified: {verification_text(report)}"
        )
    )
    if not network.reproducible:
        lines.append(Text(f"reproducible: no ({network.reproducible_reason})", style="yellow"))
    if network.unsupported:
        lines.append(Text(f"unsupported ops ({len(network.unsupported)}):", style="red"))
        lines.extend(Text(f"  {b.node} ({b.op}): {b.reason}") for b in network.unsupported)
    if network.unbounded:
        lines.append(Text(f"unbounded ops ({len(network.unbounded)}):", style="red"))
        lines.extend(Text(f"  {b.node} ({b.op}): {b.reason}") for b in network.unbounded)
    lines.extend(_branch_lines(report))
    warnings = [(layer.name, note) for layer in report.layers for note in layer.notes if note.startswith("warning")]
    lines.extend(Text(f"{name}: {note}", style="yellow") for name, note in warnings)
    for violation in report.threshold.layers or []:
        lines.append(
            Text(
                f"layer {violation.name}: factor {comparison(violation.factor, '>', violation.limit)} (its limit)",
                style="red",
            )
        )
    for branch in report.threshold.branches or []:
        lines.append(
            Text(
                f"residual branch at {branch.add}: {format_number(branch.ratio)} ≥ limit {format_number(branch.limit)}",
                style="red",
            )
        )
    status, line = verdict(report)
    if status != "DONE":
        lines.append(Text(line, style=VERDICT_STYLES.get(status, "bold")))
    return lines


MAX_BRANCH_LINES = 12


def _branch_lines(report: Report) -> list[Text]:
    """Each residual branch's certified bound and whether it makes its block invertible."""
    branches = report.network.branches
    if not branches:
        return []
    invertible = sum(branch.invertible for branch in branches)
    lines = [Text(f"residual branches g of x + g(x): {len(branches)}, {invertible} certified invertible (Lip(g) < 1)")]
    for branch in branches[:MAX_BRANCH_LINES]:
        mark = "  invertible" if branch.invertible else ""
        lines.append(
            Text(
                f"  {branch.add} (from {branch.fork}): Lip(g) ≤ {format_number(branch.ratio)}  [{branch.method}]{mark}"
            )
        )
    if len(branches) > MAX_BRANCH_LINES:
        lines.append(Text(f"  … and {len(branches) - MAX_BRANCH_LINES} more (all in the JSON report)"))
    return lines


NOTE_INDENT = "    "
SENTENCE_END = re.compile(r"(?<=[.;])\s+(?=[A-Z(])")


def note_lines(report: Report, width: int) -> list[str]:
    """Each layer's notes below the table, a line per sentence, wrapped at ``width`` with a hanging
    indent (a column in the table would wrap them one word per line)."""
    lines = []
    for index, layer in enumerate(report.layers, 1):
        notes = layer.notes + ([layer.reason] if layer.reason else [])
        if not notes:
            continue
        lines.append(f"  {index} {layer.name}:")
        for note in notes:
            for sentence in SENTENCE_END.split(note):
                lines += textwrap.wrap(
                    sentence,
                    width=max(40, width - 2),
                    initial_indent=NOTE_INDENT,
                    subsequent_indent=NOTE_INDENT + "  ",
                )
    return (["notes:", *lines]) if lines else []


def render_table(report: Report, *, width: int = 120, color: bool = False, verbose: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=color, no_color=not color, highlight=False)
    console.print(layer_table(report, verbose))
    if verbose:
        for line in note_lines(report, width):
            console.print(Text(line), soft_wrap=True)
    for summary in summary_lines(report):
        console.print(summary)
    return buffer.getvalue()
