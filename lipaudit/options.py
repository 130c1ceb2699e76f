"""The settings of one audit, typed and checked in one place.

``AuditOptions`` is what ``pipeline.audit`` runs with. The command builds it from its flags and
the config (``config.Settings.audit_options``), the Python API from its keywords; each setting is
checked here, when the options are made, with the message the command prints. Parsing text
('2min', '2GiB', 'inf') stays with the config, which reads text; the checks of the typed values
are these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .domain.around import check_around
from .domain.inputs import check_input_ranges
from .errors import UsageError
from .execute.empirical_lower_bound import DEFAULT_SAMPLES, DEFAULT_STEPS
from .spectral.dense import DENSE_METHODS
from .tight.graph_bound import BOUNDS, DEFAULT_RECURSION_BUDGET

METHODS = DENSE_METHODS  # how linear layers are measured; convolutions take the same names
# Weights (external data) above this are memory-mapped rather than loaded, and the model is not run whole.
DEFAULT_IN_MEMORY_LIMIT = 2 * 2**30
CHOICES: dict[str, tuple[str, ...]] = {"method": METHODS, "bound": BOUNDS}

# --input-range: "LO:HI" strings (one per input, "NAME=LO:HI"), or the config's table {name: [lo, hi]}.
InputRange = str | Sequence[str] | Mapping[str, Sequence[float]]


def check_choice(key: str, value: object) -> str:
    """``value`` when it is one of the choices of ``key`` ('method' or 'bound'); UsageError otherwise."""
    choices = CHOICES[key]
    if value not in choices:
        raise UsageError(f"unknown {key} '{value}'", hint=f"choose one of: {', '.join(choices)}")
    return str(value)


@dataclass(frozen=True)
class AuditOptions:
    """How one model is audited; every field has the command's default (docstring of pipeline.audit)."""

    input_shape: tuple[str, ...] = ()
    method: str = "auto"
    device: str = "auto"  # auto, cpu, cuda or cuda:N: resolved (and checked) by spectral.device
    bound: str = "recursion"
    max_lipschitz: float | None = None
    verify: bool | None = None  # None: only for models under 50M parameters
    lower_bound: bool = False
    seed: int = 0
    samples: int = DEFAULT_SAMPLES
    steps: int = DEFAULT_STEPS
    lower_bound_time: float | None = None  # seconds; None: no time limit
    input_range: InputRange | None = None
    # --around: centres (.npy paths, "NAME=FILE.npy", arrays, or a table of them by input name) of the
    # ℓ∞ box of this radius: a local bound there.
    around: Any = None
    radius: float | None = None
    recursion_budget: float | None = DEFAULT_RECURSION_BUDGET  # None: no limit
    recursion_time: float | None = None  # seconds; None: no time limit
    in_memory_limit: int = DEFAULT_IN_MEMORY_LIMIT  # bytes

    def __post_init__(self) -> None:
        check_choice("method", self.method)
        check_choice("bound", self.bound)
        if self.samples < 1 or self.steps < 0:
            raise UsageError(
                "--samples must be at least 1 and --steps at least 0", hint="for example --samples 16 --steps 20"
            )
        if self.recursion_budget is not None and not self.recursion_budget >= 0:
            raise UsageError("--recursion-budget must be a number >= 0", hint="for example --recursion-budget 4")
        if self.recursion_time is not None and not self.recursion_time > 0:
            raise UsageError("--recursion-time must be a positive number of seconds", hint="for example 2min")
        if self.lower_bound_time is not None and not self.lower_bound_time > 0:
            raise UsageError("--lower-bound-time must be a positive number of seconds", hint="for example 60s")
        if self.input_range is not None:
            check_input_ranges(self.input_range)
        check_around(self.around, self.radius)


__all__ = [
    "BOUNDS",
    "CHOICES",
    "DEFAULT_IN_MEMORY_LIMIT",
    "DEFAULT_SAMPLES",
    "DEFAULT_STEPS",
    "METHODS",
    "AuditOptions",
    "InputRange",
    "check_choice",
]
