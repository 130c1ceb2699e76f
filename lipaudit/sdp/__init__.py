"""A certified semidefinite network bound (LipSDP-Neuron, Fazlyab et al. 2019), docs/design.md ('Semidefinite bound').

``sdp_bound(network, warm_start=..., budget=...)`` on an ``SdpNetwork`` (network.py: neuron groups
with per-neuron slope ranges, joined by dense linear maps and skip connections) returns an
``SdpResult`` whose figure is reported only with a float64 proof of the matrix inequality.
"""

from .bound import DEFAULT_BUDGET, SdpResult, product_figure, sdp_bound
from .certify import Certificate, certify
from .network import INPUT, Connection, NeuronGroup, SdpNetwork, from_mlp, from_residual_mlp

__all__ = [
    "DEFAULT_BUDGET",
    "INPUT",
    "Certificate",
    "Connection",
    "NeuronGroup",
    "SdpNetwork",
    "SdpResult",
    "certify",
    "from_mlp",
    "from_residual_mlp",
    "product_figure",
    "sdp_bound",
]
