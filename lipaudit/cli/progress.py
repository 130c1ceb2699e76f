"""A progress bar on stderr, only where a person is watching and only once the work takes a while."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..ir import Node

SHOW_AFTER_S = 1.0


def _describe(item: Node | str) -> str:
    return f"{item.op_type} {item.name}" if isinstance(item, Node) else str(item)


@contextlib.contextmanager
def node_progress(enabled: bool, label: str = "analysing") -> Iterator:
    """A callback ``(done, total, item)`` that moves one bar: over the nodes of a serial run, the
    jobs of a parallel one (local or on Ray, as each finishes), or the models of a multi-model one."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, console=Console(stderr=True), transient=True)
    task = progress.add_task("", total=None)
    started = time.monotonic()
    shown = False

    def on_node(index: int, total: int, node: Node | str) -> None:
        nonlocal shown
        # Quick audits finish before the bar would appear: no flicker for them.
        if not shown and time.monotonic() - started >= SHOW_AFTER_S:
            progress.start()
            shown = True
        progress.update(task, total=total, completed=index, description=_describe(node))

    try:
        yield on_node
    finally:
        if shown:
            progress.stop()
