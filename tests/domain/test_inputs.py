"""--input-range and [tool.lipaudit] input_range: what reads, and what is refused with a hint."""

from __future__ import annotations

import math

import pytest

from lipaudit.domain import describe_domain, domain_settings, parse_input_ranges
from lipaudit.errors import UsageError


def test_one_range_applies_to_every_input_and_a_named_one_overrides_it():
    assert parse_input_ranges("0:1", ["x", "mask"]) == {"x": (0.0, 1.0), "mask": (0.0, 1.0)}
    assert parse_input_ranges(["mask=-1:1", "0:255"], ["x", "mask"]) == {"x": (0.0, 255.0), "mask": (-1.0, 1.0)}
    assert parse_input_ranges(["input:0=-1e-3:2.5"], ["input:0"]) == {"input:0": (-1e-3, 2.5)}
    assert parse_input_ranges(None, ["x"]) == {}
    lo, hi = parse_input_ranges("0:inf", ["x"])["x"]
    assert lo == 0.0 and math.isinf(hi)


def test_the_config_may_give_a_table():
    assert parse_input_ranges({"x": "0:1", "y": [-2, 2]}, ["x", "y"]) == {"x": (0.0, 1.0), "y": (-2.0, 2.0)}


@pytest.mark.parametrize("spec", ["1:0", "0", "a:b", "0:1:2", "nan:1", "y=0:1"])
def test_bad_ranges_are_usage_errors_with_a_hint(spec):
    with pytest.raises(UsageError) as raised:
        parse_input_ranges(spec, ["x"])
    assert raised.value.hint


@pytest.mark.parametrize("specs", [["x=0:1", "x=0:5"], ["0:1", "-1:1"]])
def test_two_ranges_for_one_input_are_refused(specs):
    """The last one had silently won: a typo in a CI step went unnoticed."""
    with pytest.raises(UsageError, match="two input ranges"):
        parse_input_ranges(specs, ["x", "y"])


def test_the_report_settings_and_their_description():
    settings = domain_settings({"x": (0.0, 1.0), "t": (-1.0, 2.5)})
    assert settings == {"x": [0.0, 1.0], "t": [-1.0, 2.5]}
    assert describe_domain(settings) == "x ∈ [0, 1], t ∈ [-1, 2.5]"
    assert describe_domain(None) == ""


def test_prepare_domain_gives_the_ranges_and_the_settings(tmp_path):
    import torch

    from lipaudit.domain import prepare_domain
    from tests.domain._models import analysed, export

    graph = analysed(export(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()), (1, 3), tmp_path))
    assert prepare_domain(graph, None) is None and prepare_domain(graph, []) is None
    domain = prepare_domain(graph, ["0:1"])
    assert domain.bounds == {"x": (0.0, 1.0)} and domain.settings == {"x": [0.0, 1.0]}
    assert all(domain.ranges[name].is_finite() for name in graph.outputs)
