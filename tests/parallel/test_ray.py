"""--ray on a local cluster (two CPUs, started once for this module): the serial run's reports,
weights put in the object store once, and dead tasks retried once, then reported."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.errors import UsageError
from lipaudit.parallel.jobs import ATTEMPTS, Job, TaskFailure
from lipaudit.parallel.ray_executor import RayExecutor
from lipaudit.pipeline import audit
from tests.parallel import _jobs
from tests.parallel._reference import MODELS, SAMPLES, comparable, serial, without_timings

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'lipaudit[ray]')")
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def executor():
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already running in this process")
    # The workers import this test package's job functions: they need the repository on their path.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    except Exception as error:  # no shared memory, no ports…: say why and skip
        pytest.skip(f"Ray cannot start a local cluster here: {type(error).__name__}: {error}")
    try:
        yield RayExecutor()
    finally:
        ray.shutdown()


@pytest.mark.parametrize("name", list(MODELS))
def test_layers_measured_by_ray_tasks_give_the_serial_report(name: str, executor: RayExecutor) -> None:
    assert comparable(audit(str(SAMPLES / name), executor=executor, **MODELS[name])) == serial(name)


def test_a_multi_model_check_on_ray_matches_the_serial_check(executor: RayExecutor, tmp_path: Path) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lipaudit.models."mlp.onnx"]\ninput_shape = ["x=1x16"]\n')
    names = ["mlp.onnx", "cnn_torchscript.pt", "unbounded.onnx"]
    args = ["check", *(str(SAMPLES / n) for n in names), "--config", str(config), "--color", "never"]
    serial_run = runner.invoke(app, [*args, "-o", f"json:{tmp_path}/serial/{{model}}.json"])
    ray_run = runner.invoke(app, [*args, "--ray", "-o", f"json:{tmp_path}/ray/{{model}}.json"])
    assert ray_run.exit_code == serial_run.exit_code == 3, ray_run.output
    assert ray_run.stdout == serial_run.stdout
    for name in ("mlp", "cnn_torchscript", "unbounded"):
        # {model} is the model's path relative to the working directory: find the file under each folder
        reports = [json.loads(next((tmp_path / run).rglob(f"{name}.json")).read_text()) for run in ("serial", "ray")]
        for report in reports:
            without_timings(report)
        assert reports[0] == reports[1]
    assert ray.is_initialized()  # the command joined our cluster, and left it running


def test_a_task_whose_worker_dies_once_is_retried(executor: RayExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    jobs = [Job(_jobs.echo, ("before",)), Job(_jobs.die_once, (str(marker), "retried")), Job(_jobs.echo, ("after",))]
    assert executor.run(jobs) == ["before", "retried", "after"]
    assert marker.exists()


def test_a_task_that_always_dies_is_reported_not_waited_for(executor: RayExecutor) -> None:
    outcomes = executor.run([Job(_jobs.die), Job(_jobs.echo, ("fine",)), Job(_jobs.fail, ("broken",))])
    assert outcomes[1] == "fine"
    assert isinstance(outcomes[0], TaskFailure) and f"tried {ATTEMPTS} times" in outcomes[0].reason
    assert isinstance(outcomes[2], TaskFailure) and "broken" in outcomes[2].reason


def test_weights_go_into_the_object_store_once_per_run(executor: RayExecutor, monkeypatch) -> None:
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(value.shape) or real_put(value, **kw))
    weights = {"m/w": np.ones((64, 64)), "m/b": np.ones(64)}
    jobs = [Job(_jobs.total, ("m/w", "m/b"), weights) for _ in range(5)]
    assert executor.run(jobs) == [64.0 * 64 + 64] * 5
    assert sorted(puts) == [(64,), (64, 64)]


def test_a_gpu_job_on_a_cluster_without_gpus_is_refused_not_left_pending(executor: RayExecutor) -> None:
    with pytest.raises(UsageError, match="no GPU"):
        executor.run([Job(_jobs.echo, (1,), gpu=True)])
