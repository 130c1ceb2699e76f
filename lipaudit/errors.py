"""Errors the user can act on. The CLI prints them as one line plus a hint, and exits 2."""

from __future__ import annotations


class LipauditError(Exception):
    """Base class: ``str(error)`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ModelLoadError(LipauditError):
    """The file is missing, unreadable, corrupt or not a model lipaudit can read."""


class InputShapeError(LipauditError):
    """Input shapes are dynamic and not given, or given but do not fit the model."""


class UsageError(LipauditError):
    """A setting or flag has a value lipaudit does not accept."""
