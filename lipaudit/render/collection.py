"""Several models in one document: what a multi-model check prints, or writes to one file.

Each model is a ``ModelRun``: its path, its report (None when it could not be audited), the error
that stopped it, and its exit code. JSON, JUnit, SARIF, Markdown, GitHub annotations and the table
hold any number of models; HTML holds one.
"""

from __future__ import annotations

import json

from ..report import SCHEMA_VERSION, json_safe
from ..version import __version__
from .runs import ModelRun

COLLECTION_KIND = "lipaudit-reports"


def collection_dict(runs: list[ModelRun]) -> dict:
    """``{"schema_version", "kind": "lipaudit-reports", "tool", "models": [{path, exit_code, report | error}]}``."""
    models = []
    for run in runs:
        entry: dict = {"path": run.path, "exit_code": run.exit_code}
        if run.report is not None:
            entry["report"] = run.report.to_dict()
        else:
            entry["error"] = run.error
        models.append(entry)
    replaced: list[dict[str, str]] = []
    return json_safe(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": COLLECTION_KIND,
            "tool": {"name": "lipaudit", "version": __version__},
            "models": models,
        },
        "",
        replaced,
    )


def render_json_collection(runs: list[ModelRun]) -> str:
    """One model: its report, as `-f json` always printed. Several: one document holding them all."""
    if len(runs) == 1 and runs[0].report is not None:
        return runs[0].report.to_json()
    return json.dumps(collection_dict(runs), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _error_markdown(run: ModelRun) -> str:
    return f"### lipaudit · `{run.path}`\n\n❌ **ERROR  {run.error}**\n"


def render_collection(
    fmt: str, runs: list[ModelRun], *, width: int = 120, color: bool = False, verbose: bool = False
) -> str:
    """``runs`` in format ``fmt``: one document (json, junit, sarif) or one section per model."""
    from .formats import RENDERERS
    from .github import error_annotation
    from .junit import render_junit_runs
    from .sarif import render_sarif_runs
    from .table import render_table

    if fmt == "json":
        return render_json_collection(runs)
    if fmt == "junit":
        return render_junit_runs(runs)
    if fmt == "sarif":
        return render_sarif_runs(runs)
    if fmt == "html":
        if len(runs) != 1 or runs[0].report is None:
            raise ValueError("an HTML report holds one model")
        return RENDERERS["html"](runs[0].report)
    parts = []
    for run in runs:
        if run.report is not None:
            if fmt == "table":
                parts.append(render_table(run.report, width=width, color=color, verbose=verbose))
            else:
                parts.append(RENDERERS[fmt](run.report))
        elif fmt == "markdown":
            parts.append(_error_markdown(run))
        elif fmt == "github":
            parts.append(error_annotation(run.path, run.error))
        else:
            parts.append(f"{run.path}: ERROR  {run.error}\n")
    return "\n".join(parts) if fmt == "markdown" else "".join(parts)
