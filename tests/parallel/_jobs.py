"""Job functions for the executor tests: module-level, so that worker processes and Ray import them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from lipaudit.parallel.jobs import Executor, Job


def echo(shared: dict[str, Any], value: Any, delay_s: float = 0.0) -> Any:
    time.sleep(delay_s)
    return value


def total(shared: dict[str, Any], *keys: str) -> float:
    """The sum of the shared arrays it is given: shows what reached the worker."""
    return float(sum(float(shared[key].sum()) for key in keys))


def die(shared: dict[str, Any]) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_once(shared: dict[str, Any], marker: str, value: Any) -> Any:
    """Kill the worker on the first attempt (leaving a marker), succeed on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def fail(shared: dict[str, Any], message: str) -> None:
    raise RuntimeError(message)


def killed(shared: dict[str, Any], *args: Any) -> None:
    """Stands in for a layer job whose worker dies every time."""
    os.kill(os.getpid(), signal.SIGKILL)


class KillingExecutor(Executor):
    """Runs the jobs on ``inner``, but the ones whose label names ``victim`` kill their worker."""

    def __init__(self, inner: Executor, victim: str) -> None:
        self.inner = inner
        self.victim = victim
        self.workers = inner.workers

    def run(self, jobs, on_done=None):
        swapped = [
            Job(killed, job.args, job.shared, job.label) if job.label.endswith(f" {self.victim}") else job
            for job in jobs
        ]
        return self.inner.run(swapped, on_done)
