"""The executor contract, for the in-process executor and local worker processes: outcomes in job
order, a job whose worker dies retried once on a fresh worker, then a TaskFailure saying why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipaudit.parallel import open_executor
from lipaudit.parallel.jobs import ATTEMPTS, InlineExecutor, Job, TaskFailure
from lipaudit.parallel.local import ProcessExecutor
from tests.parallel import _jobs


@pytest.fixture(scope="module")
def pool():
    executor = ProcessExecutor(2)
    yield executor
    executor.close()


def test_outcomes_come_back_in_job_order_whatever_order_they_finish_in(pool: ProcessExecutor) -> None:
    delays = [0.3, 0.0, 0.2, 0.0, 0.1]
    progress = []
    jobs = [Job(_jobs.echo, (i, delay), label=f"job {i}") for i, delay in enumerate(delays)]
    outcomes = pool.run(jobs, lambda done, total, job: progress.append((done, total)))
    assert outcomes == list(range(len(delays)))
    assert progress == [(k, len(delays)) for k in range(1, len(delays) + 1)]


def test_shared_inputs_reach_the_job(pool: ProcessExecutor) -> None:
    weights = {"m/a": np.ones((3, 4)), "m/b": np.full(5, 2.0)}
    assert pool.run([Job(_jobs.total, ("m/a", "m/b"), weights)]) == [22.0]


def test_a_worker_killed_once_is_replaced_and_the_job_retried(pool: ProcessExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    jobs = [Job(_jobs.echo, ("before",)), Job(_jobs.die_once, (str(marker), "retried")), Job(_jobs.echo, ("after",))]
    assert pool.run(jobs) == ["before", "retried", "after"]
    assert marker.exists()


def test_a_job_that_always_kills_its_worker_is_a_failure_and_the_others_still_finish(pool: ProcessExecutor) -> None:
    outcomes = pool.run([Job(_jobs.echo, (1,)), Job(_jobs.die), Job(_jobs.echo, (3, 0.05)), Job(_jobs.echo, (4,))])
    assert outcomes[0] == 1 and outcomes[2:] == [3, 4]
    assert isinstance(outcomes[1], TaskFailure)
    assert "killed by SIGKILL" in outcomes[1].reason and f"tried {ATTEMPTS} times" in outcomes[1].reason
    # The pool still works afterwards.
    assert pool.run([Job(_jobs.echo, ("still",))]) == ["still"]


def test_a_job_that_raises_is_a_failure_with_its_message(pool: ProcessExecutor) -> None:
    [outcome] = pool.run([Job(_jobs.fail, ("no luck",))])
    assert isinstance(outcome, TaskFailure) and "RuntimeError: no luck" in outcome.reason


def test_the_inline_executor_keeps_the_same_contract() -> None:
    executor = InlineExecutor()
    outcomes = executor.run([Job(_jobs.echo, ("a",)), Job(_jobs.fail, ("bad",)), Job(_jobs.echo, ("c",))])
    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], TaskFailure) and "RuntimeError: bad" in outcomes[1].reason


def test_the_settings_pick_the_executor() -> None:
    assert open_executor(None, None) is None
    assert isinstance(open_executor(1, None), InlineExecutor)
    with open_executor(3, "") as executor:
        assert isinstance(executor, ProcessExecutor) and executor.workers == 3
