"""The user's input domain: ``--input-range LO:HI`` (every input) or ``NAME=LO:HI`` (one input).

The same strings come from ``[tool.lipaudit] input_range`` (one string or a list of them; a table
``{NAME = "LO:HI"}`` or ``{NAME = [LO, HI]}`` also reads). A named range overrides the unnamed one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError

_HINT = "write --input-range LO:HI (every input) or --input-range NAME=LO:HI, e.g. --input-range 0:1"


def _parse_bounds(text: str, spec: str) -> tuple[float, float]:
    parts = text.split(":")
    if len(parts) != 2:
        raise UsageError(f"cannot read the input range '{spec}': expected LO:HI", hint=_HINT)
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"cannot read the input range '{spec}': LO and HI must be numbers", hint=_HINT) from None
    return _checked(lo, hi, spec)


def _checked(lo: float, hi: float, spec: str) -> tuple[float, float]:
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise UsageError(f"the input range '{spec}' is empty or not a number (LO must be ≤ HI)", hint=_HINT)
    return lo, hi


def _specs(given: Any) -> list[tuple[str | None, tuple[float, float], str]]:
    """(input name or None for every input, bounds, the text as given) for each range."""
    if given is None:
        return []
    if isinstance(given, str):
        given = [given]
    out: list[tuple[str | None, tuple[float, float], str]] = []
    if isinstance(given, Mapping):
        for name, bounds in given.items():
            if isinstance(bounds, str):
                out.append((str(name), _parse_bounds(bounds, f"{name}={bounds}"), f"{name}={bounds}"))
            elif isinstance(bounds, Sequence) and len(bounds) == 2:
                spec = f"{name}={bounds[0]}:{bounds[1]}"
                out.append((str(name), _checked(float(bounds[0]), float(bounds[1]), spec), spec))
            else:
                raise UsageError(f"cannot read the input range of '{name}': {bounds!r}", hint=_HINT)
        return out
    for spec in given:
        name, equals, text = str(spec).strip().rpartition("=")
        out.append((name.strip() if equals else None, _parse_bounds(text.strip(), str(spec)), str(spec)))
    # A second range for the same input would silently replace the first (a typo in a CI step).
    seen: dict[str | None, str] = {}
    for name, _, spec in out:
        if name in seen:
            which = f"input '{name}'" if name is not None else "every input (no NAME=)"
            raise UsageError(f"two input ranges for {which}: '{seen[name]}' and '{spec}'", hint="give one range each")
        seen[name] = spec
    return out


def check_input_ranges(given: Any) -> None:
    """Raise UsageError when ``given`` is not a well-formed range setting (the names are checked later,
    against the model's inputs)."""
    _specs(given)


def parse_input_ranges(given: Any, input_names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The box of each network input, from ``--input-range`` strings (or the config's value).

    Raises UsageError for a malformed range, an empty one, or a name that is not an input.
    """
    ranges: dict[str, tuple[float, float]] = {}
    named: dict[str, tuple[float, float]] = {}
    for name, bounds, spec in _specs(given):
        if name is None:
            ranges = {input_name: bounds for input_name in input_names}
        elif name not in input_names:
            raise UsageError(
                f"the input range '{spec}' names '{name}', which is not an input of the model",
                hint=f"the inputs are: {', '.join(input_names)}",
            )
        else:
            named[name] = bounds
    ranges.update(named)
    return ranges


def domain_settings(ranges: Mapping[str, tuple[Any, Any]]) -> dict[str, list[float]]:
    """What the report's ``settings.domain`` holds: each bounded input's [lo, hi] (for a box given
    entry by entry, --around, the lowest and highest of its ends)."""
    return {name: [float(np.min(lo)), float(np.max(hi))] for name, (lo, hi) in ranges.items()}


def describe_domain(domain: Mapping[str, Sequence[float]] | None) -> str:
    """'x ∈ [0, 1]' (several inputs joined by commas), for the renderers."""
    if not domain:
        return ""
    return ", ".join(f"{name} ∈ [{lo:g}, {hi:g}]" for name, (lo, hi) in domain.items())
