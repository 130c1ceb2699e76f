"""The verdict line every format ends with, and number formatting shared by the renderers."""

from __future__ import annotations

from ..domain.inputs import describe_domain
from ..report import Report, within


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}f}"
    return f"{value:.{digits - 1}e}"


def bound_text(report: Report) -> str:
    """The network bound, with as many digits as its comparison with --max-lipschitz needs."""
    bound, limit = report.network.upper_bound, report.threshold.max_lipschitz
    if bound is None or limit is None:
        return format_number(bound)
    return distinguishing_pair(bound, limit)[0]


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


STAGE_NAMES = {"load_s": "load", "verify_s": "verify", "analyze_s": "layers", "tighten_s": "recursion"}


def timings_line(report: Report) -> str:
    """'load 0.21 s · verify 0.10 s · layers 1.30 s · recursion 0.40 s · total 2.01 s'."""
    parts = []
    for key, seconds in report.timings.items():
        name = STAGE_NAMES.get(key, key.removesuffix("_s").replace("_", " "))
        parts.append(f"{name} {seconds:.2f} s" if isinstance(seconds, (int, float)) else f"{name} {seconds}")
    return " · ".join(parts)


def method_text(report: Report) -> str:
    """How the network figure was reached, and the product it is compared with."""
    network = report.network
    if network.method == "product":
        return "the product of the layers' factors"
    product = format_number(network.product_bound)
    if network.product_bound and network.upper_bound is not None:
        product += f", {network.upper_bound / network.product_bound:.3g}× of it"
    return f"{network.method} (the slope-restricted recursion over the graph); the product of the factors: {product}"


def bound_summary(report: Report) -> str:
    """One line on how the figure was reached: 'recursion-w2, product 20.9583; residual branches: 1,
    0 invertible' ('' when there is no finite bound)."""
    network = report.network
    if network.upper_bound is None:
        return ""
    text = network.method
    if network.method != "product":
        text += f", product {format_number(network.product_bound)}"
    if network.branches:
        invertible = sum(branch.invertible for branch in network.branches)
        text += f"; residual branches: {len(network.branches)}, {invertible} invertible"
    return text


def branch_rows(report: Report) -> list[tuple[str, str, str, str, str, str]]:
    """(add, fork, Lip(g) bound, product of the branch's factors, method, 'yes'/'no' invertible) per branch."""
    return [
        (
            branch.add,
            branch.fork,
            format_number(branch.ratio),
            format_number(branch.product),
            branch.method,
            "yes" if branch.invertible else "no",
        )
        for branch in report.network.branches
    ]


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
    around = report.settings.get("around")
    if around:
        centres = ", ".join(f"{name} (sha256 {c['sha256'][:12]}…)" for name, c in around["centres"].items())
        where = f"the ℓ∞ box of radius {around['radius']:g} around {centres}"
    else:
        where = describe_domain(report.settings.get("domain")) or "the stated input domain"
    return f"LOCAL bound on {where}, not a global Lipschitz constant"


def verdict(report: Report) -> tuple[str, str]:
    status, line = _verdict(report)
    if is_local(report) and report.network.upper_bound is not None:
        line += f"  ({scope_text(report)})"
    return status, line


def _verdict(report: Report) -> tuple[str, str]:
    """(status, line): status is PASSED, FAILED, INCOMPLETE (an op without a rule), UNBOUNDED (an op
    that is not Lipschitz) or DONE (no threshold)."""
    bound = report.network.upper_bound
    threshold = report.threshold
    limit = threshold.max_lipschitz
    if bound is None:
        network = report.network
        if network.unsupported or not network.complete:
            blockers = len(network.unsupported) + len(network.unbounded)
            return "INCOMPLETE", f"INCOMPLETE  no finite bound: {blockers} op(s) unsupported or unbounded"
        return "UNBOUNDED", f"UNBOUNDED  no finite bound: {len(network.unbounded)} op(s) not Lipschitz"
    over_layers = threshold.layers or []
    if limit is not None and not within(bound, limit, threshold.rtol):
        return "FAILED", f"FAILED  bound {comparison(bound, '>', limit, threshold.rtol)}"
    if over_layers:
        return "FAILED", f"FAILED  {len(over_layers)} layer(s) over their max_layer_factor"
    over_branches = threshold.branches or []
    if over_branches:
        return "FAILED", (
            f"FAILED  {len(over_branches)} residual branch(es) not below max_branch_lipschitz "
            f"{format_number(threshold.max_branch_lipschitz)}"
        )
    if limit is None and threshold.max_branch_lipschitz is not None:
        return "PASSED", (
            f"PASSED  every residual branch below {format_number(threshold.max_branch_lipschitz)}"
            f"  (bound {format_number(bound)})"
        )
    if limit is None:
        return "DONE", f"BOUND  {format_number(bound)}"
    return "PASSED", f"PASSED  bound {comparison(bound, '≤', limit, threshold.rtol)}"


def comparison(value: float | None, sign: str, limit: float, rtol: float = 0.0) -> str:
    """'1.000004 > 1.0000', with enough digits that the two figures differ where they do, and the
    tolerance where one was allowed: '1.000004 ≤ 1.0000 (within rtol 1e-05)'."""
    if value is None:
        return f"— {sign} {format_number(limit)}"
    shown_value, shown_limit = distinguishing_pair(value, limit)
    text = f"{shown_value} {sign} {shown_limit}"
    if rtol and value > limit and sign == "≤":
        text += f" (within rtol {rtol:g})"
    elif rtol and sign == ">":
        text += f" (beyond rtol {rtol:g})"
    return text
