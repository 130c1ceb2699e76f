"""Jobs and the executors that run them: here in this process, in local worker processes, or on Ray.

Every executor keeps the same contract, so a report never depends on where its work ran:

* ``run(jobs)`` returns one outcome per job, in the jobs' order, whatever order they finish in;
* a job that fails (its worker dies, runs out of memory, or raises) is tried once more, and after
  a second failure its outcome is a ``TaskFailure`` saying why: never a made-up result;
* work runs single-threaded in torch (``KERNEL_THREADS``): the kernels' last bits depend on how
  many threads split a reduction, so with one thread everywhere a job gives the same figure in
  any worker, and many single-threaded workers do not oversubscribe the cores.

A job is a module-level function (pickled by reference, imported in the worker) called as
``function(shared, *args)``. ``shared`` holds the job's large inputs (weights) by key; keys are
unique in a run, so an executor that can (Ray's object store) ships each one once however many
jobs read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

KERNEL_THREADS = 1
ATTEMPTS = 2  # a failed job is tried once more


@dataclass
class Job:
    function: Callable[..., Any]
    args: tuple = ()
    shared: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what the progress bar shows while it runs
    gpu: bool = False  # ask the scheduler for a GPU (Ray)

    def __call__(self, shared: dict[str, Any] | None = None) -> Any:
        return self.function(self.shared if shared is None else shared, *self.args)


@dataclass(frozen=True)
class TaskFailure:
    """A job that failed on every attempt; ``reason`` is one line about the last one."""

    reason: str


# Called after each job finishes: (jobs finished so far, jobs in all, the job).
DoneFn = Callable[[int, int, Job], None]


class Executor:
    """Runs jobs; see the module docstring for the contract."""

    workers: int = 1
    name: str = "serial"

    def run(self, jobs: Sequence[Job], on_done: DoneFn | None = None) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (and a cluster this executor started)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block (None: left alone)."""
    if count is None:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


class InlineExecutor(Executor):
    """Jobs one after the other in this process.

    ``threads``: torch threads while a job runs (``KERNEL_THREADS`` for figures identical to the
    worker executors'; None keeps this process's setting, for a run without --workers).
    """

    def __init__(self, threads: int | None = KERNEL_THREADS) -> None:
        self.threads = threads

    def run(self, jobs: Sequence[Job], on_done: DoneFn | None = None) -> list[Any]:
        results: list[Any] = []
        with torch_threads(self.threads):
            for job in jobs:
                outcome: Any = None
                for _ in range(ATTEMPTS):
                    try:
                        outcome = job()
                        break
                    except MemoryError as error:
                        outcome = TaskFailure(f"out of memory ({first_line(error)})")
                    except Exception as error:  # reported as this job's failure, as a worker's would be
                        outcome = TaskFailure(first_line(error))
                results.append(outcome)
                if on_done is not None:
                    on_done(len(results), len(jobs), job)
        return results
