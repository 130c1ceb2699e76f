"""Renderers turn a Report into what users read. They return text; only the CLI prints it."""

from .github import render_github
from .html import render_html
from .json_report import render_json
from .markdown import render_markdown
from .output import write_atomically
from .table import render_table

RENDERERS = {
    "table": render_table,
    "json": render_json,
    "markdown": render_markdown,
    "github": render_github,
    "html": render_html,
}
SUFFIX_FORMATS = {".json": "json", ".md": "markdown", ".html": "html", ".htm": "html", ".txt": "table"}

__all__ = [
    "RENDERERS",
    "SUFFIX_FORMATS",
    "render_github",
    "render_html",
    "render_json",
    "render_markdown",
    "render_table",
    "write_atomically",
]
