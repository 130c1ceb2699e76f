"""JUnit XML: one test case per model, failed when its gate fails (with the reason), in error when
it could not be audited. The layout is Ant's, which Jenkins, GitLab and most CI systems read."""

from __future__ import annotations

import datetime
import socket
from xml.etree import ElementTree

from ..report import Report
from ..version import __version__
from .runs import ModelRun
from .verdict import bound_summary, verdict

# What a model's exit code means, as a JUnit outcome.
FAILURE_TYPES = {1: "threshold", 3: "incomplete"}


def _seconds(report: Report | None) -> float:
    if report is None:
        return 0.0
    return float(report.timings.get("total_s", 0.0) or 0.0)


def _details(report: Report) -> str:
    lines = [verdict(report)[1]]
    if bound_summary(report):
        lines.append(f"bound by {bound_summary(report)}")
    for blocker in report.network.unsupported + report.network.unbounded:
        lines.append(f"{blocker.op} at '{blocker.node}': {blocker.reason}")
    for layer in report.threshold.layers or []:
        lines.append(f"layer {layer.name} ({layer.op}): factor {layer.factor} over its limit {layer.limit}")
    for branch in report.threshold.branches or []:
        lines.append(f"residual branch at {branch.add}: {branch.ratio} not below {branch.limit}")
    lines += report.notices
    return "\n".join(lines)


def render_junit_runs(runs: list) -> str:
    """``runs``: ModelRun records (lipaudit.render.collection)."""
    total = sum(_seconds(run.report) for run in runs)
    failures = sum(1 for run in runs if run.report is not None and run.exit_code in FAILURE_TYPES)
    errors = sum(1 for run in runs if run.report is None or run.exit_code == 2)
    suites = ElementTree.Element("testsuites")
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        {
            "package": "lipaudit",
            "id": "0",
            "name": "lipaudit",
            "timestamp": datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": socket.gethostname() or "localhost",
            "tests": str(len(runs)),
            "failures": str(failures),
            "errors": str(errors),
            "skipped": "0",
            "time": f"{total:.3f}",
        },
    )
    properties = ElementTree.SubElement(suite, "properties")
    ElementTree.SubElement(properties, "property", {"name": "lipaudit.version", "value": __version__})
    for run in runs:  # how each figure was reached: the recursion against the product, the residual branches
        if run.report is not None and bound_summary(run.report):
            ElementTree.SubElement(properties, "property", {"name": run.path, "value": bound_summary(run.report)})
    for run in runs:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            {"name": run.path, "classname": "lipaudit.check", "time": f"{_seconds(run.report):.3f}"},
        )
        if run.report is None:
            error = ElementTree.SubElement(case, "error", {"message": run.error, "type": "error"})
            error.text = run.error
        elif run.exit_code in FAILURE_TYPES:
            line = verdict(run.report)[1]
            failure = ElementTree.SubElement(case, "failure", {"message": line, "type": FAILURE_TYPES[run.exit_code]})
            failure.text = _details(run.report)
        elif run.exit_code == 2:
            error = ElementTree.SubElement(case, "error", {"message": run.error or "error", "type": "error"})
            error.text = run.error
    ElementTree.SubElement(suite, "system-out").text = ""
    ElementTree.SubElement(suite, "system-err").text = ""
    ElementTree.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(suites, encoding="unicode") + "\n"


def render_junit(report: Report, **_: object) -> str:
    return render_junit_runs([ModelRun(report.model.path, report, exit_code=report.exit_code())])
