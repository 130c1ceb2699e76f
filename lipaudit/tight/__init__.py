"""Tighter certified network bounds: the slope-restricted recursion over the DAG (issue 11).

Independent of the IR: the caller describes the network with ``Network`` (network.py) and gets
``network_bound`` (recursion.py: min of the recursion and the product of certified node norms)
and ``residual_branches`` (branches.py: a bound on every residual branch g of x + g(x)).
On a bounded domain, ``neuron_slope_ranges`` (neuron_slopes.py) gives every activation entry its
own slope range, for the recursion and any other network bound.
"""

from .branches import BranchBound, residual_branches
from .network import Network, NetworkNode
from .neuron_slopes import neuron_slope_ranges
from .recursion import DEFAULT_WINDOW, TargetBound, TightBound, network_bound, product_bound

__all__ = [
    "BranchBound",
    "DEFAULT_WINDOW",
    "Network",
    "NetworkNode",
    "TightBound",
    "TargetBound",
    "network_bound",
    "neuron_slope_ranges",
    "product_bound",
    "residual_branches",
]
