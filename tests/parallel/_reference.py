"""Serial reports of the sample models, computed once per test session, to compare parallel runs with."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from lipaudit.pipeline import audit
from lipaudit.report import Report

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
# The sample models, with the settings each needs.
MODELS = {
    "cnn.onnx": {},
    "mlp.onnx": {"input_shape": ["x=1x16"]},
    "cnn_torchscript.pt": {},
    "unbounded.onnx": {},
}


def without_timings(data: dict) -> dict:
    """A report's JSON without its timings, the run's and each layer's: the one part that may differ."""
    data.pop("timings")
    for layer in data["layers"]:
        layer.pop("seconds", None)
    return data


def comparable(report: Report) -> str:
    """The report as JSON, without its timings."""
    return json.dumps(without_timings(report.to_dict()), sort_keys=True, indent=1)


@functools.cache
def serial(name: str) -> str:
    return comparable(audit(str(SAMPLES / name), **MODELS[name]))


def serial_report(name: str) -> Report:
    return Report.from_dict(json.loads(serial(name)))
