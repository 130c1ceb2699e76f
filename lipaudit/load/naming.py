"""How the torch loaders name IR nodes: after the torch.nn module that ran the op.

Kept apart from value tracking (torch_graph.py), which only needs unique names.
"""

from __future__ import annotations

import torch

# torch.nn modules that run one op (plus padding), so the op can take the module's path as its name.
MULTI_OP_MODULES = frozenset(
    {
        "Module",
        "Sequential",
        "ModuleList",
        "ModuleDict",
        "ParameterList",
        "ParameterDict",
        "Container",
        "MultiheadAttention",
        "Transformer",
        "TransformerEncoder",
        "TransformerDecoder",
        "TransformerEncoderLayer",
        "TransformerDecoderLayer",
    }
)
LEAF_MODULES = frozenset(torch.nn.modules.__all__) - MULTI_OP_MODULES
PAD_OPS = frozenset(
    {
        "pad",
        "constant_pad_nd",
        "reflection_pad1d",
        "reflection_pad2d",
        "reflection_pad3d",
        "replication_pad1d",
        "replication_pad2d",
        "replication_pad3d",
        "_pad_circular",
    }
)


def layer_name(path: str, module_type: str, op: str) -> str:
    """``layer1.0.conv1`` for the op of a leaf torch.nn module, else ``<path>.<op>`` (or ``<op>``)."""
    module_type = module_type.rsplit(".", 1)[-1]
    if path and module_type in LEAF_MODULES:
        # A Conv with padding_mode="reflect" pads first: the conv itself keeps the module's name.
        padding = op in PAD_OPS and not module_type.endswith(("Pad1d", "Pad2d", "Pad3d"))
        return f"{path}.pad" if padding else path
    return f"{path}.{op}" if path else op
