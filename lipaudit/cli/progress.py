"""Progress on stderr, only where a person is watching and only once the work takes a while.

One line follows every stage of an audit: the layers (a bar over the nodes, or over the jobs of a
parallel run), then the recursion and the lower-bound search (their names and the time spent),
or the models of a multi-model run. It is drawn without colour under --color never or NO_COLOR.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..ir import Node

SHOW_AFTER_S = 1.0
STAGE_LABELS = {
    "load": "loading the model",
    "verify": "verifying against the runtime",
    "layers": "analysing",
    "recursion": "tightening (recursion)",
    "lower_bound": "searching a lower bound",
}


def _describe(item: Node | str) -> str:
    return f"{item.op_type} {item.name}" if isinstance(item, Node) else str(item)


@dataclass
class Tracker:
    """The callbacks an audit reports to: ``on_node(done, total, item)`` and ``on_stage(name)``."""

    progress: Progress | None
    task: TaskID | None
    label: str
    started: float = field(default_factory=time.monotonic)
    shown: bool = False

    lock: threading.Lock = field(default_factory=threading.Lock)

    def _show(self, now: bool = False) -> None:
        # Quick audits finish before the line would appear: no flicker for them.
        if self.progress is None or self.shown or not (now or time.monotonic() - self.started >= SHOW_AFTER_S):
            return
        with self.lock:
            if not self.shown:
                self.shown = True
                self.progress.start()

    def on_node(self, index: int, total: int, node: Node | str) -> None:
        if self.progress is None or self.task is None:
            return
        self._show()
        self.progress.update(self.task, total=total, completed=index, label=self.label, description=_describe(node))

    def on_stage(self, stage: str) -> None:
        if self.progress is None or self.task is None:
            return
        self.label = STAGE_LABELS.get(stage, stage)
        if stage != "layers":  # a stage without steps: no bar to fill, only its name and the time
            self.progress.update(self.task, total=None, completed=0, label=self.label, description="")
        self._show()

    def tick(self) -> None:
        """The timer's call, a second after the start: the audit is not a quick one, show the line."""
        self._show(now=True)


@contextlib.contextmanager
def audit_progress(enabled: bool, color: bool = True, label: str = "analysing") -> Iterator[Tracker]:
    """A Tracker that draws on stderr when ``enabled`` and stderr is a terminal, else does nothing."""
    if not enabled or not sys.stderr.isatty():
        yield Tracker(None, None, label)
        return
    columns = (
        TextColumn("{task.fields[label]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    console = Console(stderr=True, no_color=not color, highlight=False)
    progress = Progress(*columns, console=console, transient=True)
    task = progress.add_task("", total=None, label=label)
    tracker = Tracker(progress, task, label)
    # A stage that reports nothing while it works (the recursion, the lower bound) still shows once a
    # second has gone: the timer draws the line then, whatever the stage.
    timer = threading.Timer(SHOW_AFTER_S, tracker.tick)
    timer.daemon = True
    timer.start()
    try:
        yield tracker
    finally:
        timer.cancel()
        timer.join()
        if tracker.shown:
            progress.stop()


@contextlib.contextmanager
def node_progress(enabled: bool, label: str = "analysing", color: bool = True) -> Iterator:
    """The ``on_node`` callback alone (None when nothing is drawn), for callers that follow one bar."""
    with audit_progress(enabled, color, label) as tracker:
        yield tracker.on_node if tracker.progress is not None else None
