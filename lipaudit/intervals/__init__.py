"""Interval arithmetic beneath the ops: sound ranges of values on a box, and the scalar facts the
rules need about their functions (slope extremes, ranges of smooth activations, recurrent cells,
normalisations, softmax and attention on a box).

A leaf package: it imports nothing of lipaudit but the spectral norms.  The bounded-domain engine
that walks a graph with these (``lipaudit.domain``) sits above the ops (docs/design.md, "Bounded
domain").
"""

from .interval import Interval

__all__ = ["Interval"]
