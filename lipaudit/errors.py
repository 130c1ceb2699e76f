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


class AttributeValueError(LipauditError, ValueError):
    """A node lacks an attribute it needs, or has one of the wrong type or out of range."""


class UsageError(LipauditError):
    """A setting or flag has a value lipaudit does not accept."""


class ExecutionError(LipauditError):
    """The IR executor cannot run a node (an op it does not implement, or a form of one)."""

    def __init__(self, message: str, hint: str = "", *, node: str = "", op: str = "") -> None:
        super().__init__(message, hint)
        self.node = node
        self.op = op


class VerificationError(LipauditError):
    """The IR does not compute what the model file computes: the bound would be for another function."""

    def __init__(self, message: str, hint: str = "", *, node: str = "", op: str = "") -> None:
        super().__init__(message, hint)
        self.node = node
        self.op = op


class ContradictionError(LipauditError):
    """lipaudit's own empirical lower bound exceeds its certified upper bound: the upper bound is
    wrong for this model, so no certified figure may be reported."""

    def __init__(self, message: str, hint: str = "", *, upper: float, lower: float) -> None:
        super().__init__(message, hint)
        self.upper = upper
        self.lower = lower
