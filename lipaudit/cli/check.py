"""`lipaudit check MODEL`: audit a model and gate on its bound."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..pipeline import audit
from ..render import RENDERERS, write_atomically
from .errors import report_errors
from .progress import node_progress

FORMATS = tuple(RENDERERS)


@report_errors
def check(
    model: Path = typer.Argument(..., help="The model file: ONNX (.onnx).", show_default=False),
    input_shape: Optional[List[str]] = typer.Option(
        None, "--input-shape", "-s", metavar="NAME=1x3x32x32",
        help="Shape of an input with dynamic dimensions. Repeat for several inputs; the name may be "
             "left out when the model has one input."),
    max_lipschitz: Optional[float] = typer.Option(
        None, "--max-lipschitz", metavar="X", help="Fail (exit 1) when the network's upper bound exceeds X."),
    method: str = typer.Option(
        "auto", "--method", "-m",
        help="How to measure linear layers: auto (tightest certified method that is fast enough), exact, "
             "gram, power (an estimate, not certified) or frobenius."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (falls back to the CPU with a notice)."),
    output_format: str = typer.Option("table", "--format", "-f", help=f"Report format: {', '.join(FORMATS)}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report to FILE (atomically)."),
    allow_incomplete: bool = typer.Option(
        False, "--allow-incomplete",
        help="Exit 0 instead of 3 when some op is unsupported or unbounded (the bound is still not reported)."),
) -> None:
    """Compute a certified upper bound on MODEL's Lipschitz constant (ℓ2 norm, flattened input and output).

    Exit codes: 0 passed (or no threshold), 1 the bound exceeds --max-lipschitz, 2 usage or load error,
    3 the bound is incomplete or unbounded (an op without a rule, or one that is not Lipschitz).
    """
    if output_format not in RENDERERS:
        from ..errors import UsageError

        raise UsageError(f"unknown format '{output_format}'", hint=f"choose one of: {', '.join(FORMATS)}")
    with node_progress(enabled=True) as on_node:
        report = audit(str(model), input_shape=input_shape, method=method, device=device,
                       max_lipschitz=max_lipschitz, on_node=on_node)
    for notice in report.notices:
        typer.echo(f"lipaudit: {notice}", err=True)
    text = RENDERERS[output_format](report)
    if output is not None:
        write_atomically(output, text)
        typer.echo(f"lipaudit: report written to {output}", err=True)
    else:
        sys.stdout.write(text)
    code = report.exit_code(allow_incomplete)
    if allow_incomplete and not report.bounded_and_complete:
        typer.echo("lipaudit: warning: the bound is incomplete or unbounded (--allow-incomplete)", err=True)
    raise typer.Exit(code)
