"""Renderers turn a Report into what users read. They return text; only the CLI prints it."""

from .json_report import render_json
from .output import write_atomically
from .table import render_table

RENDERERS = {"table": render_table, "json": render_json}

__all__ = ["RENDERERS", "render_json", "render_table", "write_atomically"]
