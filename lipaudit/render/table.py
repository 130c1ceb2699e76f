"""The terminal table: one row per layer, then a summary that reads at a glance."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..report import LayerReport, Report


def format_number(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _factor_cell(layer: LayerReport) -> Text:
    if layer.status == "unknown":
        return Text("unsupported", style="bold red")
    if layer.status == "unbounded":
        return Text("∞", style="bold red")
    return Text(format_number(layer.factor))


def _shape_text(shape: list[int] | None) -> str:
    return "?" if shape is None else "×".join(map(str, shape))


def layer_table(report: Report) -> Table:
    table = Table(title=f"lipaudit · {report.model['path']}", title_justify="left", header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("Layer")
    table.add_column("Op")
    table.add_column("Output")
    table.add_column("Factor", justify="right")
    table.add_column("Method")
    table.add_column("Cert", justify="center")
    table.add_column("Estimate", justify="right")
    table.add_column("Running bound", justify="right")
    for index, layer in enumerate(report.layers, 1):
        certified = Text("✓", style="green") if layer.certified else Text("✗", style="red")
        table.add_row(str(index), layer.name, layer.op, _shape_text(layer.output_shape), _factor_cell(layer),
                      layer.method, certified, format_number(layer.estimate), format_number(layer.running_bound))
    return table


def summary_lines(report: Report) -> list[Text]:
    network = report.network
    lines: list[Text] = []
    bound = network["upper_bound"]
    kind = "certified upper bound" if network["certified"] else "estimate (not certified)"
    if bound is not None:
        lines.append(Text.assemble(("Lipschitz bound  ", "bold"), (format_number(bound), "bold cyan"), f"  ({kind})"))
    else:
        lines.append(Text.assemble(("Lipschitz bound  ", "bold"), ("none", "bold red"),
                                   "  (the graph has ops without a finite bound)"))
    lower = network.get("lower_bound")
    if lower is not None and bound is not None:
        gap = f"{bound / lower:.3g}×" if lower > 0 else "—"
        interval = f"[{format_number(lower)}, {format_number(bound)}]"
        lines.append(Text.assemble(("Lipschitz interval  ", "bold"), interval,
                                   f"  gap upper/lower {gap}  (lower: achieved by two inputs)"))
    elif lower is not None:
        lines.append(Text.assemble(("Empirical lower bound  ", "bold"), format_number(lower),
                                   "  (achieved by two inputs; no finite upper bound)"))
    lines.append(Text(f"complete: {'yes' if network['complete'] else 'no'}   "
                      f"certified: {'yes' if network['certified'] else 'no'}"))
    if network["unsupported"]:
        lines.append(Text(f"unsupported ops ({len(network['unsupported'])}):", style="red"))
        lines.extend(Text(f"  {b['node']} ({b['op']}): {b['reason']}") for b in network["unsupported"])
    if network["unbounded"]:
        lines.append(Text(f"unbounded ops ({len(network['unbounded'])}):", style="red"))
        lines.extend(Text(f"  {b['node']} ({b['op']}): {b['reason']}") for b in network["unbounded"])
    warnings = [(layer.name, note) for layer in report.layers for note in layer.notes if note.startswith("warning")]
    lines.extend(Text(f"{name}: {note}", style="yellow") for name, note in warnings)
    threshold = report.threshold
    if threshold.get("max_lipschitz") is not None:
        limit = format_number(threshold["max_lipschitz"])
        if threshold["passed"] is True:
            lines.append(Text(f"PASSED  bound {format_number(bound)} ≤ {limit}", style="bold green"))
        elif threshold["passed"] is False:
            lines.append(Text(f"FAILED  bound {format_number(bound)} > {limit}", style="bold red"))
        else:
            lines.append(Text(f"NOT CHECKED  no finite bound to compare with {limit}", style="bold red"))
    return lines


def render_table(report: Report, *, width: int = 120, color: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=color, no_color=not color, highlight=False)
    console.print(layer_table(report))
    for line in summary_lines(report):
        console.print(line)
    return buffer.getvalue()
