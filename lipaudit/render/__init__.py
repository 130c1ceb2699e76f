"""Renderers turn a Report into what users read. They return text; only the CLI prints it."""

from .collection import render_collection
from .formats import RENDERERS, SUFFIX_FORMATS
from .github import render_github
from .html import render_html
from .json_report import render_json
from .junit import render_junit
from .markdown import render_markdown
from .output import write_atomically
from .runs import ModelRun
from .sarif import render_sarif
from .table import render_table

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
