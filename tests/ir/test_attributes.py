"""Attribute defaults come from the ONNX schema, once; typed accessors refuse what is missing or ill-typed."""

from __future__ import annotations

import numpy as np
import pytest

from lipaudit.errors import AttributeValueError
from lipaudit.ir import Graph, Node, Value, fill_default_attributes, schema_defaults


def test_defaults_are_the_schemas_in_the_runtimes_float32() -> None:
    assert schema_defaults("HardSigmoid", "", 17)["alpha"] == float(np.float32(0.2))
    assert schema_defaults("Softmax", "", 12)["axis"] == 1 and schema_defaults("Softmax", "", 13)["axis"] == -1
    assert schema_defaults("NoSuchOp", "", 17) == {}


def test_filling_is_done_once_and_keeps_what_the_node_says() -> None:
    nodes = [Node("h", "HardSigmoid", ("x",), ("y",), {"beta": 0.25}), Node("l", "LeakyRelu", ("y",), ("z",))]
    graph = Graph(nodes, {"x": Value("x", (2,))}, ["x"], ["z"], opset=17)
    assert fill_default_attributes(graph)
    assert nodes[0].attrs == {"beta": 0.25, "alpha": float(np.float32(0.2))}
    assert nodes[1].attr_float("alpha") == float(np.float32(0.01))
    assert not fill_default_attributes(graph)


def test_accessors_name_the_node_on_a_missing_or_ill_typed_attribute() -> None:
    node = Node("conv1", "Conv", ("x", "w"), ("y",), {"group": "two", "strides": [1, 2]})
    assert node.attr_ints("strides") == (1, 2) and node.attr_int("missing", 7) == 7
    with pytest.raises(AttributeValueError, match="attribute 'group' of Conv 'conv1' must be an int"):
        node.attr_int("group")
    with pytest.raises(AttributeValueError, match="Conv 'conv1' has no attribute 'kernel_shape'"):
        node.attr_ints("kernel_shape")
    with pytest.raises(AttributeValueError, match="must be a list of ints"):
        Node("p", "Pad", ("x",), ("y",), {"pads": [1.5]}).attr_ints("pads")
