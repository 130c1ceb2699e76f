"""Col2Im (F.fold, as the dynamo exporter writes it) is a Reshape of the columns into blocks and the
transposed one-hot convolution: the adjoint of F.unfold, which sums the patches that overlap. As a
ConvTranspose its factor is the operator's norm, the same figure the aten converter's form gets."""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node
from ..ops.geometry import block_counts, fold_attributes, patch_picks
from .manager import NodeRewrite


class Col2ImAsConvTranspose(NodeRewrite):
    name = "col2im-as-conv-transpose"
    op_types = ("Col2Im",)

    def rewrite(self, graph: Graph, node: Node) -> bool:
        columns, image, block = node.inputs[:3]
        in_shape, out_shape = graph.shape(columns), graph.shape(node.outputs[0])
        image_size, block_size = graph.const(image), graph.const(block)
        if in_shape is None or out_shape is None or image_size is None or block_size is None or len(in_shape) != 3:
            return False
        sizes, kernel = [int(v) for v in np.ravel(image_size)], [int(v) for v in np.ravel(block_size)]
        n = len(kernel)
        dilations = list(node.attr_ints("dilations", ())) or [1] * n
        strides = list(node.attr_ints("strides", ())) or [1] * n
        pads = list(node.attr_ints("pads", ())) or [0] * (2 * n)
        blocks = block_counts(sizes, kernel, dilations, pads, strides)
        if math.prod(blocks) != in_shape[2] or out_shape[1] * math.prod(kernel) != in_shape[1]:
            return False
        target = graph.new_value(f"{node.name}_blocks_shape", const=np.asarray([*in_shape[:2], *blocks], np.int64))
        laid_out = graph.new_value(f"{node.name}_blocks", shape=(*in_shape[:2], *blocks))
        graph.insert_nodes(node, [Node(f"{node.name}/blocks", "Reshape", (columns, target.name), (laid_out.name,))])
        picks = graph.new_value(f"{node.name}_picks", const=patch_picks(out_shape[1], kernel))
        graph.set_inputs(node, [laid_out.name, picks.name])
        node.op_type = "ConvTranspose"
        node.attrs = dict(fold_attributes(sizes, blocks, kernel, dilations, pads, strides), auto_pad="NOTSET")
        node.notes.append("Col2Im as the transposed one-hot convolution")
        return True
