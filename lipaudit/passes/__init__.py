"""Graph rewrites run before analysis. Each keeps the function the graph computes unchanged."""

from __future__ import annotations

from ..ir import Graph
from .fold_batchnorm import fold_batchnorm
from .fuse_activations import fuse_activations


def run_passes(graph: Graph) -> Graph:
    fuse_activations(graph)
    fold_batchnorm(graph)
    graph.remove_unused()
    return graph


__all__ = ["fold_batchnorm", "fuse_activations", "run_passes"]
