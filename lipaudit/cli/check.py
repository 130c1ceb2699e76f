"""`lipaudit check MODEL…`: audit models, write reports, and gate on their bounds."""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from ..api import apply_gate
from ..config import (
    Settings,
    check_rtol,
    find_pyproject,
    load_settings,
    merge_flags,
    parse_budget,
    parse_duration,
    parse_size,
)
from ..diff import diff_reports, parse_increase
from ..errors import LipauditError, UsageError
from ..options import DEFAULT_SAMPLES, DEFAULT_STEPS, AuditOptions
from ..parallel import LOCAL_RAY, open_executor
from ..pipeline import audit
from ..render import RENDERERS, ModelRun, render_collection, write_atomically
from ..render.output import append_text
from ..render.summary import render_summary
from ..render.verdict import timings_line, verdict
from ..report import EXIT_PASSED, EXIT_THRESHOLD_EXCEEDED, EXIT_USAGE, Report
from .diff import Baselines, describe, read_baselines
from .errors import debug_enabled, print_error, report_errors
from .outputs import OutputTarget, parse_outputs, plan_outputs
from .progress import audit_progress, node_progress

FORMATS = tuple(RENDERERS)
# The worst exit code wins when several models are checked: an error, then an incomplete bound, then a failure.
SEVERITY = {0: 0, 1: 1, 3: 2, 2: 3}
# After --ray, a "model" that is no file but reads as a cluster address is the address.
# (As a Path, ray://HOST:PORT has lost a slash.)
RAY_ADDRESS = re.compile(r"auto|ray:/+(\S+)|[\w.-]+:\d+")


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


def _config_for(model: Path, config: Path | None) -> Path | None:
    return config if config is not None else (find_pyproject(model.resolve().parent) or find_pyproject(Path.cwd()))


def _settings_for(model: Path, config: Path | None, flags: dict) -> Settings:
    return merge_flags(load_settings(_config_for(model, config), model), **flags)


def _run_settings(models: list[Path], config: Path | None, flags: dict) -> Settings:
    """The settings of the whole run (workers, ray): [tool.lipaudit] of the first model's config."""
    return merge_flags(load_settings(_config_for(models[0], config)), **flags)


def _render(report: Report, fmt: str, *, color: bool, verbose: bool) -> str:
    if fmt == "table":
        return RENDERERS[fmt](report, width=_console_width(), color=color, verbose=verbose)
    return RENDERERS[fmt](report)


def split_ray_address(models: list[Path], ray: bool | None, address: str | None) -> tuple[list[Path], str | None]:
    """The models, and the ray setting: None (as configured), "" (--no-ray), 'local' or an address.

    ``--ray`` takes an optional address (``--ray auto``); the parser sees the address as a model,
    so a "model" that is no file and reads as one (auto, ray://HOST:PORT, HOST:PORT) is taken back."""
    if ray is False:
        return models, ""
    if not ray and address is None:
        return models, None
    kept = []
    for model in models:
        match = RAY_ADDRESS.fullmatch(str(model))
        if address is None and match is not None and not model.exists():
            address = f"ray://{match.group(1)}" if match.group(1) else str(model)
        else:
            kept.append(model)
    if not kept:
        raise UsageError("no model to check", hint="pass the model file(s) after the Ray address")
    return kept, address or LOCAL_RAY


def _gate(report: Report, settings: Settings) -> None:
    apply_gate(report, settings)


