"""The CI recipes shipped with lipaudit, run as CI runs them: the steps of action.yml, the hook of
.pre-commit-hooks.yaml and the job of examples/gitlab-ci.yml, each in bash, in a project whose models
sit in nested folders (two of them named model.onnx). Each test checks the exit code, the annotations
on stdout, the job summary and the report files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xmlschema
import yaml

from tests.report_schema import check_report_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
SCHEMAS = ROOT / "tests" / "schemas"
# models/a/model.onnx: bound 99.8 (over 50); models/b/model.onnx: 11.6 (under); models/b/deep/unbounded.onnx: none.
LAYOUT = {
    "models/a/model.onnx": "cnn.onnx",
    "models/b/model.onnx": "mlp.onnx",
    "models/b/deep/unbounded.onnx": "unbounded.onnx",
}
EXPRESSION = re.compile(r"\$\{\{\s*([\w.-]+)\s*\}\}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for target, sample in LAYOUT.items():
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / sample, tmp_path / target)
    (tmp_path / "pyproject.toml").write_text('[tool.lipaudit.models."models/b/model.onnx"]\ninput_shape = ["x=1x16"]\n')
    return tmp_path


def shell_env(**extra: str) -> dict[str, str]:
    """The environment of a CI shell: this interpreter's `lipaudit` first on PATH, this checkout importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_action(project: Path, inputs: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the composite action's steps as the runner does: `${{ … }}` filled in, each step in
    `bash --noprofile --norc -eo pipefail`, stopping at the first that fails."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    assert set(inputs) <= set(values), f"unknown inputs {set(inputs) - set(values)}"
    values.update(inputs)
    context = {f"inputs.{name}": value for name, value in values.items()} | {"github.action_path": str(ROOT)}

    def fill(text: str) -> str:
        return EXPRESSION.sub(lambda match: context[match.group(1)], text)

    result = None
    for step in action["runs"]["steps"]:
        condition = step.get("if")
        if condition:
            name, expected = re.fullmatch(r"inputs\.([\w-]+) == '(.*)'", condition).groups()
            if values[name] != expected:
                continue
        assert step["shell"] == "bash"
        step_env = {key: fill(str(value)) for key, value in step.get("env", {}).items()}
        command = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", fill(step["run"])]
        result = subprocess.run(command, cwd=project, env=env | step_env, capture_output=True, text=True, timeout=300)
        if result.returncode:
            break
    assert result is not None
    return result


def test_the_action_checks_every_model_in_nested_folders(project: Path) -> None:
    summary, outputs = project / "summary.md", project / "outputs.txt"
    summary.write_text("## an earlier step's summary\n")
    env = shell_env(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs))
    result = run_action(project, {"models": "models/**/*.onnx", "threshold": "50", "install": "false"}, env)
    assert result.returncode == 3, result.stderr  # the worst: the unbounded model
    # Annotations: each model's verdict at its own file, whatever -o wrote.
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert any(a.startswith("::error file=models/a/model.onnx,") and "FAILED" in a for a in annotations)
    assert any(a.startswith("::notice file=models/b/model.onnx,") and "PASSED" in a for a in annotations)
    unbounded = [a for a in annotations if a.startswith("::error file=models/b/deep/unbounded.onnx,")]
    assert len(unbounded) == 3  # its two ops, then its verdict
    # The job summary: what was there, then one section per model, appended.
    text = summary.read_text()
    assert text.startswith("## an earlier step's summary\n")
    assert [line for line in text.splitlines() if line.startswith("### lipaudit")] == [
        f"### lipaudit · `{path}`"
        for path in sorted(LAYOUT)  # in the order bash expanded the pattern
    ]
    # Reports: one document for every model, one per model under its own path, and the step's outputs.
    everything = check_report_file(project / "lipaudit-reports" / "lipaudit-reports.json")
    assert [(m["path"], m["exit_code"]) for m in everything["models"]] == [
        ("models/a/model.onnx", 1),
        ("models/b/deep/unbounded.onnx", 3),
        ("models/b/model.onnx", 0),
    ]
    for path in LAYOUT:
        stem = path.removesuffix(".onnx")
        assert check_report_file(project / "lipaudit-reports" / f"{stem}.json")["model"]["path"] == path
        assert (project / "lipaudit-reports" / f"{stem}.html").stat().st_size > 0
    assert "exit-code=3" in outputs.read_text().splitlines()


def test_the_action_installs_from_its_own_checkout_by_default() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert set(action["inputs"]) >= {"models", "threshold", "baseline"}
    install = action["runs"]["steps"][0]
    assert install["if"] == "inputs.install == 'true'" and action["inputs"]["install"]["default"] == "true"
    assert "${{ github.action_path }}" in install["env"]["LIPAUDIT_ACTION_PATH"]


def test_the_pre_commit_hook_checks_the_changed_models(project: Path) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    changed = [path for path in [*LAYOUT, "README.md", "models/b/weights.bin"] if re.search(hook["files"], path)]
    assert changed == list(LAYOUT)
    # pre-commit runs: entry, then the args of the user's config, then the file names.
    command = [*shlex.split(hook["entry"]), "--max-lipschitz", "50"]
    run = subprocess.run(
        ["bash", "-c", 'exec "$@"', "hook", *command, *changed],
        cwd=project,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, run.stderr
    lines = run.stdout.splitlines()
    expected = [f"{name}: {verdict}" for name, verdict in zip(LAYOUT, ("FAILED", "PASSED"))]  # named verdicts
    assert len(lines) == 3 and [line.split("  ")[0] for line in lines[:2]] == expected, run.stdout


def test_the_gitlab_job_writes_a_junit_report(project: Path) -> None:
    job = yaml.safe_load((ROOT / "examples" / "gitlab-ci.yml").read_text())["lipaudit"]
    variables = {key: str(value) for key, value in job["variables"].items()}
    # GitLab runs the script's lines in one shell, stopping at the first that fails.
    script = "\n".join(job["script"])
    run = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=project,
        env=shell_env(**variables),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, run.stderr
    junit = project / job["artifacts"]["reports"]["junit"]
    schema = xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd"))
    schema.validate(str(junit))
    cases = schema.to_dict(str(junit))["testsuite"][0]["testcase"]
    assert [case["@name"] for case in cases] == sorted(LAYOUT)
    assert {case["@name"]: "failure" in case for case in cases} == {
        "models/a/model.onnx": True,
        "models/b/deep/unbounded.onnx": True,
        "models/b/model.onnx": False,
    }
    check_report_file(project / "lipaudit-reports" / "lipaudit-reports.json")
