"""Graph rewrites run before analysis. Each keeps the function the graph computes unchanged."""

from __future__ import annotations

from ..ir import Graph
from .fold_batchnorm import fold_batchnorm
from .fuse_activations import fuse_activations
from .merge_linear import merge_linear


def run_passes(graph: Graph) -> Graph:
    fuse_activations(graph)
    fold_batchnorm(graph)
    merge_linear(graph)
    graph.remove_unused()
    return graph


__all__ = ["fold_batchnorm", "fuse_activations", "merge_linear", "run_passes"]
