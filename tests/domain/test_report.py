"""The report says plainly when its figure is local to the input box, and old reports still read."""

from __future__ import annotations

import json

import torch

from lipaudit.compose import compose
from lipaudit.domain import domain_settings, value_ranges
from lipaudit.load import load_model
from lipaudit.ops import RuleContext
from lipaudit.passes import run_passes
from lipaudit.render import render_github, render_html, render_markdown, render_table
from lipaudit.render.summary import render_summary
from lipaudit.report import Report, build_report, skipped
from tests.domain._models import SqueezeExcitation, export


def _report(path, box):
    loaded = load_model(path)
    graph = run_passes(loaded.graph)
    ranges = value_ranges(graph, box) if box else None
    network = compose(graph, RuleContext(graph, method="gram", ranges=ranges))
    settings = {"norm": "l2", "method": "gram", "device": "cpu"}
    if box:
        settings["domain"] = domain_settings(box)
    return build_report(
        loaded=loaded,
        graph=graph,
        network=network,
        tight=None,
        lower=None,
        settings=settings,
        verification=skipped("test"),
        max_lipschitz=None,
        timings={},
        notices=[],
    )


def test_a_domain_report_is_labelled_local_everywhere(tmp_path):
    torch.manual_seed(0)
    path = export(SqueezeExcitation(), (1, 3, 5, 5), tmp_path)
    report = _report(path, {"x": (0.0, 1.0)})
    assert report.network.scope == "domain" and report.upper_bound is not None
    data = json.loads(report.to_json())
    assert data["network"]["scope"] == "domain"
    assert data["settings"]["domain"] == {"x": [0.0, 1.0]}
    assert Report.from_dict(data).network.scope == "domain"
    local = "LOCAL bound on x ∈ [0, 1]"
    for text in (render_table(report, width=200), render_markdown(report), render_html(report), render_github(report)):
        assert local in text
    assert "(local)" in render_summary([(str(path), report, "")], width=200)
    assert any(
        layer.method == "domain" and any(n.startswith("on the input domain") for n in layer.notes)
        for layer in report.layers
    )


def test_a_global_report_says_nothing_of_a_domain_and_old_reports_read_as_global(tmp_path):
    torch.manual_seed(0)
    path = export(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), (1, 3), tmp_path)
    report = _report(path, None)
    assert report.network.scope == "global"
    assert "LOCAL" not in render_table(report, width=200) and "LOCAL" not in render_html(report)
    data = report.to_dict()
    del data["network"]["scope"]  # a report written before the field existed
    assert Report.from_dict(data).network.scope == "global"


def test_a_box_that_tightens_nothing_gives_a_global_figure_and_says_so(tmp_path):
    torch.manual_seed(0)
    path = export(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()), (1, 3), tmp_path)
    report = _report(path, {"x": (-100.0, 100.0)})
    assert report.network.scope == "global"
    assert any("tightened no factor" in notice for notice in report.notices)
