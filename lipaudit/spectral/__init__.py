"""Numerical kernels: operator norms of dense maps, convolutions and pooling, device choice.

Pure numerics on numpy arrays and torch tensors; nothing here knows about graphs.
"""

from .conv import avgpool_norm, conv_norm
from .dense import dense_norm, gram_iteration
from .device import resolve_device
from .power import power_iteration
from .result import NormResult

__all__ = [
    "NormResult",
    "avgpool_norm",
    "conv_norm",
    "dense_norm",
    "gram_iteration",
    "power_iteration",
    "resolve_device",
]
