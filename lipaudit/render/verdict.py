"""The verdict line every format ends with, and number formatting shared by the renderers."""

from __future__ import annotations

from ..domain.inputs import describe_domain
from ..report import Report


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}f}"
    return f"{value:.{digits - 1}e}"


def distinguishing_pair(bound: float, limit: float) -> tuple[str, str]:
    """Both numbers with enough digits that the comparison is visible in the text.

    A bound of 10.00004 against a limit of 10 fails; printing "10.0000 > 10.0000" would read as
    a bug, so digits are added until the two figures differ (the comparison itself is exact).
    """
    for digits in range(4, 18):
        shown = format_number(bound, digits), format_number(limit, digits)
        if (bound == limit) == (shown[0] == shown[1]):
            return shown
    return repr(bound), repr(limit)


def verification_text(report: Report) -> str:
    """'yes (onnxruntime, 13 values)' or 'no (why)': whether the figure is for the function that ships."""
    check = report.verification
    if check.checked:
        return f"yes ({check.reference}, {check.values} values)"
    return f"no ({check.reason})" if check.reason else "no"


def is_local(report: Report) -> bool:
    return report.network.scope == "domain"


def scope_text(report: Report) -> str:
    """'' for a global figure; for a local one, what it is local to."""
    if not is_local(report):
        return ""
    where = describe_domain(report.settings.get("domain")) or "the stated input domain"
    return f"LOCAL bound on {where}, not a global Lipschitz constant"


def verdict(report: Report) -> tuple[str, str]:
    status, line = _verdict(report)
    if is_local(report) and report.network.upper_bound is not None:
        line += f"  ({scope_text(report)})"
    return status, line


def _verdict(report: Report) -> tuple[str, str]:
    """(status, line): status is PASSED, FAILED, INCOMPLETE or DONE (no threshold)."""
    bound = report.network.upper_bound
    limit = report.threshold.max_lipschitz
    if bound is None:
        blockers = len(report.network.unsupported) + len(report.network.unbounded)
        return "INCOMPLETE", f"INCOMPLETE  no finite bound: {blockers} op(s) unsupported or unbounded"
    over_layers = report.threshold.layers or []
    if limit is not None and bound > limit:
        shown_bound, shown_limit = distinguishing_pair(bound, limit)
        return "FAILED", f"FAILED  bound {shown_bound} > {shown_limit}"
    if over_layers:
        return "FAILED", f"FAILED  {len(over_layers)} layer(s) over their max_layer_factor"
    over_branches = report.threshold.branches or []
    if over_branches:
        return "FAILED", (
            f"FAILED  {len(over_branches)} residual branch(es) not below max_branch_lipschitz "
            f"{format_number(report.threshold.max_branch_lipschitz)}"
        )
    if limit is None and report.threshold.max_branch_lipschitz is not None:
        return "PASSED", (
            f"PASSED  every residual branch below {format_number(report.threshold.max_branch_lipschitz)}"
            f"  (bound {format_number(bound)})"
        )
    if limit is None:
        return "DONE", f"BOUND  {format_number(bound)}"
    shown_bound, shown_limit = distinguishing_pair(bound, limit)
    return "PASSED", f"PASSED  bound {shown_bound} ≤ {shown_limit}"
