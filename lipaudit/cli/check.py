"""`lipaudit check MODEL…`: audit models, write reports, and gate on their bounds."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from ..config import Settings, find_pyproject, layer_violations, load_settings, merge_flags
from ..diff import diff_reports, parse_increase
from ..errors import LipauditError, UsageError
from ..execute.empirical_lower_bound import DEFAULT_SAMPLES, DEFAULT_STEPS
from ..pipeline import audit
from ..render import RENDERERS, SUFFIX_FORMATS, write_atomically
from ..render.summary import render_summary
from ..render.verdict import verdict
from ..report import EXIT_PASSED, EXIT_THRESHOLD_EXCEEDED, EXIT_USAGE, Report
from .diff import describe, read_report
from .errors import debug_enabled, print_error, report_errors
from .progress import node_progress

FORMATS = tuple(RENDERERS)
# The worst exit code wins when several models are checked: an error, then an incomplete bound, then a failure.
SEVERITY = {0: 0, 1: 1, 3: 2, 2: 3}


@dataclass
class OutputTarget:
    format: str
    path: str

    def path_for(self, model: Path, several: bool) -> Path:
        if "{model}" in self.path:
            return Path(self.path.replace("{model}", model.stem))
        if several:
            raise UsageError(f"-o {self.path} would be overwritten by each model",
                             hint="put {model} in the path, e.g. -o json:reports/{model}.json")
        return Path(self.path)


def parse_outputs(specs: list[str] | None, default_format: str) -> list[OutputTarget]:
    """``json:report.json``, or ``report.json`` (format from the suffix, else --format)."""
    targets = []
    for spec in specs or []:
        head, sep, tail = spec.partition(":")
        if sep and head in RENDERERS:
            targets.append(OutputTarget(head, tail))
        else:
            targets.append(OutputTarget(SUFFIX_FORMATS.get(Path(spec).suffix.lower(), default_format), spec))
    return targets


def use_color(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    if choice != "auto":
        raise UsageError(f"unknown --color '{choice}'", hint="choose auto, always or never")
    return sys.stdout.isatty()


def _console_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 120


def _settings_for(model: Path, config: Optional[Path], flags: dict) -> Settings:
    config_path = config if config is not None else (find_pyproject(model.resolve().parent)
                                                    or find_pyproject(Path.cwd()))
    return merge_flags(load_settings(config_path, model), **flags)


def _render(report: Report, fmt: str, *, color: bool, verbose: bool) -> str:
    if fmt == "table":
        return RENDERERS[fmt](report, width=_console_width(), color=color, verbose=verbose)
    return RENDERERS[fmt](report)


def _gate(report: Report, settings: Settings) -> None:
    violations = layer_violations(report.layers, settings)
    if violations:
        report.threshold.layers = violations
        report.threshold.passed = False


@report_errors
def check(
    models: List[Path] = typer.Argument(
        ..., help="ONNX, TorchScript (.pt) or torch.export (.pt2) model(s).", show_default=False),
    input_shape: Optional[List[str]] = typer.Option(
        None, "--input-shape", "-s", metavar="NAME=1x3x32x32",
        help="Shape of an input with dynamic dimensions. Repeat for several inputs; the name may be "
             "left out when the model has one input."),
    max_lipschitz: Optional[float] = typer.Option(
        None, "--max-lipschitz", metavar="X", help="Fail (exit 1) when the network's upper bound exceeds X."),
    method: Optional[str] = typer.Option(
        None, "--method", "-m", show_default=False,
        help="How to measure linear layers: auto (default: the tightest certified method that is fast enough), "
             "exact, gram, power (an estimate, not certified) or frobenius."),
    device: Optional[str] = typer.Option(
        None, "--device", show_default=False,
        help="auto (default), cpu or cuda (falls back to the CPU with a notice)."),
    output_format: str = typer.Option("table", "--format", "-f", help=f"Report on stdout: {', '.join(FORMATS)}."),
    outputs: Optional[List[str]] = typer.Option(
        None, "--output", "-o", metavar="[FORMAT:]FILE",
        help="Also write a report to FILE, atomically; repeatable: -o json:report.json -o html:report.html. "
             "The format comes from FORMAT:, else the suffix, else --format. With several models, put "
             "{model} in FILE."),
    allow_incomplete: Optional[bool] = typer.Option(
        None, "--allow-incomplete/--no-allow-incomplete", show_default=False,
        help="Exit 0 instead of 3 when some op is unsupported or unbounded (the bound is still not reported)."),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", metavar="BASE.json", help="Compare with an earlier JSON report; exit 1 on a regression."),
    max_increase: str = typer.Option("0%", "--max-increase", help="With --baseline: allowed growth, e.g. 5%."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="pyproject.toml to read \\[tool.lipaudit] from (default: the nearest one above "
                               "the model, else above the current directory)."),
    color: str = typer.Option("auto", "--color", help="auto, always or never (NO_COLOR is honoured)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the verdict line."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Add per-layer notes and timings."),
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
    """Compute a certified upper bound on each MODEL's Lipschitz constant (ℓ2 norm, flattened input and output).

    Settings come from the \\[tool.lipaudit] table of pyproject.toml, overridden by these flags.

    Exit codes: 0 passed (or no threshold), 1 the bound exceeds --max-lipschitz (or a layer its limit, or a
    --baseline regression), 2 usage or load error, 3 the bound is incomplete or unbounded (an op without a
    rule, or one that is not Lipschitz). With several models, the worst code.
    """
    if output_format not in RENDERERS:
        raise UsageError(f"unknown format '{output_format}'", hint=f"choose one of: {', '.join(FORMATS)}")
    targets = parse_outputs(outputs, output_format)
    colored = use_color(color)
    increase = parse_increase(max_increase)
    base = read_report(baseline) if baseline is not None else None
    flags = dict(max_lipschitz=max_lipschitz, method=method, device=device, input_shape=input_shape or None,
                 allow_incomplete=allow_incomplete)
    several = len(models) > 1
    worst = EXIT_PASSED
    rows: list[tuple[str, Report | None, str]] = []
    for model in models:
        try:
            code, report = _check_one(model, config, flags, targets, several, base, increase, output_format,
                                      colored, quiet, verbose, dict(verify=verify, lower_bound=lower_bound,
                                                                    seed=seed, samples=samples, steps=steps))
        except LipauditError as error:
            if not several or debug_enabled():
                raise
            print_error(f"{model}: {error}", error.hint)
            code, report = EXIT_USAGE, None
            rows.append((str(model), None, str(error)))
        else:
            rows.append((str(model), report, ""))
        worst = max(worst, code, key=SEVERITY.__getitem__)
    if several and not quiet:
        sys.stdout.write(render_summary(rows, width=_console_width(), color=colored))
    raise typer.Exit(worst)


def _check_one(model: Path, config, flags, targets, several, base, increase, output_format, colored, quiet,
               verbose, extra) -> tuple[int, Report]:
    settings = _settings_for(model, config, flags)
    with node_progress(enabled=not quiet) as on_node:
        report = audit(str(model), input_shape=list(settings.input_shape), method=settings.method,
                       device=settings.device, max_lipschitz=settings.max_lipschitz, on_node=on_node, **extra)
    _gate(report, settings)
    for notice in report.notices:
        typer.echo(f"lipaudit: {notice}", err=True)
    for target in targets:
        path = target.path_for(model, several)
        try:
            write_atomically(path, _render(report, target.format, color=False, verbose=verbose))
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror}", hint="check the folder and its permissions") from None
        typer.echo(f"lipaudit: {target.format} report written to {path}", err=True)
    code = report.exit_code(settings.allow_incomplete)
    diff_lines: list[str] = []
    if base is not None:
        result = diff_reports(base, report, increase)
        diff_lines = ["", "compared with the baseline:", *describe(result)]
        if result.regressed:
            code = max(code, EXIT_THRESHOLD_EXCEEDED, key=SEVERITY.__getitem__)
    if quiet:
        typer.echo(verdict(report)[1])
    elif (not several or verbose) and (not targets or output_format == "table"):
        # With -o, a machine format goes to its file only; the table still shows in the log.
        sys.stdout.write(_render(report, output_format, color=colored, verbose=verbose))
        if verbose:
            typer.echo(f"lipaudit: timings {report.timings}", err=True)
    if diff_lines:
        typer.echo("\n".join(diff_lines), err=output_format != "table" or quiet)
    if settings.allow_incomplete and not report.bounded_and_complete:
        typer.echo("lipaudit: warning: the bound is incomplete or unbounded (allowed by allow_incomplete)", err=True)
    return code, report
