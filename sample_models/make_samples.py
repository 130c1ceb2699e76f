"""Regenerate the sample models: `python sample_models/make_samples.py` (or `make samples`).

The models are built node by node with onnx.helper and seeded weights, so every run writes the
same bytes, with no exporter version in the loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

HERE = Path(__file__).resolve().parent
OPSET = 17


class Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        array = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        return self.const(name, array)

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        output = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def conv(self, x: str, name: str, c_in: int, c_out: int, k: int, stride: int = 1) -> str:
        w = self.weight(f"{name}.weight", (c_out, c_in, k, k), c_in * k * k)
        b = self.const(f"{name}.bias", np.zeros(c_out, np.float32))
        return self.node("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2)

    def batchnorm(self, x: str, name: str, channels: int) -> str:
        # Statistics like a trained net's: variances spread around 1, scales near 1.
        scale = self.const(f"{name}.weight", self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        bias = self.const(f"{name}.bias", self.rng.normal(0, 0.1, channels).astype(np.float32))
        mean = self.const(f"{name}.running_mean", self.rng.normal(0, 0.2, channels).astype(np.float32))
        var = self.const(f"{name}.running_var", self.rng.uniform(0.5, 2.0, channels).astype(np.float32))
        return self.node("BatchNormalization", [x, scale, bias, mean, var], name, epsilon=1e-5)

    def gemm(self, x: str, name: str, n_in: int, n_out: int) -> str:
        w = self.weight(f"{name}.weight", (n_out, n_in), n_in)
        b = self.const(f"{name}.bias", np.zeros(n_out, np.float32))
        return self.node("Gemm", [x, w, b], name, transB=1)

    def model(self, name: str, input_name: str, input_shape: list, output: str) -> onnx.ModelProto:
        x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, name, [x], [y], self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lipaudit-samples"
        )
        model.ir_version = 8
        model = shape_inference.infer_shapes(model)  # the checker wants the output's shape
        del model.graph.value_info[:]
        onnx.checker.check_model(model)
        return model


def mlp() -> onnx.ModelProto:
    """16 → 64 → 64 → 10 with ReLU; the batch dimension is dynamic."""
    b = Builder(seed=1)
    h = b.node("Relu", [b.gemm("x", "fc1", 16, 64)], "relu1")
    h = b.node("Relu", [b.gemm(h, "fc2", 64, 64)], "relu2")
    return b.model("mlp", "x", ["batch", 16], b.gemm(h, "fc3", 64, 10))


def cnn() -> onnx.ModelProto:
    """Conv-BN-ReLU stem, a residual block, max pooling, a strided conv, global pooling, a classifier."""
    b = Builder(seed=2)
    h = b.node("Relu", [b.batchnorm(b.conv("x", "stem.conv", 3, 16, 3), "stem.bn", 16)], "stem.relu")
    r = b.node("Relu", [b.batchnorm(b.conv(h, "block.conv1", 16, 16, 3), "block.bn1", 16)], "block.relu1")
    r = b.batchnorm(b.conv(r, "block.conv2", 16, 16, 3), "block.bn2", 16)
    h = b.node("Relu", [b.node("Add", [h, r], "block.add")], "block.relu2")
    h = b.node("MaxPool", [h], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    h = b.node("Relu", [b.batchnorm(b.conv(h, "down.conv", 16, 32, 3, stride=2), "down.bn", 32)], "down.relu")
    h = b.node("Flatten", [b.node("GlobalAveragePool", [h], "gap")], "flatten")
    return b.model("cnn", "x", [1, 3, 32, 32], b.gemm(h, "classifier", 32, 10))


def unbounded() -> onnx.ModelProto:
    """A gated MLP: the gate multiplies two activations, which has no global Lipschitz constant."""
    b = Builder(seed=3)
    h = b.gemm("x", "fc1", 8, 16)
    gate = b.node("Sigmoid", [b.gemm("x", "gate", 8, 16)], "gate.sigmoid")
    h = b.node("Mul", [b.node("Tanh", [h], "tanh"), gate], "gated")
    return b.model("unbounded", "x", [1, 8], b.node("Exp", [b.gemm(h, "fc2", 16, 4)], "exp"))


def cnn_torchscript() -> bytes:
    """A traced torch CNN: Conv-BN-ReLU, max pooling, a strided conv, global pooling, a classifier.

    Seeded, so one torch install writes the same bytes on every run; the archive records torch's
    version and source paths, so another install may write different bytes for the same network.
    """
    import io
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    with torch.no_grad():  # statistics like a trained net's
        model[1].running_mean.normal_(0, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 32, 32)), buffer)
    return buffer.getvalue()


SAMPLES = {"mlp.onnx": mlp, "cnn.onnx": cnn, "unbounded.onnx": unbounded, "cnn_torchscript.pt": cnn_torchscript}


def main() -> None:
    for filename, build in SAMPLES.items():
        model = build()
        if isinstance(model, bytes):  # a torch archive, already serialised
            (HERE / filename).write_bytes(model)
        else:
            onnx.save(model, str(HERE / filename))
        print(f"wrote {HERE / filename}")


if __name__ == "__main__":
    main()
