"""One model of a check, as the renderers of several models see it: its report, or its error."""

from __future__ import annotations

from dataclasses import dataclass

from ..report import Report


@dataclass
class ModelRun:
    path: str
    report: Report | None
    error: str = ""
    exit_code: int = 0
