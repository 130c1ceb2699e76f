"""Graph rewrites. Each pass keeps the function the graph computes unchanged and reports whether it
changed the graph; a PassManager repeats its passes until nothing changes."""

from __future__ import annotations

from ..ir import Graph
from .col2im import Col2ImAsConvTranspose
from .collapse_reshapes import CollapseReshapes
from .concat_slices import ConcatSlices
from .drop_identity_moves import DropIdentityMoves
from .fold_batchnorm import FoldBatchNorm
from .fold_constants import FoldConstants
from .fuse_activations import FuseActivations
from .fuse_attention import FuseAttention
from .fuse_circular_conv import FuseCircularConv
from .fuse_group_norm import FuseGroupNorm
from .fuse_l2_pool import FuseL2Pool
from .fuse_normalization import FuseNormalization
from .fuse_piecewise import FusePiecewise
from .fuse_sorting import FuseSorting
from .manager import FillDefaultAttributes, Pass, PassManager, RemoveUnused
from .merge_linear import MergeLinear, merge_linear
from .softmax_nan_guard import DropSoftmaxNanGuard
from .split_constant_attention import SplitConstantAttention
from .trilu_mask import TriluMask


def rewrite_passes() -> PassManager:
    """Before analysis: fusions first (they expose folds and merges), then folds and merges."""
    return PassManager(
        [
            DropIdentityMoves(),
            TriluMask(),
            Col2ImAsConvTranspose(),
            FuseActivations(),
            FusePiecewise(),
            FuseNormalization(),
            FuseGroupNorm(),
            DropSoftmaxNanGuard(),
            FuseAttention(),
            SplitConstantAttention(),
            FuseSorting(),
            FuseL2Pool(),
            FuseCircularConv(),
            FoldBatchNorm(),
            CollapseReshapes(),
            ConcatSlices(),
            MergeLinear(),
            RemoveUnused(),
        ]
    )


def run_passes(graph: Graph) -> Graph:
    rewrite_passes().run(graph)
    return graph


__all__ = [
    "Col2ImAsConvTranspose",
    "CollapseReshapes",
    "ConcatSlices",
    "DropIdentityMoves",
    "DropSoftmaxNanGuard",
    "FillDefaultAttributes",
    "FoldBatchNorm",
    "FoldConstants",
    "FuseAttention",
    "FuseActivations",
    "FuseCircularConv",
    "FuseL2Pool",
    "FuseGroupNorm",
    "FuseNormalization",
    "FusePiecewise",
    "FuseSorting",
    "MergeLinear",
    "Pass",
    "PassManager",
    "RemoveUnused",
    "SplitConstantAttention",
    "TriluMask",
    "merge_linear",
    "rewrite_passes",
    "run_passes",
]
