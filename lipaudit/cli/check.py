"""`lipaudit check MODEL…`: audit models, write reports, and gate on their bounds."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..config import (
    Settings,
    branch_violations,
    find_pyproject,
    layer_violations,
    load_settings,
    merge_flags,
    parse_budget,
    parse_duration,
    parse_size,
)
from ..diff import diff_reports, parse_increase
from ..domain.inputs import check_input_ranges
from ..errors import LipauditError, UsageError
from ..execute.empirical_lower_bound import DEFAULT_SAMPLES, DEFAULT_STEPS
from ..parallel import LOCAL_RAY, open_executor
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
# After --ray, a "model" that is no file but reads as a cluster address is the address.
# (As a Path, ray://HOST:PORT has lost a slash.)
RAY_ADDRESS = re.compile(r"auto|ray:/+(\S+)|[\w.-]+:\d+")


@dataclass
class OutputTarget:
    format: str
    path: str

    def path_for(self, model: Path, several: bool) -> Path:
        if "{model}" in self.path:
            return Path(self.path.replace("{model}", model.stem))
        if several:
            raise UsageError(
                f"-o {self.path} would be overwritten by each model",
                hint="put {model} in the path, e.g. -o json:reports/{model}.json",
            )
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
    violations = layer_violations(report.layers, settings)
    if violations:
        report.threshold.layers = violations
        report.threshold.passed = False
    if settings.max_branch_lipschitz is not None:
        report.threshold.max_branch_lipschitz = settings.max_branch_lipschitz
        branches = branch_violations(report.network.branches, settings)
        if branches:
            report.threshold.branches = branches
            report.threshold.passed = False
        elif report.threshold.passed is None and report.upper_bound is not None:
            report.threshold.passed = True


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
        "The format comes from FORMAT:, else the suffix, else --format. With several models, put "
        "{model} in FILE.",
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
        "(default 0.15; inf: measure every chain norm). Counted in operations, never seconds, so the figure "
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
    targets = parse_outputs(outputs, output_format)
    colored = use_color(color)
    increase = parse_increase(max_increase)
    base = read_report(baseline) if baseline is not None else None
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
    if input_range:
        check_input_ranges(input_range)
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
        lower_bound_time=search_time,
        recursion_time=tighten_time,
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
    rows: list[tuple[str, Report | None, str]] = []
    for model, (code, report, message) in zip(models, outcomes):
        rows.append((str(model), report, message))
        worst = max(worst, code, key=SEVERITY.__getitem__)
    if run.several and not quiet:
        sys.stdout.write(render_summary(rows, width=_console_width(), color=colored))
    raise typer.Exit(worst)


@dataclass
class Run:
    """What every model of one check shares."""

    config: Path | None
    flags: dict
    targets: list[OutputTarget]
    several: bool
    base: Report | None
    increase: float
    output_format: str
    colored: bool
    quiet: bool
    verbose: bool
    extra: dict  # audit settings that come from flags only


Outcome = tuple[int, Report | None, str]  # exit code, report, error message


def _failed(model: Path, error: LipauditError, run: Run) -> Outcome:
    if not run.several or debug_enabled():
        raise error
    print_error(f"{model}: {error}", error.hint)
    return EXIT_USAGE, None, str(error)


def _audit_settings(settings: Settings, run: Run) -> dict[str, Any]:
    chosen = dict(
        input_shape=list(settings.input_shape),
        method=settings.method,
        device=settings.device,
        max_lipschitz=settings.max_lipschitz,
        bound=settings.bound,
        **run.extra,
    )
    if settings.in_memory_limit is not None:
        chosen["in_memory_limit"] = settings.in_memory_limit
    if settings.lower_bound_time is not None:
        chosen["lower_bound_time"] = settings.lower_bound_time
    if settings.recursion_time is not None:
        chosen["recursion_time"] = settings.recursion_time
    if settings.recursion_budget is not None:
        chosen["recursion_budget"] = None if settings.recursion_budget == "inf" else settings.recursion_budget
    if settings.input_range is not None:
        chosen["input_range"] = settings.input_range
    return chosen


def _serial(models: list[Path], run: Run, executor=None) -> list[Outcome]:
    """One model after the other; an executor, when given, measures each model's layers."""
    outcomes = []
    for model in models:
        try:
            settings = _settings_for(model, run.config, run.flags)
            with node_progress(enabled=not run.quiet) as on_node:
                report = audit(str(model), on_node=on_node, executor=executor, **_audit_settings(settings, run))
            outcomes.append(_finish_one(model, settings, report, run))
        except LipauditError as error:
            outcomes.append(_failed(model, error, run))
    return outcomes


def _by_model(models: list[Path], run: Run, executor) -> list[Outcome]:
    """Each model audited by a job of its own; the reports are then handled in the models' order."""
    from ..parallel.jobs import Job, TaskFailure
    from ..parallel.models import AuditError, model_job

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
        jobs.append(model_job(model, _audit_settings(settings, run)))
    with node_progress(enabled=not run.quiet, label="auditing") as on_model:
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
    targets, several, base, increase = run.targets, run.several, run.base, run.increase
    output_format, colored, quiet, verbose = run.output_format, run.colored, run.quiet, run.verbose
    _gate(report, settings)
    for notice in report.notices:
        typer.echo(f"lipaudit: {notice}", err=True)
    for target in targets:
        path = target.path_for(model, several)
        try:
            write_atomically(path, _render(report, target.format, color=False, verbose=verbose))
        except OSError as error:
            raise UsageError(
                f"cannot write {path}: {error.strerror}", hint="check the folder and its permissions"
            ) from None
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
    return code, report, ""
