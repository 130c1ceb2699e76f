"""merge_linear keeps the function exactly and only merges what is one linear map."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipaudit.ir import Graph, Node, Value, fill_default_attributes
from lipaudit.passes.merge_linear import merge_linear
from lipaudit.spectral import conv_norm, dense_norm


def graph_of(nodes, consts, x_shape):
    values = {"x": Value("x", tuple(x_shape))}
    for name, array in consts.items():
        values[name] = Value(name, array.shape, np.asarray(array, np.float64))
    graph = Graph(list(nodes), values, ["x"], [nodes[-1].outputs[0]], opset=17)
    fill_default_attributes(graph)
    return graph


def run(graph, x):
    """Evaluate the Gemm / MatMul / Conv nodes of a graph (float64)."""
    env = {"x": torch.from_numpy(x)}
    for node in graph.nodes:
        args = [env[name] if name in env else torch.from_numpy(graph.const(name)) for name in node.inputs if name]
        if node.op_type == "MatMul":
            out = args[0] @ args[1]
        elif node.op_type == "Gemm":
            b = args[1].T if node.attrs.get("transB", 0) else args[1]
            out = node.attrs.get("alpha", 1.0) * args[0] @ b
            if len(args) > 2:
                out = out + node.attrs.get("beta", 1.0) * args[2]
        else:
            n = args[1].ndim - 2
            pads = node.attrs.get("pads", [0] * 2 * n)
            order = [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])]
            conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
            out = conv(
                F.pad(args[0], order),
                args[1],
                args[2] if len(args) > 2 else None,
                stride=node.attrs.get("strides", [1] * n),
                dilation=node.attrs.get("dilations", [1] * n),
            )
        env[node.outputs[0]] = out
    return env[graph.outputs[0]].numpy()


def test_gemm_chain_becomes_one_gemm_with_the_same_function_and_a_smaller_norm():
    rng = np.random.default_rng(0)
    consts = {
        "b1": rng.standard_normal((6, 5)),
        "c1": rng.standard_normal(6),
        "b2": rng.standard_normal((6, 4)),
        "c2": rng.standard_normal(4),
        "b3": rng.standard_normal((4, 3)),
    }
    nodes = [
        Node("g1", "Gemm", ["x", "b1", "c1"], ["h1"], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
        Node("g2", "Gemm", ["h1", "b2", "c2"], ["h2"], {"alpha": 1.5}),
        Node("m3", "MatMul", ["h2", "b3"], ["y"]),
    ]
    graph = graph_of(nodes, consts, (2, 5))
    x = rng.standard_normal((2, 5))
    before = run(graph, x)
    product = np.prod([np.linalg.norm(m, 2) for m in (0.5 * consts["b1"], 1.5 * consts["b2"], consts["b3"])])
    assert merge_linear(graph) == 2
    assert [n.name for n in graph.nodes] == ["m3"] and graph.nodes[0].op_type == "Gemm"
    np.testing.assert_allclose(run(graph, x), before, rtol=1e-12, atol=1e-12)
    merged = dense_norm(graph.const(graph.nodes[0].inputs[1])).value
    assert merged < product
    assert any("merged" in note for note in graph.nodes[0].notes)


def test_batched_matmul_chain_merges_and_shared_outputs_do_not():
    rng = np.random.default_rng(1)
    consts = {"w1": rng.standard_normal((5, 7)), "w2": rng.standard_normal((7, 3))}
    nodes = [Node("m1", "MatMul", ["x", "w1"], ["h"]), Node("m2", "MatMul", ["h", "w2"], ["y"])]
    graph = graph_of(nodes, consts, (2, 4, 5))
    x = rng.standard_normal((2, 4, 5))
    before = run(graph, x)
    assert merge_linear(graph) == 1
    np.testing.assert_allclose(run(graph, x), before, rtol=1e-12, atol=1e-12)

    graph = graph_of(
        [Node("m1", "MatMul", ["x", "w1"], ["h"]), Node("m2", "MatMul", ["h", "w2"], ["y"])], consts, (2, 5)
    )
    graph.outputs.append("h")  # the intermediate is also an output: nothing to merge
    assert merge_linear(graph) == 0


def test_low_rank_bottlenecks_are_left_alone():
    rng = np.random.default_rng(2)
    consts = {"w1": rng.standard_normal((64, 2)), "w2": rng.standard_normal((2, 64))}
    graph = graph_of(
        [Node("m1", "MatMul", ["x", "w1"], ["h"]), Node("m2", "MatMul", ["h", "w2"], ["y"])], consts, (1, 64)
    )
    assert merge_linear(graph) == 0


@pytest.mark.parametrize(
    "first_attrs, second_attrs, n",
    [
        ({"pads": [1, 1, 1, 1]}, {}, 2),
        ({"pads": [2, 0, 1, 1], "strides": [2, 1], "dilations": [1, 2]}, {"dilations": [2, 1]}, 2),
        ({"pads": [1, 2], "strides": [3]}, {}, 1),
    ],
)
def test_conv_chain_without_inner_padding_is_one_convolution(first_attrs, second_attrs, n):
    rng = np.random.default_rng(3)
    consts = {
        "w1": rng.standard_normal((4, 3, *(3,) * n)),
        "b1": rng.standard_normal(4),
        "w2": rng.standard_normal((5, 4, *(2,) * n)),
        "b2": rng.standard_normal(5),
    }
    nodes = [
        Node("c1", "Conv", ["x", "w1", "b1"], ["h"], dict(first_attrs)),
        Node("c2", "Conv", ["h", "w2", "b2"], ["y"], dict(second_attrs)),
    ]
    spatial = (11, 9)[:n]
    graph = graph_of(nodes, consts, (1, 3, *spatial))
    x = rng.standard_normal((1, 3, *spatial))
    before = run(graph, x)
    assert merge_linear(graph) == 1
    (node,) = graph.nodes
    after = run(graph, x)
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, rtol=1e-11, atol=1e-11)
    # measured as one operator: never above the product of the two norms
    a = node.attrs
    merged = conv_norm(
        graph.const(node.inputs[1]),
        spatial,
        strides=a["strides"],
        pads=a.get("pads", [0] * 2 * n),
        dilations=a["dilations"],
    ).value
    s1 = first_attrs.get("strides", [1] * n)
    first = conv_norm(
        consts["w1"], spatial, strides=s1, pads=first_attrs["pads"], dilations=first_attrs.get("dilations", [1] * n)
    ).value
    h_spatial = run(
        graph_of([Node("c1", "Conv", ["x", "w1", "b1"], ["h"], dict(first_attrs))], consts, (1, 3, *spatial)), x
    ).shape[2:]
    second = conv_norm(
        consts["w2"], h_spatial, strides=[1] * n, pads=[0] * 2 * n, dilations=second_attrs.get("dilations", [1] * n)
    ).value
    assert merged <= first * second * (1 + 1e-6)


def test_padding_between_two_convolutions_blocks_the_merge():
    rng = np.random.default_rng(4)
    consts = {"w1": rng.standard_normal((4, 3, 3, 3)), "w2": rng.standard_normal((5, 4, 3, 3))}
    nodes = [
        Node("c1", "Conv", ["x", "w1"], ["h"], {"pads": [1, 1, 1, 1]}),
        Node("c2", "Conv", ["h", "w2"], ["y"], {"pads": [1, 1, 1, 1]}),
    ]
    assert merge_linear(graph_of(nodes, consts, (1, 3, 8, 8))) == 0
    nodes = [
        Node("c1", "Conv", ["x", "w1"], ["h"], {"group": 1}),
        Node("c2", "Conv", ["h", "w2"], ["y"], {"strides": [2, 2]}),
    ]
    assert merge_linear(graph_of(nodes, consts, (1, 3, 8, 8))) == 0
