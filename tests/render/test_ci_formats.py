"""Several models in one check: JUnit and SARIF valid against their published schemas (vendored in
tests/schemas), one JSON document for every model, GitHub annotations whatever -o says, {model} as
the relative path, and collisions refused before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import jsonschema
import pytest
import xmlschema
from typer.testing import CliRunner

from lipaudit.cli.app import app
from tests.report_schema import check_report_text, strict_loads

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cnn (bound 99.8) in a/model.onnx, mlp (11.6) in b/model.onnx, unbounded in b/c/unbounded.onnx."""
    for target, sample in (
        ("a/model.onnx", "cnn.onnx"),
        ("b/model.onnx", "mlp.onnx"),
        ("b/c/unb.onnx", "unbounded.onnx"),
    ):
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "sample_models" / sample, tmp_path / target)
    (tmp_path / "pyproject.toml").write_text('[tool.lipaudit.models."b/model.onnx"]\ninput_shape = ["x=1x16"]\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


MODELS = ["a/model.onnx", "b/model.onnx", "b/c/unb.onnx"]


def check(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["check", *args], env={"NO_COLOR": "1", **(env or {})})


def test_junit_and_sarif_validate_against_their_schemas(project: Path) -> None:
    result = check(*MODELS, "--max-lipschitz", "50", "-o", "junit:out/junit.xml", "-o", "sarif:out/x", "-o", "o.sarif")
    assert result.exit_code == 3, result.output
    junit = xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd"))
    junit.validate("out/junit.xml")
    suite = junit.to_dict("out/junit.xml")["testsuite"][0]
    assert (suite["@tests"], suite["@failures"], suite["@errors"]) == (3, 2, 0)
    failed = {case["@name"]: case.get("failure") for case in suite["testcase"]}
    assert failed["b/model.onnx"] is None
    assert failed["a/model.onnx"]["@type"] == "threshold" and "99.8045 > 50" in failed["a/model.onnx"]["@message"]
    assert failed["b/c/unb.onnx"]["@type"] == "incomplete"

    sarif_schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    for path in ("out/x", "o.sarif"):  # -o sarif:x writes SARIF, whatever the name; .sarif is SARIF too
        log = strict_loads(Path(path).read_text())
        jsonschema.Draft4Validator(sarif_schema).validate(log)
        results = log["runs"][0]["results"]
        located = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
        assert located == set(MODELS)
        errors = {
            (r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
            for r in results
            if r["level"] == "error"
        }
        assert ("lipaudit/bound", "a/model.onnx") in errors and ("lipaudit/unbounded-op", "b/c/unb.onnx") in errors
        assert not any(uri == "b/model.onnx" for _, uri in errors)


def test_junit_and_sarif_on_stdout_with_a_model_that_cannot_be_read(project: Path) -> None:
    Path("broken.onnx").write_bytes(b"\x08\x07garbage")
    junit = check("b/model.onnx", "broken.onnx", "-f", "junit")
    assert junit.exit_code == 2
    schema = xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd"))
    schema.validate(junit.stdout.encode())
    cases = schema.to_dict(junit.stdout.encode())["testsuite"][0]["testcase"]
    assert "error" in cases[1] and "broken.onnx" == cases[1]["@name"]
    sarif = check("b/model.onnx", "broken.onnx", "-f", "sarif")
    log = strict_loads(sarif.stdout)
    jsonschema.Draft4Validator(json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())).validate(log)
    assert any(r["ruleId"] == "lipaudit/error" for r in log["runs"][0]["results"])


def test_json_with_several_models_is_one_document(project: Path) -> None:
    result = check(*MODELS, "-f", "json")
    assert result.exit_code == 3
    document = check_report_text(result.stdout)  # stdout is the document alone: the summary went to stderr
    assert document["kind"] == "lipaudit-reports"
    assert [(m["path"], m["exit_code"]) for m in document["models"]] == [(MODELS[0], 0), (MODELS[1], 0), (MODELS[2], 3)]
    assert document["models"][1]["report"]["network"]["upper_bound"] == pytest.approx(8.1584, rel=1e-4)
    assert "Upper bound" in result.stderr


def test_github_annotations_go_to_stdout_whatever_o_says(project: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("before\n")
    result = check(
        *MODELS,
        "--max-lipschitz", "50",
        "-f", "github",
        "-o", f"markdown:{summary}",
        "-o", "json:reports/{model}.json",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert result.exit_code == 3
    annotations = result.stdout.splitlines()
    assert all(line.startswith("::") for line in annotations), result.stdout
    for model in MODELS:
        assert any(f"file={model}," in line for line in annotations)
    text = summary.read_text()
    assert text.startswith("before\n") and text.count("### lipaudit · ") == 3
    assert sorted(p.relative_to(project / "reports").as_posix() for p in (project / "reports").rglob("*.json")) == [
        "a/model.json",
        "b/c/unb.json",
        "b/model.json",
    ]


def test_a_layer_over_its_limit_gets_its_own_annotation(project: Path) -> None:
    Path("pyproject.toml").write_text('[tool.lipaudit]\ninput_shape = "x=1x16"\nmax_layer_factor = { "fc2" = 2.0 }\n')
    result = check("b/model.onnx", "-f", "github")
    assert result.exit_code == 1
    layer = [line for line in result.stdout.splitlines() if "layer fc2" in line]
    assert len(layer) == 1 and layer[0].startswith("::error file=b/model.onnx,")


def test_colliding_names_are_refused_before_anything_is_written(project: Path) -> None:
    shutil.copy("a/model.onnx", "a/model.pt")
    result = check("a/model.onnx", "a/model.pt", "-o", "json:out/{model}.json")
    assert result.exit_code == 2 and "would both write" in result.stderr
    assert not Path("out").exists()
    html = check("a/model.onnx", "b/model.onnx", "-o", "html:report.html")
    assert html.exit_code == 2 and "{model}" in html.stderr and not Path("report.html").exists()


def test_reports_are_written_with_the_ordinary_mode(project: Path) -> None:
    old = os.umask(0o022)
    try:
        assert check("a/model.onnx", "-o", "r.json", "-o", "r.html").exit_code == 0
        assert stat.S_IMODE(Path("r.json").stat().st_mode) == 0o644
        os.umask(0o027)
        assert check("a/model.onnx", "-o", "r.json").exit_code == 0
        assert stat.S_IMODE(Path("r.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_multi_model_baseline_is_matched_by_model_path(project: Path) -> None:
    assert check("a/model.onnx", "b/model.onnx", "-o", "base.json").exit_code == 0
    again = check("b/model.onnx", "a/model.onnx", "--baseline", "base.json")
    assert again.exit_code == 0, again.output
    assert again.stdout.count("OK  within the allowed increase of 0.00%") == 2
    assert "b/model.onnx compared with the baseline:" in again.stdout and "a/model.onnx compared" in again.stdout
    assert "different model files" not in again.output
    Path("one.json").write_text(check("a/model.onnx", "-f", "json").stdout)
    partial = check("a/model.onnx", "b/model.onnx", "--baseline", "one.json")
    assert partial.exit_code == 0
    assert "no baseline for b/model.onnx in one.json" in partial.stdout and "OK  within" in partial.stdout


def test_every_format_says_how_the_figure_was_reached(project: Path) -> None:
    """The method against the product (mlp: LipSDP-Neuron below the product) in GitHub, SARIF and JUnit."""
    github = check("b/model.onnx", "-f", "github").stdout
    assert "(LipSDP-Neuron, product 20.9583)" in github
    sarif = strict_loads(check("b/model.onnx", "-f", "sarif").stdout)
    bound = sarif["runs"][0]["results"][0]
    assert bound["properties"]["method"] == "LipSDP-Neuron" and bound["properties"]["productBound"] > 20
    assert "product 20.9583" in bound["message"]["text"]
    junit = xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd")).to_dict(
        check("a/model.onnx", "b/model.onnx", "-f", "junit").stdout
    )
    properties = {p["@name"]: p["@value"] for p in junit["testsuite"][0]["properties"]["property"]}
    assert properties["b/model.onnx"] == "LipSDP-Neuron, product 20.9583"
    assert "residual branches: 1, 0 invertible" in properties["a/model.onnx"]
