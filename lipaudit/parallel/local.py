"""Jobs in worker processes on this machine (--workers N).

Each worker runs one job at a time, so when one dies (killed, out of memory) we know exactly
which job it was running: that job alone is tried again, on a fresh worker, and the others are
not disturbed (a ``concurrent.futures`` pool breaks as a whole and cannot say which job killed
it). Workers are forked from a forkserver that has imported torch and the rules once: they start
in a fraction of a second, and never inherit the threads of this process (fork after threads have
started can deadlock in OpenMP).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any

from .jobs import ATTEMPTS, DoneFn, Executor, Job, TaskFailure

STOP_TIMEOUT_S = 5.0


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ", out of memory?" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


class _Worker:
    def __init__(self, context) -> None:
        from .worker import serve

        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child,), daemon=True, name="lipaudit-worker")
        self.process.start()
        child.close()

    def receive(self) -> tuple[str, Any] | None:
        """The job's outcome, or None when the worker died without giving one."""
        try:
            if self.connection.poll():
                return self.connection.recv()
        except (EOFError, OSError):
            pass
        return None

    def death(self) -> str:
        self.process.join(STOP_TIMEOUT_S)
        return f"the worker process died ({_exit_description(self.process.exitcode)})"

    def stop(self, wait_s: float = STOP_TIMEOUT_S) -> None:
        try:
            self.connection.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(wait_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class ProcessExecutor(Executor):
    name = "processes"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._context: multiprocessing.context.BaseContext
        if "forkserver" in multiprocessing.get_all_start_methods():
            from multiprocessing import forkserver

            self._context = multiprocessing.get_context("forkserver")
            # The pipeline too (by name: the executors sit beneath it), for the jobs that audit whole models.
            self._context.set_forkserver_preload(["lipaudit.parallel.worker", "lipaudit.pipeline"])
            # Start it now: it imports torch and the rules while this process loads the model.
            forkserver.ensure_running()
        else:  # Windows: each worker imports everything itself, a few seconds once per worker
            self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []

    def run(self, jobs: Sequence[Job], on_done: DoneFn | None = None) -> list[Any]:
        results: list[Any] = [None] * len(jobs)
        attempts = [0] * len(jobs)
        waiting = deque(range(len(jobs)))
        busy: dict[_Worker, int] = {}
        finished = 0
        try:
            while waiting or busy:
                while waiting and len(busy) < self.workers:
                    worker = self._worker()
                    index = waiting.popleft()
                    attempts[index] += 1
                    try:
                        worker.connection.send(jobs[index])
                    except (OSError, ValueError):  # the worker is already gone: count it as a death
                        pass
                    busy[worker] = index
                ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy]))
                for worker, index in list(busy.items()):
                    if worker.connection not in ready and worker.process.sentinel not in ready:
                        continue
                    del busy[worker]
                    outcome = worker.receive()
                    if outcome is None:
                        reason = worker.death()
                        worker.stop(0)
                    else:
                        self._idle.append(worker)
                        if outcome[0] == "ok":
                            results[index] = outcome[1]
                            finished += 1
                            if on_done is not None:
                                on_done(finished, len(jobs), jobs[index])
                            continue
                        reason = outcome[1]
                    if attempts[index] < ATTEMPTS:
                        waiting.appendleft(index)
                    else:
                        results[index] = TaskFailure(f"{reason} (tried {ATTEMPTS} times)")
                        finished += 1
                        if on_done is not None:
                            on_done(finished, len(jobs), jobs[index])
        except BaseException:
            for worker in busy:  # interrupted: no job of ours keeps running
                worker.process.kill()
                worker.stop(0)
            raise
        return results

    def _worker(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.is_alive():
                return worker
            worker.stop(0)  # it answered, then died: not a job's fault
        return _Worker(self._context)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
