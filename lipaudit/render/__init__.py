"""Renderers turn a Report into what users read. They return text; only the CLI prints it."""

from .collection import ModelRun, render_collection
from .github import render_github
from .html import render_html
from .json_report import render_json
from .junit import render_junit
from .markdown import render_markdown
from .output import write_atomically
from .sarif import render_sarif
from .table import render_table

RENDERERS = {
    "table": render_table,
    "json": render_json,
    "markdown": render_markdown,
    "github": render_github,
    "html": render_html,
    "junit": render_junit,
    "sarif": render_sarif,
}
SUFFIX_FORMATS = {
    ".json": "json",
    ".md": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "table",
    ".xml": "junit",
    ".sarif": "sarif",
}

__all__ = [
    "RENDERERS",
    "SUFFIX_FORMATS",
    "ModelRun",
    "render_collection",
    "render_github",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_sarif",
    "render_table",
    "write_atomically",
]
