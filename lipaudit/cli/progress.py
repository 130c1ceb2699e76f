"""A progress bar on stderr, only where a person is watching."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..ir import Node


@contextlib.contextmanager
def node_progress(enabled: bool) -> Iterator:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    console = Console(stderr=True)
    columns = (TextColumn("analysing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None)

        def on_node(index: int, total: int, node: Node) -> None:
            progress.update(task, total=total, completed=index, description=f"{node.op_type} {node.name}")

        yield on_node
