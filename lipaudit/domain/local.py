"""The tightest interval-Jacobian bound domain mode reports: on ranges tightened by affine forms
(lipaudit.domain.affine), with the second deviation (lipaudit.domain.deviation), and the lower of
the whole network's figure and the best product over its segments (lipaudit.domain.segments).

It sits above those modules, each of which builds on lipaudit.domain.jacobian's engine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from ..intervals.interval import Interval
from ..ir import Graph
from .affine import affine_ranges
from .deviation import OpFactorDeviation
from .jacobian import JACOBIAN_ENTRY_LIMIT, JacobianBound, JacobianUnavailable, interval_jacobian_bound
from .propagate import intersected, value_ranges
from .segments import segmented_bound


def local_jacobian_bound(
    graph: Graph, bounds: Mapping[str, tuple], ranges: Mapping[str, Interval], segments: bool = True
):
    """(the tightest interval-Jacobian bound, None), or (None, why there is none); without
    ``segments``, the whole pass's alone (``with_segments`` adds them)."""
    try:
        return tightest_jacobian_bound(graph, bounds, ranges, segments=segments), None
    except JacobianUnavailable as why:
        return None, str(why)


def tightest_jacobian_bound(
    graph: Graph,
    bounds: Mapping[str, tuple],
    ranges: Mapping[str, Interval],
    entry_limit: int = JACOBIAN_ENTRY_LIMIT,
    segments: bool = True,
    image: Mapping[str, Interval] | None = None,
) -> JacobianBound:
    """The interval-Jacobian bound on ranges tightened by affine forms (lipaudit.domain.affine), and
    with ``segments`` the lower of it and the best product over the network's segments
    (lipaudit.domain.segments), each segment bounded the same way on the range of its input.
    ``image``: ranges of the graph's values that hold on a part of the box only (for a segment,
    the image of the network's box, which is all its figure is used on): they narrow the ranges,
    and no range is then narrowed by the centred form (lipaudit.domain.jacobian.Recorded), so the
    figure holds on that part. Raises JacobianUnavailable with the reason there is no whole-network
    figure."""
    start = time.perf_counter()
    at_centre = None
    try:
        affine = affine_ranges(graph, bounds, ranges, entry_limit)
        ranges, at_centre = intersected(ranges, affine.ranges), affine.at_centre
    except JacobianUnavailable:
        pass  # without affine forms: the whole pass below says what it meets, if anything
    if image is not None:
        ranges = intersected(ranges, {name: r for name, r in image.items() if name not in graph.inputs})
    centred = image is None
    whole = interval_jacobian_bound(graph, bounds, ranges, entry_limit, at_centre, OpFactorDeviation(), centred)
    whole = replace(whole, seconds=time.perf_counter() - start)
    return with_segments(graph, bounds, whole, entry_limit) if segments else whole


def with_segments(
    graph: Graph, bounds: Mapping[str, tuple], whole: JacobianBound, entry_limit: int = JACOBIAN_ENTRY_LIMIT
) -> JacobianBound:
    """The lower of the whole pass's figure ``whole`` and the best product over the network's
    segments (lipaudit.domain.segments), each bounded like the whole on the range of its input."""
    start = time.perf_counter()
    product = segmented_bound(graph, bounds, whole.ranges, segment_bounds(bounds, entry_limit), whole.upper_bound)
    seconds = whole.seconds + time.perf_counter() - start
    if product is None:
        return replace(whole, seconds=seconds)
    outputs = {name: min(value, product.upper_bound) for name, value in whole.outputs.items()}
    return replace(
        whole,
        upper_bound=product.upper_bound,
        outputs=outputs,
        seconds=seconds,
        segments=product.segments,
        chain=product.chain,
    )


def segment_bounds(bounds: Mapping[str, tuple], entry_limit: int = JACOBIAN_ENTRY_LIMIT):
    """How a segment of the network on the box ``bounds`` is bounded (lipaudit.domain.segments.Bound):
    on its own box, with the ranges ``known`` on the image of the box for its inner values."""

    def segment_bound(part: Graph, box: Mapping[str, tuple], known: Mapping[str, Interval] | None) -> JacobianBound:
        inside = {name: r for name, r in (known or {}).items() if name in part.values}
        if all(name in bounds for name in part.inputs):  # it starts at the input: its box is B itself
            return tightest_jacobian_bound(part, box, intersected(value_ranges(part, box), inside), entry_limit, False)
        return tightest_jacobian_bound(part, box, value_ranges(part, box), entry_limit, segments=False, image=inside)

    return segment_bound
