"""A self-contained HTML report: summary, per-layer table and an inline SVG chart. No fetches."""

from __future__ import annotations

import html
import math

from ..report import Report
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

CHART_WIDTH, CHART_HEIGHT, MARGIN = 900, 320, 48

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.3rem} .verdict{font-size:1.1rem;font-weight:600;padding:.5rem .8rem;border-radius:6px;
display:inline-block} .PASSED{background:#dafbe1} .FAILED,.INCOMPLETE,.UNBOUNDED{background:#ffebe9}
.DONE{background:#ddf4ff}
table{border-collapse:collapse;margin-top:1rem;font-size:.9rem} th,td{border:1px solid #d0d7de;padding:.25rem .5rem}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.blocked td{background:#ffebe9}
.legend span{margin-right:1.2rem} svg text{font-size:11px;fill:#57606a}
td.notes{max-width:26rem;font-size:.8rem;color:#57606a}
.scope{background:#fff8c5;padding:.4rem .8rem;border-radius:6px;display:inline-block}
"""


def _log_scale(values: list[float]) -> tuple[float, float]:
    positive = [v for v in values if v > 0]
    if not positive:
        return -1.0, 1.0
    low, high = math.log10(min(positive)), math.log10(max(positive))
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    return math.floor(low), math.ceil(high)


def chart_svg(report: Report) -> str:
    """Bars: each layer's factor (log scale). Line: the running bound through the network."""
    layers = report.layers
    factors = [layer.factor if layer.factor is not None else 0.0 for layer in layers]
    running = [layer.running_bound for layer in layers]
    lower = report.network.lower_bound
    # The lower bound is in the scale too: outside it, its line would be clamped to the chart's edge.
    extra = [lower] if lower else []
    low, high = _log_scale(factors + [r for r in running if r is not None] + [1.0] + extra)
    plot_w, plot_h = CHART_WIDTH - 2 * MARGIN, CHART_HEIGHT - 2 * MARGIN
    step = plot_w / max(1, len(layers))

    def y_of(value: float) -> float:
        fraction = (math.log10(value) - low) / (high - low) if value > 0 else 0.0
        return MARGIN + plot_h * (1 - min(1.0, max(0.0, fraction)))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="chart" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="per-layer factors">'
    ]
    for exponent in range(int(low), int(high) + 1):
        y = y_of(10.0**exponent)
        parts.append(f'<line x1="{MARGIN}" x2="{CHART_WIDTH - MARGIN}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{MARGIN - 6}" y="{y + 4:.1f}" text-anchor="end">1e{exponent}</text>')
    baseline = y_of(1.0)
    for index, (layer, factor) in enumerate(zip(layers, factors)):
        x = MARGIN + index * step + step * 0.15
        blocked = layer.status != "bounded"
        top = MARGIN if blocked else y_of(factor)
        y, height = (min(top, baseline), abs(baseline - top)) if not blocked else (MARGIN, plot_h)
        colour = "#cf222e" if blocked else ("#2da44e" if layer.certified else "#bf8700")
        title = html.escape(
            f"{layer.name} ({layer.op}): {format_number(layer.factor) if not blocked else layer.status}"
        )
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{max(height, 1):.1f}" '
            f'fill="{colour}" opacity="0.75"><title>{title}</title></rect>'
        )
    points = [f"{MARGIN + (i + 0.5) * step:.1f},{y_of(r):.1f}" for i, r in enumerate(running) if r is not None]
    if points:
        parts.append(
            f'<polyline class="running" points="{" ".join(points)}" fill="none" stroke="#0969da" stroke-width="2"/>'
        )
    if lower:
        y = y_of(lower)
        parts.append(
            f'<line class="lower" x1="{MARGIN}" x2="{CHART_WIDTH - MARGIN}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#8250df" stroke-dasharray="6 4"/>'
        )
    parts.append(
        f'<line x1="{MARGIN}" x2="{CHART_WIDTH - MARGIN}" y1="{baseline:.1f}" y2="{baseline:.1f}" stroke="#57606a"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _rows(report: Report) -> str:
    rows = []
    for index, layer in enumerate(report.layers, 1):
        shape = "×".join(map(str, layer.output_shape)) if layer.output_shape else "?"
        factor = format_number(layer.factor) if layer.status == "bounded" else layer.status
        cells = [str(index), html.escape(layer.name), html.escape(layer.op), shape]
        numbers = [factor]
        tail = [
            html.escape(layer.method),
            "✓" if layer.certified else "✗",
            format_number(layer.estimate),
            format_number(layer.running_bound),
            html.escape("; ".join(layer.notes + ([layer.reason] if layer.reason else []))),
        ]
        css = ' class="blocked"' if layer.status != "bounded" else ""
        rows.append(
            f"<tr{css}>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "".join(f'<td class="num">{n}</td>' for n in numbers)
            + "".join(f"<td>{t}</td>" for t in tail[:-1])
            + f'<td class="notes">{tail[-1]}</td></tr>'
        )
    return "\n".join(rows)


def _branches(report: Report) -> str:
    rows = branch_rows(report)
    if not rows:
        return ""
    invertible = sum(row[5] == "yes" for row in rows)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<h2 id="branches">Residual branches g of x + g(x): {len(rows)}, {invertible} certified invertible</h2>\n'
        "<table><thead><tr><th>Add</th><th>From</th><th>Lip(g) ≤</th><th>Product</th><th>Method</th>"
        f"<th>Invertible</th></tr></thead><tbody>\n{body}\n</tbody></table>"
    )


def render_html(report: Report, **_: object) -> str:
    network = report.network
    status, line = verdict(report)
    title = html.escape(f"lipaudit · {report.model.path}")
    lower = network.lower_bound
    interval = (
        (
            f"<p>Empirical lower bound: {format_number(lower)} — the true constant lies in "
            f"[{format_number(lower)}, {format_number(network.upper_bound)}]</p>"
        )
        if lower
        else ""
    )
    scope = (
        (
            f'<p class="scope" id="scope"><strong>Scope: {html.escape(scope_text(report))}</strong>; it holds '
            "only for inputs in that box.</p>"
        )
        if is_local(report)
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<p class="verdict {status}" id="verdict">{html.escape(line)}</p>
<p>Upper bound: <strong>{bound_text(report)}</strong>
({"certified" if network.certified else "not certified"}, {"complete" if network.complete else "incomplete"};
verified: {html.escape(verification_text(report))}) ·
format {html.escape(str(report.model.format))} · opset {report.model.opset} ·
lipaudit {html.escape(report.tool.version)}</p>
<p id="method">Network bound: {html.escape(method_text(report))}</p>
{scope}
{_reproducible(report)}
{interval}
<p class="legend"><span style="color:#2da44e">■ certified factor</span><span style="color:#bf8700">■ estimate</span>
<span style="color:#cf222e">■ unsupported / unbounded</span><span style="color:#0969da">— running bound</span>
{'<span style="color:#8250df">- - lower bound</span>' if lower else ""}</p>
{chart_svg(report)}
{_branches(report)}
<table id="layers"><thead><tr><th>#</th><th>Layer</th><th>Op</th><th>Output</th><th>Factor</th><th>Method</th>
<th>Certified</th><th>Estimate</th><th>Running bound</th><th>Notes</th></tr></thead>
<tbody>
{_rows(report)}
</tbody></table>
</body></html>
"""


def _reproducible(report: Report) -> str:
    """A line only when the figures depend on the machine (a time limit the user asked for)."""
    if report.network.reproducible:
        return ""
    return f'<p id="reproducible">Reproducible: no ({html.escape(str(report.network.reproducible_reason))})</p>'
