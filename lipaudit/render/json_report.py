from __future__ import annotations

from ..report import Report


def render_json(report: Report, **_: object) -> str:
    return report.to_json()
