"""The `lipaudit` entry point. ``--version`` answers without importing the commands (and so torch,
which takes seconds to import); everything else runs the Typer application of ``commands``."""

from __future__ import annotations

import sys
from typing import Any

from .. import __version__


def __getattr__(name: str) -> Any:
    # ``from lipaudit.cli.app import app`` still gives the Typer application, loaded on first use.
    if name == "app":
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(f"lipaudit {__version__}")
        return
    from .commands import app

    app()