@report_errors
def check(
    models: list[Path] = typer.Argument(
        ..., metavar="MODEL...", help="ONNX, TorchScript (.pt) or torch.export (.pt2) model(s).", show_default=False
    ),
    input_shape: list[str] | None = typer.Option(
        None,
        "--input-shape",
        "-s",
        metavar="NAME=1x3x32x32",
        help="Shape of an input with dynamic dimensions. Repeat for several inputs; the name may be "
        "left out when the model has one input.",
    ),
    max_lipschitz: float | None = typer.Option(
        None, "--max-lipschitz", metavar="X", help="Fail (exit 1) when the network's upper bound exceeds X."
    ),
    rtol: float | None = typer.Option(
        None,
        "--rtol",
        metavar="R",
        show_default=False,
        help="Relative tolerance of the gate (default 0): a bound passes up to X·(1 + R), and a layer up to its "
        "max_layer_factor·(1 + R); e.g. 1e-5 lets a 1-Lipschitz net measured in float32 pass --max-lipschitz 1.",
    ),
    bound: str | None = typer.Option(
        None,
        "--bound",
        metavar="recursion|product",
        show_default=False,
        help="How the layers' factors combine into the network bound: recursion (default: the slope-restricted "
        "recursion over the graph, never above the product and often far below it on residual nets) or "
        "product (each factor multiplied along the graph). The report keeps the product either way.",
    ),
    max_branch_lipschitz: float | None = typer.Option(
        None,
        "--max-branch-lipschitz",
        metavar="X",
        help="Fail (exit 1) unless every residual branch g of a block x + g(x) has a certified Lipschitz bound "
        "below X (X = 1 gates invertibility, as in invertible ResNets).",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        "-m",
        metavar="auto|exact|gram|power|frobenius",
        show_default=False,
        help="How to measure linear layers: auto (default: the tightest certified method that is fast enough), "
        "exact, gram, power (an estimate, not certified) or frobenius.",
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        metavar="auto|cpu|cuda",
        show_default=False,
        help="auto (default), cpu or cuda (falls back to the CPU with a notice).",
    ),
    output_format: str = typer.Option(
        "table", "--format", "-f", metavar="FORMAT", help=f"Report on stdout: {', '.join(FORMATS)}."
    ),
    outputs: list[str] | None = typer.Option(
        None,
        "--output",
        "-o",
        metavar="[FORMAT:]FILE",
        help="Also write a report to FILE, atomically; repeatable: -o json:report.json -o html:report.html. "
        "The format comes from FORMAT:, else the suffix (.json .md .html .txt .xml=junit .sarif), else --format. "
        "{model} in FILE is the model's path relative to the working directory, less its suffix: one file per "
        "model. Without it, one file holds every model (one section each in Markdown, appended to "
        "$GITHUB_STEP_SUMMARY); an HTML report needs {model} when there are several.",
    ),
    allow_incomplete: bool | None = typer.Option(
        None,
        "--allow-incomplete/--no-allow-incomplete",
        show_default=False,
        help="Exit 0 instead of 3 when some op is unsupported or unbounded (the bound is still not reported).",
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", metavar="BASE.json", help="Compare with an earlier JSON report; exit 1 on a regression."
    ),
    max_increase: str = typer.Option(
        "0%", "--max-increase", metavar="PERCENT", help="With --baseline: allowed growth, e.g. 5%."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="pyproject.toml to read \\[tool.lipaudit] from (default: the nearest one above "
        "the model, else above the current directory).",
    ),
    color: str = typer.Option(
        "auto", "--color", metavar="auto|always|never", help="auto, always or never (NO_COLOR is honoured)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the verdict line."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Add per-layer notes and timings."),
    verify: bool | None = typer.Option(
        None,
        "--verify/--no-verify",
        show_default=False,
        help="Check first that lipaudit's reading of the model computes what the model's runtime computes "
        "(onnxruntime or torch), on a few random inputs; a mismatch exits 2 naming the first node that "
        "differs. Default: on for models under 50M parameters.",
    ),
    lower_bound: bool = typer.Option(
        False,
        "--lower-bound",
        help="Also search for an empirical lower bound (largest Jacobian norm, then a ratio "
        "‖f(x)−f(y)‖/‖x−y‖ actually achieved) and show the interval from lower to upper, with the "
        "gap upper/lower.",
    ),
    lower_bound_time: str | None = typer.Option(
        None,
        "--lower-bound-time",
        metavar="DURATION",
        show_default=False,
        help="--lower-bound: stop the search after this long and report what it found: still a ratio two "
        "inputs achieved. Default: no time limit (the --samples and --steps are done, so the figure does not "
        "depend on the machine); a limit that cuts the search makes the report say reproducible: false.",
    ),
    recursion_budget: str | None = typer.Option(
        None,
        "--recursion-budget",
        metavar="X",
        show_default=False,
        help="--bound recursion: the recursion's work, in multiples of the operations the layers' norms take "
        "(default 0.3; inf: measure every chain norm). Counted in operations, never seconds, so the figure "
        "is the same on any machine; a larger budget never gives a larger figure.",
    ),
    recursion_time: str | None = typer.Option(
        None,
        "--recursion-time",
        metavar="DURATION",
        show_default=False,
        help="--bound recursion: also stop the recursion after this long (default: no time limit). Past it, "
        "the values it has not reached keep the product's figure: still certified, less tight, and dependent "
        "on the machine, so the report says reproducible: false.",
    ),
    input_range: list[str] | None = typer.Option(
        None,
        "--input-range",
        metavar="[NAME=]LO:HI",
        show_default=False,
        help="Bound the network on this box of inputs only (e.g. 0:1 for images): the figure is then a LOCAL "
        "Lipschitz bound on that domain, not a global one, and products of activations (gates, "
        "normalisation, attention) get a finite bound. Repeat with NAME= for several inputs.",
    ),
    around: list[str] | None = typer.Option(
        None,
        "--around",
        metavar="[NAME=]FILE.npy",
        show_default=False,
        help="Bound the network on the box of l-inf radius --radius around this input (a .npy array of the "
        "input's shape): a LOCAL bound, reported with the input's sha256. NAME= may be left out for a model "
        "with one input; repeat for several inputs.",
    ),
    radius: float | None = typer.Option(
        None, "--radius", metavar="R", show_default=False, help="--around: the l-inf radius of the box (e.g. 1e-3)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the random inputs of --verify and --lower-bound."),
    samples: int = typer.Option(
        DEFAULT_SAMPLES, "--samples", min=1, help="--lower-bound: random inputs to start from (more: slower, tighter)."
    ),
    steps: int = typer.Option(
        DEFAULT_STEPS, "--steps", min=0, help="--lower-bound: gradient-ascent steps from each of the best inputs."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-j",
        min=1,
        show_default=False,
        help="Run independent work in N single-threaded worker processes: the models of a multi-model check, "
        "or the layers of one model. The report is the same for every N.",
    ),
    ray: bool | None = typer.Option(
        None,
        "--ray/--no-ray",
        show_default=False,
        help="Run that work as Ray tasks (needs pip install 'lipaudit[ray]'): on a local cluster started for the "
        "run (--workers CPUs), or on the cluster at --ray-address. '--ray auto' joins the cluster running on "
        "this machine.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        metavar="ADDRESS",
        show_default=False,
        help="The Ray cluster for --ray: auto, ray://HOST:PORT or HOST:PORT (implies --ray).",
    ),
    in_memory_limit: str | None = typer.Option(
        None,
        "--in-memory-limit",
        metavar="SIZE",
        show_default=False,
        help="External data above this (default 2GiB) stays on disk, memory-mapped and read one layer at a time; "
        "the runtime probe, verification and the lower bound, which need the whole model, are then skipped.",
    ),
) -> None:
    """Compute a certified upper bound on each MODEL's Lipschitz constant (ℓ2 norm, flattened input and output).

    Settings come from the \\[tool.lipaudit] table of pyproject.toml, overridden by these flags.

    Exit codes: 0 passed (or no threshold); 1 the bound exceeds --max-lipschitz, a layer its limit, a
    residual branch --max-branch-lipschitz, or a --baseline comparison regressed; 2 usage or load error;
    3 the bound is incomplete or unbounded (an op without a rule, or one that is not Lipschitz).
    With several models, the worst code.
    """
    if output_format not in RENDERERS:
        raise UsageError(f"unknown format '{output_format}'", hint=f"choose one of: {', '.join(FORMATS)}")
    models, ray_setting = split_ray_address(list(models), ray, ray_address)
    for name, value in (("--max-lipschitz", max_lipschitz), ("--max-branch-lipschitz", max_branch_lipschitz)):
        if value is not None and math.isnan(value):
            raise UsageError(f"{name} must be a number, not nan", hint=f"for example {name} 10")
        if value is not None and value < 0:
            raise UsageError(f"{name} must not be negative (a Lipschitz constant is ≥ 0), not {value:g}")
    if output_format == "html" and len(models) > 1:
        raise UsageError(
            "--format html: an HTML report holds one model", hint="write one per model: -o html:reports/{model}.html"
        )
    if rtol is not None:
        try:
            rtol = check_rtol(rtol)
        except ValueError as error:
            raise UsageError(f"--rtol: {error}", hint="for example --rtol 1e-5") from None
    targets = parse_outputs(outputs, output_format)
    plan_outputs(targets, models)
    colored = use_color(color)
    increase = parse_increase(max_increase)
    if baseline is None and increase:
        raise UsageError("--max-increase needs --baseline", hint="compare with an earlier report: --baseline BASE.json")
    base = read_baselines(baseline) if baseline is not None else None
    try:
        limit = None if in_memory_limit is None else parse_size(in_memory_limit)
    except ValueError as error:
        raise UsageError(f"--in-memory-limit: {error}", hint="for example --in-memory-limit 8GiB") from None
    try:
        search_time = None if lower_bound_time is None else parse_duration(lower_bound_time)
    except ValueError as error:
        raise UsageError(f"--lower-bound-time: {error}", hint="for example --lower-bound-time 90s") from None
    try:
        tighten_time = None if recursion_time is None else parse_duration(recursion_time)
    except ValueError as error:
        raise UsageError(f"--recursion-time: {error}", hint="for example --recursion-time 2min") from None
    try:
        tighten_budget = None if recursion_budget is None else parse_budget(recursion_budget)
    except ValueError as error:
        raise UsageError(f"--recursion-budget: {error}", hint="for example --recursion-budget 4") from None
    flags = dict(
        max_lipschitz=max_lipschitz,
        bound=bound,
        max_branch_lipschitz=max_branch_lipschitz,
        method=method,
        device=device,
        input_shape=input_shape or None,
        allow_incomplete=allow_incomplete,
        in_memory_limit=limit,
        workers=workers,
        ray=ray_setting,
        input_range=tuple(input_range) if input_range else None,
        around=tuple(around) if around else None,
        radius=radius,
        lower_bound_time=search_time,
        recursion_time=tighten_time,
        rtol=rtol,
        # "inf" (no limit) apart from None (not given: the config's or the default)
        recursion_budget=None if recursion_budget is None else "inf" if tighten_budget is None else tighten_budget,
    )
    run = Run(
        config,
        flags,
        targets,
        len(models) > 1,
        base,
        increase,
        output_format,
        colored,
        quiet,
        verbose,
        dict(verify=verify, lower_bound=lower_bound, seed=seed, samples=samples, steps=steps),
    )
    run_settings = _run_settings(models, config, flags)
    executor = open_executor(run_settings.workers, run_settings.ray)
    if executor is None:
        outcomes = _serial(models, run)
    else:
        # Single-threaded torch here too, as in the workers: the figures then do not depend on where
        # (or in how many workers) the work ran.
        from ..parallel.jobs import KERNEL_THREADS, torch_threads

        with executor, torch_threads(KERNEL_THREADS):
            outcomes = _by_model(models, run, executor) if run.several else _serial(models, run, executor)
    worst = EXIT_PASSED
    runs = [ModelRun(str(model), report, message, code) for model, (code, report, message) in zip(models, outcomes)]
    for one in runs:
        worst = max(worst, one.exit_code, key=SEVERITY.__getitem__)
    _write_shared(targets, runs, verbose)
    _print_outcome(run, runs)
    raise typer.Exit(worst)


def _write_shared(targets: list[OutputTarget], runs: list[ModelRun], verbose: bool) -> None:
    """The -o files that hold every model, written once all are done (appended to the job summary)."""
    for target in targets:
        if target.per_model:
            continue
        text = render_collection(target.format, runs, width=_console_width(), color=False, verbose=verbose)
        _write(Path(target.path), text, append=target.appends)
        typer.echo(f"lipaudit: {target.format} report written to {target.path}", err=True)


def _write(path: Path, text: str, append: bool = False) -> None:
    try:
        append_text(path, text) if append else write_atomically(path, text)
    except OSError as error:
        raise UsageError(
            f"cannot write {path}: {error.strerror}", hint="check the folder and its permissions"
        ) from None


def _print_outcome(run: Run, runs: list[ModelRun]) -> None:
    """stdout once every model is done: GitHub annotations always; the --format report unless an -o
    file of that format took it; the summary table of a multi-model run (on stderr beside a machine
    format, so stdout still parses)."""
    fmt = run.output_format
    rows = [(one.path, one.report, one.error) for one in runs]
    if run.quiet:
        return
    taken = any(target.format == fmt for target in run.targets)  # `--format json -o r.json`: the file has it
    if fmt == "github" or (fmt not in ("table", "html") and not taken):
        sys.stdout.write(render_collection(fmt, runs))
    elif fmt == "html" and not taken and not run.several and runs[0].report is not None:
        sys.stdout.write(render_collection(fmt, runs))
    if run.several:
        summary = render_summary(rows, width=_console_width(), color=run.colored)
        machine = fmt not in ("table", "html") and not (fmt != "github" and taken)
        typer.echo(summary, nl=False, err=machine)


@dataclass
class Run:
    """What every model of one check shares."""

    config: Path | None
    flags: dict
    targets: list[OutputTarget]
    several: bool
    base: Baselines | None
    increase: float
    output_format: str
    colored: bool
    quiet: bool
    verbose: bool
    extra: dict  # audit settings that come from flags only


Outcome = tuple[int, Report | None, str]  # exit code, report, error message


def _failed(model: Path, error: LipauditError, run: Run) -> Outcome:
    if not run.several or debug_enabled():
        _clear_reports(model, run)
        raise error
    print_error(f"{model}: {error}", error.hint)
    return EXIT_USAGE, None, str(error)


def _clear_reports(model: Path, run: Run) -> None:
    """A run that ends in an error writes no report: none from an earlier run may stay at its -o
    paths, where it would read as this run's (the GitHub job summary, appended to, is left alone)."""
    for target in run.targets:
        if not target.appends:
            target.path_for(model).unlink(missing_ok=True)


def _audit_options(settings: Settings, run: Run) -> AuditOptions:
    return settings.audit_options(**run.extra)


def _serial(models: list[Path], run: Run, executor=None) -> list[Outcome]:
    """One model after the other; an executor, when given, measures each model's layers."""
    outcomes = []
    for model in models:
        try:
            settings = _settings_for(model, run.config, run.flags)
            with audit_progress(enabled=not run.quiet, color=run.colored) as tracker:
                report = audit(
                    str(model),
                    _audit_options(settings, run),
                    on_node=tracker.on_node,
                    on_stage=tracker.on_stage,
                    executor=executor,
                )
            outcomes.append(_finish_one(model, settings, report, run))
        except LipauditError as error:
            outcomes.append(_failed(model, error, run))
    return outcomes


def _by_model(models: list[Path], run: Run, executor) -> list[Outcome]:
    """Each model audited by a job of its own; the reports are then handled in the models' order."""
    from ..model_jobs import AuditError, model_job
    from ..parallel.jobs import Job, TaskFailure

    prepared: list[Settings | LipauditError] = []
    jobs: list[Job] = []
    job_of: dict[int, int] = {}
    for index, model in enumerate(models):
        try:
            settings = _settings_for(model, run.config, run.flags)
        except LipauditError as error:
            prepared.append(error)
            continue
        prepared.append(settings)
        job_of[index] = len(jobs)
        jobs.append(model_job(model, _audit_options(settings, run)))
    with node_progress(enabled=not run.quiet, label="auditing", color=run.colored) as on_model:
        done = None if on_model is None else (lambda finished, total, job: on_model(finished, total, job.label))
        results = executor.run(jobs, done)
    outcomes = []
    for index, (model, ready) in enumerate(zip(models, prepared)):
        try:
            if isinstance(ready, LipauditError):
                raise ready
            result = results[job_of[index]]
            if isinstance(result, TaskFailure):
                raise LipauditError(
                    f"the audit did not finish: {result.reason}",
                    hint="it may need more memory than a worker has; try fewer --workers",
                )
            if isinstance(result, AuditError):
                raise result.error()
            outcomes.append(_finish_one(model, ready, result, run))
        except LipauditError as error:
            outcomes.append(_failed(model, error, run))
    return outcomes


def _finish_one(model: Path, settings: Settings, report: Report, run: Run) -> Outcome:
    _gate(report, settings)
    for notice in report.notices:
        typer.echo(f"lipaudit: {notice}", err=True)
    for target in run.targets:
        if target.per_model:
            path = target.path_for(model)
            _write(path, _render(report, target.format, color=False, verbose=run.verbose))
            typer.echo(f"lipaudit: {target.format} report written to {path}", err=True)
    code = report.exit_code(settings.allow_incomplete)
    diff_lines: list[str] = []
    base = run.base.for_model(model, report, run.several) if run.base is not None else None
    if run.base is not None and base is None:
        diff_lines = ["", f"no baseline for {model} in {run.base.path}: not compared"]
    if base is not None:
        result = diff_reports(base, report, run.increase)
        diff_lines = ["", f"{model} compared with the baseline:" if run.several else "compared with the baseline:"]
        diff_lines += describe(result)
        if result.regressed:
            code = max(code, EXIT_THRESHOLD_EXCEEDED, key=SEVERITY.__getitem__)
    if run.quiet:
        typer.echo(f"{model}: {verdict(report)[1]}" if run.several else verdict(report)[1])
    elif run.output_format == "table" and (not run.several or run.verbose):
        sys.stdout.write(_render(report, "table", color=run.colored, verbose=run.verbose))
    if run.verbose and not run.quiet:
        typer.echo(f"lipaudit: timings: {timings_line(report)}", err=True)
    if diff_lines:
        typer.echo("\n".join(diff_lines), err=run.output_format != "table" or run.quiet)
    if settings.allow_incomplete and not report.bounded_and_complete:
        typer.echo("lipaudit: warning: the bound is incomplete or unbounded (allowed by allow_incomplete)", err=True)
    return code, report, ""
