"""The loop a local worker process runs: receive a job, run it, send its outcome back.

The forkserver imports this module once (with torch and every op rule), so each worker forked
from it starts warm, in a fraction of a second.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

import torch

import lipaudit.compose  # noqa: F401  (registers the op rules before workers are forked)

from .jobs import KERNEL_THREADS, Job, first_line


def serve(connection: Connection) -> None:
    """Run jobs until the parent sends None or goes away. Outcomes: ("ok", value) or ("error", reason)."""
    torch.set_num_threads(KERNEL_THREADS)
    while True:
        try:
            job: Job | None = connection.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        outcome: tuple[str, Any]
        try:
            outcome = ("ok", job())
        except MemoryError as error:
            outcome = ("error", f"out of memory ({first_line(error)})")
        except Exception as error:
            outcome = ("error", first_line(error))
        try:
            connection.send(outcome)
        except (EOFError, OSError):
            return
        except Exception as error:  # the result does not pickle: say so instead
            connection.send(("error", f"the result cannot be sent back: {first_line(error)}"))
