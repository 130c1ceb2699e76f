"""Values an invariant guarantees but the type checker cannot see (it does not follow them).

``present`` raises ValueError, not AssertionError: the rules, interval rules and runs that use it
run under handlers that turn ValueError into "could not be analysed" (compose, domain propagation,
the executor), so a broken invariant degrades like any other rule failure instead of aborting.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """``value``, which the caller's invariant says is not None."""
    if value is None:
        raise ValueError(f"{what} is missing")
    return value
