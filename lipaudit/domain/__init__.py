"""The bounded-domain mode: Lipschitz bounds of the network restricted to a box of inputs.

Sound value ranges (interval arithmetic, ``value_ranges``) make products, quotients, normalisations,
attention and recurrent cells Lipschitz on the box. The figures are local to the box and labelled so
(factor method "domain", report ``network.scope == "domain"``).

For the pipeline, after the rewrite passes and the verification (which may correct shapes):

    domain = prepare_domain(graph, input_range)          # None without --input-range
    ctx = RuleContext(graph, method=..., device=..., ranges=domain.ranges if domain else None)
    settings["domain"] = domain.settings                  # when domain is not None
    lower = box_lower_bound(graph, domain.bounds, ...)    # --lower-bound: pairs inside the box
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..intervals.interval import Interval
from .around import around_bounds, around_settings, check_around, check_radius, load_centres
from .inputs import describe_domain, domain_settings, parse_input_ranges

if TYPE_CHECKING:
    from ..ir import Graph


def value_ranges(graph: Graph, bounds: Mapping[str, tuple[float, float]], on_node=None) -> dict[str, Interval]:
    """Sound ranges of every value of ``graph`` when each input named in ``bounds`` lies in its box
    (an input not named is unbounded)."""
    from .propagate import value_ranges as propagate

    return propagate(graph, bounds, on_node)


input_ranges_context = value_ranges


@dataclass
class Domain:
    bounds: dict[str, tuple[Any, Any]]  # each bounded input's [lo, hi]: numbers, or arrays of its shape
    ranges: dict[str, Interval]  # every value's range on that box: RuleContext.ranges
    settings: dict[str, list[float]]  # the report's settings.domain
    around: dict[str, Any] | None = None  # the report's settings.around (--around): radius, centres' hashes


def prepare_domain(
    graph: Graph, input_range: Any, on_node=None, around: Any = None, radius: Any = None
) -> Domain | None:
    """The domain the user asked for (``--input-range`` strings, or the config's value; ``--around``
    centres with their ``radius``), with the value ranges on it; None when neither is given. Raises
    UsageError for a malformed range or centre, and for an input given both."""
    names = list(graph.inputs)
    bounds: dict[str, tuple[Any, Any]] = dict(parse_input_ranges(input_range, names))
    check_around(around, radius)
    centres = load_centres(around, names, {name: _known_shape(graph, name) for name in names})
    both = [c.name for c in centres if c.name in bounds]
    if both:
        raise UsageError(
            f"input '{both[0]}' has both --input-range and --around: one domain per input",
            hint="drop one of them (--around NAME=FILE.npy --radius R is the box of radius R around the input)",
        )
    settings_around = None
    if centres:
        size = check_radius(radius)
        bounds.update(around_bounds(centres, size))
        settings_around = around_settings(centres, size)
    if not bounds:
        return None
    return Domain(bounds, value_ranges(graph, bounds, on_node), domain_settings(bounds), settings_around)


def _known_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    shape = graph.shape(name)
    if shape is None or any(d is None or not isinstance(d, int) or d < 0 for d in shape):
        return None
    return tuple(shape)


def box_lower_bound(graph: Graph, bounds: Mapping[str, tuple[float, float]], **options):
    """An empirical lower bound from pairs of inputs inside the box (see lipaudit.domain.lower)."""
    from .lower import box_lower_bound as search

    return search(graph, bounds, **options)


__all__ = [
    "Domain",
    "Interval",
    "box_lower_bound",
    "describe_domain",
    "domain_settings",
    "input_ranges_context",
    "parse_input_ranges",
    "prepare_domain",
    "value_ranges",
]
