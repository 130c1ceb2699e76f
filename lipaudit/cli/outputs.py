"""Where `check -o` writes: one file per model (``{model}`` in the path) or one file for all.

``{model}`` is the model's path relative to the working directory, less its suffix, so that
``a/model.onnx`` and ``b/model.onnx`` write ``reports/a/model.json`` and ``reports/b/model.json``.
A path without ``{model}`` holds every model of the run in one document (JSON, JUnit, SARIF), or one
section per model (Markdown, GitHub annotations, tables); an HTML report holds one model. Every
path is planned before any model is audited, and names that would still collide are refused then.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..render import RENDERERS, SUFFIX_FORMATS

# What a typo of a format looks like before the colon (a drive letter, C:, is one letter).
_FORMAT_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]+")
# Formats whose one file can hold several models.
COLLECTIVE = {"json", "junit", "sarif", "markdown", "github", "table"}
STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


@dataclass
class OutputTarget:
    format: str
    path: str

    @property
    def per_model(self) -> bool:
        return "{model}" in self.path

    def path_for(self, model: Path) -> Path:
        return Path(self.path.replace("{model}", model_key(model))) if self.per_model else Path(self.path)

    @property
    def appends(self) -> bool:
        """GitHub's job summary collects what every step appends: add to it, never replace it."""
        summary = os.environ.get(STEP_SUMMARY, "")
        return bool(summary) and not self.per_model and os.path.abspath(self.path) == os.path.abspath(summary)


def model_key(model: Path) -> str:
    """The model's path relative to the working directory, without its suffix (``a/b/model``).

    A model outside the working directory keeps its whole path, less the root, so that it cannot
    lead the report out of the folder it is written to."""
    absolute = Path(os.path.abspath(model))
    try:
        relative = absolute.relative_to(os.path.abspath(Path.cwd()))
    except ValueError:
        relative = absolute.relative_to(absolute.anchor)
    return relative.with_suffix("").as_posix()


def parse_outputs(specs: list[str] | None, default_format: str) -> list[OutputTarget]:
    """``json:report.json``, or ``report.json`` (format from the suffix, else --format)."""
    targets = []
    for spec in specs or []:
        head, sep, tail = spec.partition(":")
        if sep and head in RENDERERS:
            targets.append(OutputTarget(head, tail))
        elif sep and not head:
            raise UsageError(f"-o {spec}: no report format before the colon", hint="for example -o json:report.json")
        elif sep and _FORMAT_WORD.fullmatch(head):
            formats = ", ".join(RENDERERS)
            raise UsageError(f"-o {spec}: unknown report format '{head}'", hint=f"choose one of: {formats}")
        else:
            targets.append(OutputTarget(SUFFIX_FORMATS.get(Path(spec).suffix.lower(), default_format), spec))
    return targets


def plan_outputs(targets: list[OutputTarget], models: list[Path]) -> None:
    """Refuse, before anything is written, a path that two writes would share."""
    several = len(models) > 1
    audited = {os.path.realpath(model): model for model in models}
    owners: dict[str, str] = {}
    for target in targets:
        if not target.path:
            raise UsageError(f"-o {target.format}: has no file name", hint="for example -o json:report.json")
        if several and not target.per_model and target.format not in COLLECTIVE:
            raise UsageError(
                f"-o {target.path}: an {target.format} report holds one model",
                hint=f"put {{model}} in the path, e.g. -o {target.format}:reports/{{model}}.{target.format}",
            )
        for model in models if target.per_model else models[:1]:
            path = os.path.realpath(target.path_for(model))
            who = f"{model}" if target.per_model else "every model"
            if path in audited:
                raise UsageError(
                    f"-o {target.path}: the report would overwrite the model {audited[path]}",
                    hint="write reports to another path, e.g. -o json:report.json",
                )
            if path in owners:
                raise UsageError(
                    f"-o {target.path}: {who} and {owners[path]} would both write {target.path_for(model)}",
                    hint="give each report its own path (with {model} for one file per model)",
                )
            owners[path] = who
