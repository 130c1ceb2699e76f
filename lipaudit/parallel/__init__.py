"""Scaling out: layers and models as independent jobs, run here, in worker processes, or on Ray.

* ``jobs``: the Job / Executor contract (outcomes in order, one retry, TaskFailure) and the
  in-process executor;
* ``local``: worker processes on this machine (--workers N);
* ``ray_executor``: Ray tasks (--ray), Ray imported only there;
* ``layers``: one model's layer factors as jobs, handed to compose.

Whole models as jobs (a multi-model check) are ``lipaudit.model_jobs``, above the pipeline they
run; memory-mapped weights are ``lipaudit.load.mapped``, which the loader reads. This module
imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .jobs import Executor

LOCAL_RAY = "local"  # the --ray setting that starts a cluster for the run


def open_executor(workers: int | None = None, ray: str | None = None) -> Executor | None:
    """The executor the settings ask for: Ray when ``ray`` is set ('local', 'auto' or an address;
    ``workers`` then sizes a local cluster), else ``workers`` processes here (1: this process,
    single-threaded), else None (the plain serial run)."""
    if ray:
        from .ray_executor import RayExecutor

        return RayExecutor(None if ray == LOCAL_RAY else ray, workers=workers)
    if workers is None:
        return None
    if workers == 1:
        from .jobs import InlineExecutor

        return InlineExecutor()
    from .local import ProcessExecutor

    return ProcessExecutor(workers)
