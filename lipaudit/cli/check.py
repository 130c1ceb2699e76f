"""`lipaudit check MODEL`: audit a model and gate on its bound."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..lower import DEFAULT_SAMPLES, DEFAULT_STEPS
from ..pipeline import audit
from ..render import RENDERERS, write_atomically
from .errors import report_errors
from .progress import node_progress

FORMATS = tuple(RENDERERS)


@report_errors
def check(
    model: Path = typer.Argument(..., help="ONNX, TorchScript (.pt) or torch.export (.pt2) model.", show_default=False),
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
    verify: Optional[bool] = typer.Option(
        None, "--verify/--no-verify", show_default=False,
        help="Check first that lipaudit's reading of the model computes what the model's runtime computes "
             "(onnxruntime or torch), on a few random inputs; a mismatch exits 2 naming the first node that "
             "differs. Default: on for models under 50M parameters."),
    lower_bound: bool = typer.Option(
        False, "--lower-bound",
        help="Also search for an empirical lower bound (largest Jacobian norm, then a ratio "
             "‖f(x)−f(y)‖/‖x−y‖ actually achieved) and show the interval from lower to upper, with the "
             "gap upper/lower."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random inputs of --verify and --lower-bound."),
    samples: int = typer.Option(DEFAULT_SAMPLES, "--samples", min=1,
                                help="--lower-bound: random inputs to start from (more: slower, tighter)."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", min=0,
                              help="--lower-bound: gradient-ascent steps from each of the best inputs."),
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
                       max_lipschitz=max_lipschitz, on_node=on_node, verify=verify, lower_bound=lower_bound,
                       seed=seed, samples=samples, steps=steps)
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
