"""The bounded-domain mode: Lipschitz bounds of the network restricted to a box of inputs.

Sound value ranges (interval arithmetic, ``value_ranges``) make products, quotients, normalisations
and attention Lipschitz on the box. The figures are local to the box and labelled so.

The pipeline calls ``input_ranges_context`` (or ``value_ranges``) after the rewrite passes and passes the
result to ``RuleContext(graph, ranges=...)``; ``parse_input_ranges`` reads the ``--input-range`` specs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from .inputs import describe_domain, domain_settings, parse_input_ranges
from .interval import Interval

if TYPE_CHECKING:
    from ..ir import Graph


def value_ranges(graph: "Graph", bounds: Mapping[str, tuple[float, float]], on_node=None) -> dict[str, Interval]:
    """Sound ranges of every value of ``graph`` when each input named in ``bounds`` lies in its box."""
    from .propagate import value_ranges as propagate

    return propagate(graph, bounds, on_node)


input_ranges_context = value_ranges

__all__ = ["Interval", "describe_domain", "domain_settings", "input_ranges_context", "parse_input_ranges",
           "value_ranges"]
