"""Typed linear maps: what the recursion knows of a linear op (docs/design.md, "Linear maps").

A leaf package: each map is a small dataclass with ``out_shape`` (from its input shapes),
``forward`` (on a batch: every input carries a leading batch axis in front of its own shape) and,
for the unary ones, ``norm`` (a certified ℓ2 operator norm).  Ops describe themselves with these
maps (``Op.linear_part``); the recursion (``lipaudit.tight``) composes them.  Nothing here knows
about graphs or ops.
"""

from .base import SUM_MARGIN, Barrier, Linear
from .convolution import AvgPool, Conv
from .dense import AxisSum, Concat, Dense, LeftDense, Mean, Scale, Sum
from .moves import Pad, Permutation, Pick, Reshape, Slice

__all__ = [
    "SUM_MARGIN",
    "AvgPool",
    "AxisSum",
    "Barrier",
    "Concat",
    "Conv",
    "Dense",
    "LeftDense",
    "Linear",
    "Mean",
    "Pad",
    "Permutation",
    "Pick",
    "Reshape",
    "Scale",
    "Slice",
    "Sum",
]
