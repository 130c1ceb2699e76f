"""Jobs as Ray tasks (--ray [ADDRESS]): on a cluster, or on a local one started for the run.

Ray is an optional dependency, imported only here. What each job shares (its weights) goes into
Ray's object store once per run and key (``ray.put``), however many tasks read it, and is dropped
once the last of them is done; at most a window of tasks is in flight, so the store holds a few
layers at a time, not the model. A weight left on disk travels as its file slice when every node
of the cluster is this machine (the task maps the bytes itself), and through the store otherwise.

Ray retries a task whose worker died (lost, killed for memory) or that raised, once
(``max_retries``, ``retry_exceptions``); after that the job's outcome is a TaskFailure.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..load.mapped import ExternalSlice
from .jobs import ATTEMPTS, KERNEL_THREADS, DoneFn, Executor, Job, TaskFailure, first_line

INSTALL_HINT = "install it with: pip install 'lipaudit[ray]'"
TASKS_PER_CPU_IN_FLIGHT = 2


def _call(function, args: tuple, keys: tuple[str, ...], *values: Any) -> Any:
    """A job inside a Ray worker: the shared values arrive as task arguments (fetched by Ray)."""
    import torch

    torch.set_num_threads(KERNEL_THREADS)
    return function(dict(zip(keys, values)), *args)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs the 'ray' package, which is not installed", hint=INSTALL_HINT) from None
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None) -> None:
        """``address``: 'auto' (the cluster running on this machine), 'ray://HOST:PORT' or 'HOST:PORT';
        None starts a local cluster with ``workers`` CPUs (default: all of them)."""
        ray = import_ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            try:
                if address:
                    ray.init(address=address, **options)
                else:
                    ray.init(num_cpus=workers, **options)
            except Exception as error:  # ConnectionError, RuntimeError, ValueError… from Ray
                where = f"the Ray cluster at '{address}'" if address else "a local Ray cluster"
                raise UsageError(
                    f"cannot start or reach {where}: {first_line(error)}",
                    hint="start one with `ray start --head`, or leave out the address for a local one"
                    if address
                    else "check that Ray works here: python -c 'import ray; ray.init()'",
                ) from None
            self._started = True
        resources = ray.cluster_resources()
        self.workers = max(1, int(resources.get("CPU", 1)))
        self.gpus = int(resources.get("GPU", 0))
        self._remote = ray.remote(_call)
        self._local_files = self._all_nodes_here()

    def _all_nodes_here(self) -> bool:
        """Whether every node of the cluster runs on this machine (so it can read our files)."""
        here = {"127.0.0.1", "localhost", socket.gethostname()}
        try:
            here.add(self._ray.util.get_node_ip_address())
        except Exception:  # an old Ray without the helper: judge by the nodes alone
            pass
        nodes = [node for node in self._ray.nodes() if node.get("Alive")]
        return bool(nodes) and all(node.get("NodeManagerAddress") in here for node in nodes)

    def _value(self, value: Any) -> Any:
        if isinstance(value, ExternalSlice):
            if self._local_files:
                return value  # a few bytes: the task maps the file itself
            return self._ray.put(value.open())
        return self._ray.put(value)

    def run(self, jobs: Sequence[Job], on_done: DoneFn | None = None) -> list[Any]:
        ray = self._ray
        if any(job.gpu for job in jobs) and self.gpus == 0:
            raise UsageError(
                "the Ray cluster has no GPU for --device cuda", hint="use --device cpu, or a cluster with GPU nodes"
            )
        results: list[Any] = [None] * len(jobs)
        readers = Counter(key for job in jobs for key in job.shared)
        stored: dict[str, Any] = {}
        in_flight: dict[Any, int] = {}
        window = TASKS_PER_CPU_IN_FLIGHT * self.workers
        next_job = finished = 0
        try:
            while next_job < len(jobs) or in_flight:
                while next_job < len(jobs) and len(in_flight) < window:
                    job = jobs[next_job]
                    keys = tuple(job.shared)
                    for key in keys:
                        if key not in stored:
                            stored[key] = self._value(job.shared[key])
                    task = self._remote.options(
                        num_cpus=1, num_gpus=1 if job.gpu else 0, max_retries=ATTEMPTS - 1, retry_exceptions=True
                    )
                    in_flight[task.remote(job.function, job.args, keys, *(stored[k] for k in keys))] = next_job
                    next_job += 1
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    index = in_flight.pop(ref)
                    try:
                        results[index] = ray.get(ref)
                    except ray.exceptions.RayError as error:
                        cause = getattr(error, "cause", None)
                        reason = first_line(cause) if isinstance(cause, BaseException) else first_line(error)
                        results[index] = TaskFailure(f"{reason} (tried {ATTEMPTS} times)")
                    for key in jobs[index].shared:
                        readers[key] -= 1
                        if readers[key] == 0:
                            stored.pop(key, None)  # the last reader is done: the store may free it
                    finished += 1
                    if on_done is not None:
                        on_done(finished, len(jobs), jobs[index])
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        return results

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
