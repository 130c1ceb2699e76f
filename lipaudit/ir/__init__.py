"""The IR: a framework-neutral graph of ONNX-style nodes, values with their producers and consumers."""

from .attributes import decode_attribute, schema_defaults, schema_since_version
from .graph import Graph, Node, Value, fill_default_attributes

__all__ = [
    "Graph",
    "Node",
    "Value",
    "decode_attribute",
    "fill_default_attributes",
    "schema_defaults",
    "schema_since_version",
]
