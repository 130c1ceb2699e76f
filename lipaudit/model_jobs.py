"""Whole models as jobs: a multi-model check audits each model in a worker of its own.

A model's audit is independent of the others'; its report comes back whole, and the command
renders, writes and gates the reports in the order the models were given, as a serial run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LipauditError
from .options import AuditOptions
from .parallel.jobs import Job
from .report import Report


@dataclass(frozen=True)
class AuditError:
    """A LipauditError raised by a model's audit in a worker, as it crosses back: message and hint."""

    message: str
    hint: str = ""

    def error(self) -> LipauditError:
        return LipauditError(self.message, self.hint)


def audit_model(shared: dict[str, Any], path: str, options: AuditOptions) -> Report | AuditError:
    """``pipeline.audit(path, options)``, with a user-facing error returned rather than raised."""
    from .pipeline import audit

    try:
        return audit(path, options)
    except LipauditError as error:
        return AuditError(str(error), error.hint)


def model_job(path: Path, options: AuditOptions) -> Job:
    return Job(audit_model, (str(path), options), label=path.name)
