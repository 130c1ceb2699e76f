"""SARIF 2.1.0 for code scanning: each finding is a result located at the model file.

One run of the tool holds every model: the verdict of each (an error when its gate fails or its
bound is incomplete, a note otherwise), each op without a finite bound, each layer over its limit,
each residual branch over --max-branch-lipschitz, and each model that could not be read.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from urllib.parse import quote

from ..report import Report
from ..version import __version__
from .runs import ModelRun
from .verdict import bound_summary, comparison, format_number, verdict

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
RULES = {
    "lipaudit/bound": "The model's certified Lipschitz bound, and whether it passed its threshold.",
    "lipaudit/unsupported-op": "An op without a Lipschitz rule: the bound is incomplete.",
    "lipaudit/unbounded-op": "An op that is not Lipschitz: no finite bound exists.",
    "lipaudit/layer-limit": "A layer's factor is over its max_layer_factor.",
    "lipaudit/branch-limit": "A residual branch is not below max_branch_lipschitz.",
    "lipaudit/error": "The model could not be audited.",
}
RULE_INDEX = {rule: index for index, rule in enumerate(RULES)}


def _uri(path: str) -> str:
    return quote(PurePath(path).as_posix(), safe="/")


def _result(rule: str, level: str, text: str, path: str) -> dict:
    return {
        "ruleId": rule,
        "ruleIndex": RULE_INDEX[rule],
        "level": level,
        "message": {"text": text},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(path)}}}],
    }


def _results(path: str, report: Report, exit_code: int) -> list[dict]:
    status, line = verdict(report)
    level = "error" if exit_code in (1, 3) or status in ("FAILED", "INCOMPLETE", "UNBOUNDED") else "note"
    how = bound_summary(report)
    verdict_result = _result("lipaudit/bound", level, f"{line}  ({how})" if how else line, path)
    network = report.network
    verdict_result["properties"] = {
        "upperBound": network.upper_bound,
        "method": network.method,
        "productBound": network.product_bound,
        "certified": network.certified,
        "residualBranches": len(network.branches),
        "invertibleBranches": sum(branch.invertible for branch in network.branches),
    }
    results = [verdict_result]
    for blocker in report.network.unsupported:
        results.append(
            _result("lipaudit/unsupported-op", "error", f"{blocker.op} at '{blocker.node}': {blocker.reason}", path)
        )
    for blocker in report.network.unbounded:
        results.append(
            _result("lipaudit/unbounded-op", "error", f"{blocker.op} at '{blocker.node}': {blocker.reason}", path)
        )
    for layer in report.threshold.layers or []:
        text = f"layer {layer.name} ({layer.op}): factor {comparison(layer.factor, '>', layer.limit)}"
        results.append(_result("lipaudit/layer-limit", "error", text, path))
    for branch in report.threshold.branches or []:
        text = f"residual branch at {branch.add}: {format_number(branch.ratio)} ≥ limit {format_number(branch.limit)}"
        results.append(_result("lipaudit/branch-limit", "error", text, path))
    return results


def sarif_dict(runs: list) -> dict:
    """``runs``: ModelRun records (lipaudit.render.collection)."""
    results: list[dict] = []
    for run in runs:
        if run.report is None:
            results.append(_result("lipaudit/error", "error", run.error or "the model could not be audited", run.path))
        else:
            results += _results(run.path, run.report, run.exit_code)
    rules = [
        {"id": rule, "name": rule.split("/")[1], "shortDescription": {"text": text}} for rule, text in RULES.items()
    ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "lipaudit", "version": __version__, "rules": rules}},
                "artifacts": [{"location": {"uri": _uri(run.path)}} for run in runs],
                "results": results,
            }
        ],
    }


def render_sarif_runs(runs: list) -> str:
    return json.dumps(sarif_dict(runs), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_sarif(report: Report, **_: object) -> str:
    return render_sarif_runs([ModelRun(report.model.path, report, exit_code=report.exit_code())])
