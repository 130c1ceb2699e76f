"""What a rule says about one node: how the Lipschitz bound of its outputs follows from its inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..spectral.result import NormResult

Status = Literal["bounded", "unbounded", "unknown"]
Combine = Literal["sum", "rss"]


@dataclass
class Factor:
    """A node's Lipschitz factor.

    For a node with variable inputs x_1..x_n, ``L(out) <= Σ w_i·L(x_i)`` (``combine="sum"``) or
    ``sqrt(Σ (w_i·L(x_i))²)`` (``combine="rss"``), where ``w_i`` is ``input_weights[i]`` when given,
    else ``value`` for every input.
    """

    status: Status
    value: float | None
    method: str
    certified: bool
    estimate: float | None = None
    frobenius: float | None = None
    notes: list[str] = field(default_factory=list)
    reason: str = ""
    combine: Combine = "sum"
    input_weights: list[float] | None = None
    # Evaluating this node in float32 adds no rounding (a scale by a power of two): no float32 margin.
    exact: bool = False
    seconds: float | None = field(default=None, compare=False)  # how long the rule took (set by the composer)

    @classmethod
    def constant(cls, value: float, method: str, *, note: str | None = None, **kwargs) -> Factor:
        """A closed-form factor (activation constants, multiplicities): certified by derivation."""
        notes = [note] if note else []
        return cls("bounded", float(value), method, True, notes=notes, **kwargs)

    @classmethod
    def from_norm(cls, norm: NormResult, *, scale: float = 1.0) -> Factor:
        scale = abs(float(scale))
        return cls(
            "bounded",
            norm.value * scale,
            norm.method,
            norm.certified,
            estimate=None if norm.estimate is None else norm.estimate * scale,
            frobenius=None if norm.frobenius is None else norm.frobenius * scale,
            notes=list(norm.notes),
        )

    @classmethod
    def unbounded(cls, reason: str) -> Factor:
        return cls("unbounded", None, "unbounded", False, reason=reason)

    @classmethod
    def unknown(cls, reason: str) -> Factor:
        return cls("unknown", None, "unsupported", False, reason=reason)
