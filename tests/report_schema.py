"""Every JSON report the suite produces is checked here: parsed strictly (no Infinity or NaN, which
are not JSON) and validated against docs/report.schema.json. tests/conftest.py routes each report the
CLI or the API renders through ``check_report_text``; the CI-recipe tests call it on the files that
subprocesses write."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "docs" / "report.schema.json"
CHECKED = {"reports": 0}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: a report must write null (with a reason) instead")


def strict_loads(text: str) -> Any:
    """json.loads that refuses Infinity, -Infinity and NaN."""
    return json.loads(text, parse_constant=_reject_constant)


@functools.lru_cache(maxsize=1)
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_report_text(text: str) -> Any:
    """The parsed report (one model's or a multi-model document); AssertionError if it breaks the schema."""
    data = strict_loads(text)
    errors = sorted(validator().iter_errors(data), key=lambda error: list(error.absolute_path))
    if errors:
        where = "/".join(map(str, errors[0].absolute_path))
        raise AssertionError(f"the report breaks docs/report.schema.json at '{where}': {errors[0].message}")
    CHECKED["reports"] += 1
    return data


def check_report_file(path: Path) -> Any:
    return check_report_text(path.read_text(encoding="utf-8"))
