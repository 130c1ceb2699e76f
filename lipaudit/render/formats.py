"""The renderers of one report, by format name, and the format a file suffix stands for."""

from .github import render_github
from .html import render_html
from .json_report import render_json
from .junit import render_junit
from .markdown import render_markdown
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
