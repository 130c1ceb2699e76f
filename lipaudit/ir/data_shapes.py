"""Which values have a shape that the input shapes and constants alone fix (a static argument).

A shape seen in one run of the model is not evidence: NonZero, Compress or a Range whose limit is
computed from the input give a different shape on other inputs. Folding ``Shape`` or ``Size`` of
such a value to the probe's answer turns a count of data (a step function) into a constant, and a
branch chosen by it into the only branch. So a shape is folded only where every op on the way
has an output shape fixed by its inputs' shapes and by constant values; anything else is a data
path and stays a node, which its rule reports.

The tables follow the ONNX operator specification (every opset lipaudit reads): ``SHAPE_INPUTS``
lists the inputs whose *values* an op's output shape depends on, ``ALWAYS_DATA_SHAPED`` the ops
whose output shape depends on their data whatever they are given. Every other op of the default
domain has an output shape fixed by its inputs' shapes and its attributes. Ops of other domains
are not known here: their outputs count as data paths.
"""

from __future__ import annotations

from .graph import Graph, Node

_REDUCTIONS = (
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)

# op type → the input positions whose values decide the output shape (a missing input is no data).
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "TopK": (1,),
    "Range": (0, 1, 2),
    "ConstantOfShape": (0,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "OneHot": (1,),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Compress": (1,),
    "If": (0,),
    "CenterCropPad": (1,),
    "Col2Im": (1, 2),
    "STFT": (1, 3),
    "DFT": (1, 2),
    "BlackmanWindow": (0,),
    "HannWindow": (0,),
    "HammingWindow": (0,),
    "MelWeightMatrix": (0, 1, 2),
    "AffineGrid": (1,),
    "MaxUnpool": (2,),
    **{name: (1,) for name in _REDUCTIONS},
}

# Output shapes that depend on the data itself (or on a body run a data-dependent number of times).
ALWAYS_DATA_SHAPED = frozenset(
    {
        "NonZero",
        "Unique",
        "NonMaxSuppression",
        "Loop",
        "Scan",
        "StringSplit",
        "TfIdfVectorizer",
        "ImageDecoder",
        "SplitToSequence",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "SequenceLength",
        "SequenceMap",
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
    }
)

# Their outputs' shapes are the input's rank (or 1 entry): fixed even when the input's shape is not.
_SHAPE_READERS = frozenset({"Shape", "Size"})


def data_shape_reason(node: Node, graph: Graph, data_shaped: dict[str, str]) -> str | None:
    """Why the outputs of ``node`` have a shape that depends on the data (None: the shape is fixed by
    the input shapes and constants), given ``data_shaped`` for the values before it."""
    if node.op_type in _SHAPE_READERS and not node.domain:
        return None
    for name in node.all_inputs:
        if name in data_shaped:
            return data_shaped[name]
    if node.domain:
        return f"{node.label} '{node.name}' is an op lipaudit does not know the output shape of"
    if node.op_type in ALWAYS_DATA_SHAPED:
        if all(graph.is_const(name) for name in node.all_inputs if name):
            return None
        return f"the output shape of {node.op_type} '{node.name}' depends on the values of its input"
    for position in SHAPE_INPUTS.get(node.op_type, ()):
        if position < len(node.inputs) and node.inputs[position] and not graph.is_const(node.inputs[position]):
            return (
                f"the output shape of {node.op_type} '{node.name}' is computed from the network input "
                f"(its input '{node.inputs[position]}')"
            )
    return None


def data_shaped_values(graph: Graph) -> dict[str, str]:
    """Every value whose shape depends on the data, with the reason (the op where that starts)."""
    found: dict[str, str] = {}
    for node in graph.nodes:
        reason = data_shape_reason(node, graph, found)
        if reason is not None:
            found.update((name, reason) for name in node.outputs if name)
    return found
