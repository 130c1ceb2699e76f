"""The `lipaudit` Typer application. Each subcommand lives in a module of its own; importing this
module imports them all (and torch): ``lipaudit.cli.app`` loads it only when a command runs."""

from __future__ import annotations

import typer

from .. import __version__
from .check import check
from .diff import diff
from .ops import ops

app = typer.Typer(
    name="lipaudit",
    help="Audit the Lipschitz constant of trained neural networks (ONNX, TorchScript, torch.export).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command(name="check")(check)
app.command(name="ops")(ops)
app.command(name="diff")(diff)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lipaudit {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Certified upper bounds on the Lipschitz constant of a network, from the file you ship.

    Shell completion: `lipaudit --install-completion` (bash, zsh, fish, PowerShell)."""
