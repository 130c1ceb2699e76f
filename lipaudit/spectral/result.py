"""The answer every spectral kernel gives: a value and how far it can be trusted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NormResult:
    """An operator-norm figure.

    ``value`` is a guaranteed upper bound when ``certified`` is true; otherwise it is an
    estimate (power iteration converges from below).  ``estimate`` is a lower estimate,
    when one was cheap to get; ``frobenius`` the Frobenius-type bound, when computed; ``gap``
    the relative gap value / estimate − 1 between the two (how much tighter the bound could
    still get, at most), when both are known; ``seconds`` the wall time the figure took, when
    measured.
    """

    value: float
    method: str
    certified: bool
    estimate: float | None = None
    frobenius: float | None = None
    notes: list[str] = field(default_factory=list)
    gap: float | None = None
    seconds: float | None = None
