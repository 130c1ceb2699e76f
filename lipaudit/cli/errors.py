"""Turn errors into one line plus a hint; the traceback only with LIPAUDIT_DEBUG=1."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from ..errors import LipauditError
from ..report import EXIT_USAGE

F = TypeVar("F", bound=Callable)


def debug_enabled() -> bool:
    return os.environ.get("LIPAUDIT_DEBUG", "") not in ("", "0")


def report_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except LipauditError as error:
            if debug_enabled():
                raise
            print_error(str(error), error.hint)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print_error("interrupted", "")
            raise typer.Exit(130) from None
        except Exception as error:  # a bug in lipaudit: still one line, the traceback on request
            if debug_enabled():
                raise
            print_error(
                f"internal error: {type(error).__name__}: {error}",
                "set LIPAUDIT_DEBUG=1 for the traceback, and please report it",
            )
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def print_error(message: str, hint: str) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else "error"
    print(f"lipaudit: error: {first_line}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)
