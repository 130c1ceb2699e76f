"""Mutation fuzz: every mutant of the sample and test models gets a report or one clean error line.

Mutants change attributes, dims, dtypes, op types, inputs, initializer values (NaN, Inf, huge, zero)
and raw bytes (truncation, flips).  ``lipaudit check`` runs in-process through typer's CliRunner,
inside one long-lived worker process (``_fuzz_worker.py``) under a memory limit and a per-mutant
deadline: a mutant that segfaults native code, loops or asks for gigabytes kills the worker (it is
restarted and the mutant reported), never the test session.  A mutant passes when the command exits
0–3 with no exception escaping and no "internal error", and, on exit 2, stderr holds exactly one
"lipaudit: error:" line.  A second test checks that figures reported for mutants stay above a slope
onnxruntime measures on them.

Seeded and deterministic.  The default run stays well under a minute on 2 cores; ``-m slow`` runs
ten times as many mutants.  Shapes of ~10⁹ elements are tried in a subprocess under a hard limit.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import random
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from tests.soundness._fuzz_worker import MARK
from tests.soundness._oracle import FLOAT, const, model, save

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
DEFAULT_MUTANTS = 200
SLOW_MUTANTS = 2400
PER_MUTANT_SECONDS = 30  # a mutant that takes longer is reported, not waited for
WORKER = Path(__file__).with_name("_fuzz_worker.py")
WORKER_MEMORY = 4 << 30  # address-space limit of the worker process
WORKER_START_SECONDS = 120
SUBPROCESS_MEMORY = 2560 << 20  # the hard limit for the 10⁹-element cases
SUBPROCESS_SECONDS = 180


# ----------------------------------------------------------------------------- base models


def _fixed_dims(proto: onnx.ModelProto, dims: dict[int, int]) -> onnx.ModelProto:
    proto = copy.deepcopy(proto)
    shape = proto.graph.input[0].type.tensor_type.shape
    for index, value in dims.items():
        shape.dim[index].Clear()
        shape.dim[index].dim_value = value
    del proto.graph.value_info[:]
    return proto


def _built_models() -> dict[str, onnx.ModelProto]:
    """Small models from the soundness tests: each exercises a rule the samples do not."""
    rng = np.random.default_rng(0)
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "three"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", FLOAT, [1, 4])],
        [const("three", np.full((1, 4), 3, np.float32))],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", FLOAT, [1, 4])]
    )
    bn = {
        "s": rng.uniform(0.5, 2, 4).astype(np.float32),
        "b": rng.normal(size=4).astype(np.float32),
        "mu": rng.normal(size=4).astype(np.float32),
        "v": rng.uniform(0.5, 2, 4).astype(np.float32),
    }
    return {
        "pool_chain": model(
            [
                helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
                helper.make_node("BatchNormalization", ["c", "s", "b", "mu", "v"], ["n"], epsilon=1e-5),
                helper.make_node("Relu", ["n"], ["r"]),
                helper.make_node(
                    "MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1
                ),
                helper.make_node("GlobalAveragePool", ["p"], ["g"]),
                helper.make_node("Flatten", ["g"], ["y"]),
            ],
            [("x", FLOAT, [1, 2, 5, 5])],
            [("y", FLOAT, [1, 4])],
            {"w": rng.normal(size=(4, 2, 3, 3)).astype(np.float32), **bn},
        ),
        "layer_norm": model(
            [
                helper.make_node("LayerNormalization", ["x", "g", "beta"], ["y", "mean", "inv"], axis=-1, epsilon=1e-3),
                helper.make_node("Softmax", ["y"], ["z"], axis=-1),
            ],
            [("x", FLOAT, [2, 4])],
            [("z", FLOAT, [2, 4]), ("mean", FLOAT, [2, 1])],
            {"g": np.ones(4, np.float32), "beta": np.zeros(4, np.float32)},
        ),
        "resize_pad": model(
            [
                helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="linear"),
                helper.make_node("Pad", ["r", "pads", "fill"], ["p"], mode="constant"),
                helper.make_node("LeakyRelu", ["p"], ["y"], alpha=0.2),
            ],
            [("x", FLOAT, [1, 1, 3, 3])],
            [("y", FLOAT, [1, 1, 8, 8])],
            {
                "scales": np.array([1, 1, 2, 2], np.float32),
                "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                "fill": np.array(0.5, np.float32),
            },
        ),
        "subgraph_if": model(
            [
                helper.make_node("Constant", [], ["cond"], value=const("v", np.array(True))),
                helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
            ],
            [("x", FLOAT, [1, 4])],
            [("y", FLOAT, [1, 4])],
        ),
        "residual_mlp": model(
            [
                helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
                helper.make_node("Tanh", ["h"], ["t"]),
                helper.make_node("Add", ["t", "x"], ["s"]),
                helper.make_node("MatMul", ["s", "w2"], ["m"]),
                helper.make_node("Div", ["m", "d"], ["y"]),
            ],
            [("x", FLOAT, [2, 4])],
            [("y", FLOAT, [2, 3])],
            {
                "w1": rng.normal(size=(4, 4)).astype(np.float32),
                "b1": np.zeros(4, np.float32),
                "w2": rng.normal(size=(4, 3)).astype(np.float32),
                "d": np.array(3.0, np.float32),
            },
        ),
    }


def _base_models() -> dict[str, bytes]:
    """Serialized bases.  The CNN sample is shrunk to 8×8 so each mutant takes milliseconds."""
    cnn = onnx.load(str(SAMPLES / "cnn.onnx"))
    mlp = onnx.load(str(SAMPLES / "mlp.onnx"))
    bases = {
        "cnn8": _fixed_dims(cnn, {2: 8, 3: 8}).SerializeToString(),
        "mlp": _fixed_dims(mlp, {0: 2}).SerializeToString(),
        "unbounded": (SAMPLES / "unbounded.onnx").read_bytes(),
    }
    for name, proto in _built_models().items():
        bases[name] = proto.SerializeToString()
    return bases


# ----------------------------------------------------------------------------- mutations

INT_VALUES = [0, -1, 1, 2, 3, 5, 7, 64, -7, 10**9, -(10**9), 2**31, 2**62]
FLOAT_VALUES = [0.0, -0.0, -1.0, 0.5, 3.0, 1e30, -1e30, 1e-30, 1e-45, math.nan, math.inf, -math.inf]
STRING_VALUES = [
    "constant",
    "reflect",
    "edge",
    "wrap",
    "nearest",
    "linear",
    "cubic",
    "bilinear",
    "SAME_UPPER",
    "SAME_LOWER",
    "VALID",
    "NOTSET",
    "half_pixel",
    "asymmetric",
    "align_corners",
    "tf_crop_and_resize",
    "floor",
    "ceil",
    "round_prefer_ceil",
    "tanh",
    "none",
    "DCR",
    "CRD",
    "",
    "bogus",
    "ü\u00e9\u2603",
]
OP_TYPES = [
    "Relu",
    "Sigmoid",
    "Tanh",
    "Abs",
    "Exp",
    "Log",
    "Softmax",
    "LogSoftmax",
    "Identity",
    "Neg",
    "Sqrt",
    "Floor",
    "Gelu",
    "Erf",
    "Celu",
    "Elu",
    "Selu",
    "LeakyRelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Concat",
    "Reshape",
    "Pad",
    "Resize",
    "Upsample",
    "If",
    "Loop",
    "Scan",
    "TopK",
    "Split",
    "Slice",
    "Where",
    "PRelu",
    "Clip",
    "Dropout",
    "Cast",
    "Shape",
    "Size",
    "Gather",
    "Expand",
    "Tile",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceL2",
    "ReduceProd",
    "Einsum",
    "LRN",
    "NonZero",
    "Unique",
    "RandomNormalLike",
    "Shrink",
    "ThresholdedRelu",
    "DepthToSpace",
    "SpaceToDepth",
    "CumSum",
    "Range",
    "ConstantOfShape",
    "OneHot",
    "ArgMax",
    "Hardmax",
    "NoSuchOp",
]
ELEM_TYPES = [
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.INT64,
    TensorProto.INT32,
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.BOOL,
    TensorProto.STRING,
    TensorProto.COMPLEX64,
    0,
]
# In-process dims stay small: shapes of 10⁹ elements are the subprocess guard's job.
DIM_VALUES = [0, 1, 2, 3, 5, 9, 17, 64]
OPSETS = [1, 5, 6, 7, 9, 11, 12, 13, 18, 21, 23, 24, 99]


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attr.g))
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    nodes.extend(_all_nodes(g))
    return nodes


def _names(graph: onnx.GraphProto) -> list[str]:
    names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    names += [out for node in graph.node for out in node.output if out]
    return names or ["x"]


def mutate_attribute(proto: onnx.ModelProto, rng: random.Random) -> str:
    nodes = [n for n in _all_nodes(proto.graph)]
    if not nodes:
        return "no node"
    node = rng.choice(nodes)
    if not node.attribute or rng.random() < 0.25:
        name = rng.choice(
            [
                "ceil_mode",
                "auto_pad",
                "axis",
                "training_mode",
                "count_include_pad",
                "group",
                "epsilon",
                "alpha",
                "mode",
                "keepdims",
                "transB",
                "to",
                "strides",
                "pads",
            ]
        )
        value = {
            "auto_pad": rng.choice(STRING_VALUES),
            "mode": rng.choice(STRING_VALUES),
            "epsilon": rng.choice(FLOAT_VALUES),
            "alpha": rng.choice(FLOAT_VALUES),
            "strides": [rng.choice(INT_VALUES[:8])] * 2,
            "pads": [rng.choice(INT_VALUES[:8])] * 4,
        }.get(name, rng.choice(INT_VALUES[:8]))
        for existing in list(node.attribute):
            if existing.name == name:
                node.attribute.remove(existing)
        node.attribute.append(helper.make_attribute(name, value))
        return f"{node.op_type}: add {name}={value!r}"
    attr = rng.choice(list(node.attribute))
    if rng.random() < 0.1:
        node.attribute.remove(attr)
        return f"{node.op_type}: drop {attr.name}"
    if attr.type == AttributeProto.INT:
        attr.i = rng.choice(INT_VALUES)
        return f"{node.op_type}.{attr.name} = {attr.i}"
    if attr.type == AttributeProto.FLOAT:
        attr.f = rng.choice(FLOAT_VALUES)
        return f"{node.op_type}.{attr.name} = {attr.f}"
    if attr.type == AttributeProto.STRING:
        attr.s = rng.choice(STRING_VALUES).encode()
        return f"{node.op_type}.{attr.name} = {attr.s!r}"
    if attr.type == AttributeProto.INTS:
        values = list(attr.ints) or [1]
        if rng.random() < 0.3:
            values = values[:-1] if len(values) > 1 and rng.random() < 0.5 else values + [rng.choice(INT_VALUES)]
        else:
            values[rng.randrange(len(values))] = rng.choice(INT_VALUES)
        del attr.ints[:]
        attr.ints.extend(values)
        return f"{node.op_type}.{attr.name} = {values}"
    if attr.type == AttributeProto.FLOATS:
        values = list(attr.floats) or [1.0]
        values[rng.randrange(len(values))] = rng.choice(FLOAT_VALUES)
        del attr.floats[:]
        attr.floats.extend(values)
        return f"{node.op_type}.{attr.name} = {values}"
    if attr.type == AttributeProto.TENSOR:
        array = numpy_helper.to_array(attr.t).copy()
        if array.dtype.kind == "f" and array.size:
            array.flat[rng.randrange(array.size)] = rng.choice(FLOAT_VALUES)
        elif array.dtype.kind in "iub" and array.size:
            array = np.logical_not(array) if array.dtype == bool else array * -1 + 1
        attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
        return f"{node.op_type}.{attr.name} tensor changed"
    if attr.type == AttributeProto.GRAPH:
        body = attr.g
        if body.node:
            del body.node[rng.randrange(len(body.node))]
        return f"{node.op_type}.{attr.name}: a subgraph node dropped"
    return f"{node.op_type}.{attr.name}: left alone"


def mutate_dims(proto: onnx.ModelProto, rng: random.Random) -> str:
    infos = list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info)
    info = rng.choice(infos)
    shape = info.type.tensor_type.shape
    if not shape.dim or rng.random() < 0.15:
        shape.dim.add().dim_value = rng.choice(DIM_VALUES)
        return f"{info.name}: a dim added"
    dim = shape.dim[rng.randrange(len(shape.dim))]
    roll = rng.random()
    if roll < 0.15:
        dim.Clear()
        dim.dim_param = "N"
        return f"{info.name}: a dim made symbolic"
    if roll < 0.25:
        del shape.dim[-1]
        return f"{info.name}: last dim dropped"
    dim.Clear()
    dim.dim_value = rng.choice(DIM_VALUES)
    return f"{info.name}: a dim = {dim.dim_value}"


def mutate_dtype(proto: onnx.ModelProto, rng: random.Random) -> str:
    if rng.random() < 0.6 or not proto.graph.initializer:
        info = rng.choice(list(proto.graph.input) + list(proto.graph.output))
        info.type.tensor_type.elem_type = rng.choice(ELEM_TYPES)
        return f"{info.name}: elem_type {info.type.tensor_type.elem_type}"
    init = rng.choice(list(proto.graph.initializer))
    array = numpy_helper.to_array(init)
    target = rng.choice([np.float64, np.float16, np.int64, np.int32, np.bool_, np.uint8])
    init.CopyFrom(numpy_helper.from_array(array.astype(target), init.name))
    return f"{init.name}: dtype {np.dtype(target).name}"


def mutate_op_type(proto: onnx.ModelProto, rng: random.Random) -> str:
    node = rng.choice(_all_nodes(proto.graph) or [helper.make_node("Relu", ["x"], ["y"])])
    if rng.random() < 0.1:
        node.domain = rng.choice(["com.custom", "ai.onnx.ml", "com.microsoft", "ai.onnx"])
        return f"{node.op_type}: domain {node.domain}"
    old, node.op_type = node.op_type, rng.choice(OP_TYPES)
    return f"{old} -> {node.op_type}"


def mutate_inputs(proto: onnx.ModelProto, rng: random.Random) -> str:
    graph = proto.graph
    if not graph.node:
        return "no node"
    index = rng.randrange(len(graph.node))
    node = graph.node[index]
    available = _names(graph)
    roll = rng.random()
    if roll < 0.35 and node.input:
        slot = rng.randrange(len(node.input))
        node.input[slot] = rng.choice(available + [""])
        return f"{node.op_type}: input {slot} = {node.input[slot]!r}"
    if roll < 0.5 and node.input:
        del node.input[-1]
        return f"{node.op_type}: last input dropped"
    if roll < 0.65:
        node.input.append(rng.choice(available + [""]))
        return f"{node.op_type}: an input appended"
    if roll < 0.75 and len(node.input) > 1:
        a, b = rng.sample(range(len(node.input)), 2)
        node.input[a], node.input[b] = node.input[b], node.input[a]
        return f"{node.op_type}: inputs {a} and {b} swapped"
    if roll < 0.85:
        node.output[0] = rng.choice(available)
        return f"{node.op_type}: output renamed to an existing name"
    if roll < 0.92:
        del graph.node[index]
        return f"{node.op_type}: node deleted"
    graph.node.insert(rng.randrange(len(graph.node) + 1), copy.deepcopy(node))
    return f"{node.op_type}: node duplicated"


def mutate_initializer(proto: onnx.ModelProto, rng: random.Random) -> str:
    floats = [t for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE)]
    if not floats:
        return mutate_attribute(proto, rng)
    init = rng.choice(floats)
    array = numpy_helper.to_array(init).copy()
    roll = rng.random()
    value = rng.choice([math.nan, math.inf, -math.inf, 3e38, -3e38, 0.0, 1e-45, 1e20])
    if roll < 0.45 and array.size:
        array.flat[rng.randrange(array.size)] = value
        what = f"one entry = {value}"
    elif roll < 0.7:
        array[...] = value
        what = f"all entries = {value}"
    elif roll < 0.85:
        array = array.reshape(-1)
        what = "flattened"
    else:
        init.dims[:] = [d + rng.choice([-1, 1, 2]) for d in init.dims] or [2]
        return f"{init.name}: dims changed without data"
    init.CopyFrom(numpy_helper.from_array(array.astype(array.dtype), init.name))
    return f"{init.name}: {what}"


def mutate_structure(proto: onnx.ModelProto, rng: random.Random) -> str:
    roll = rng.random()
    graph = proto.graph
    if roll < 0.3:
        for entry in proto.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = rng.choice(OPSETS)
                return f"opset {entry.version}"
    if roll < 0.5 and len(graph.node) > 1:
        nodes = list(graph.node)
        rng.shuffle(nodes)
        del graph.node[:]
        graph.node.extend(nodes)
        return "nodes shuffled"
    if roll < 0.7 and graph.node:
        name = rng.choice([out for node in graph.node for out in node.output if out] or ["x"])
        graph.output.append(helper.make_tensor_value_info(name, FLOAT, None))
        return f"{name} made a graph output"
    if roll < 0.85 and len(graph.output) > 1:
        del graph.output[0]
        return "first graph output dropped"
    proto.ir_version = rng.choice([1, 3, 4, 7, 8, 9, 10, 11, 99])
    return f"ir_version {proto.ir_version}"


PROTO_MUTATIONS: list[Callable[[onnx.ModelProto, random.Random], str]] = [
    mutate_attribute,
    mutate_attribute,
    mutate_dims,
    mutate_dtype,
    mutate_op_type,
    mutate_inputs,
    mutate_inputs,
    mutate_initializer,
    mutate_initializer,
    mutate_structure,
]


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    roll = rng.random()
    if roll < 0.3:
        cut = rng.randrange(len(data))
        return data[:cut], f"truncated to {cut} bytes"
    buffer = bytearray(data)
    if roll < 0.75:
        count = rng.choice([1, 2, 4, 16])
        for _ in range(count):
            buffer[rng.randrange(len(buffer))] ^= rng.randrange(1, 256)
        return bytes(buffer), f"{count} bytes flipped"
    if roll < 0.9:
        start = rng.randrange(len(buffer))
        buffer[start : start + 64] = bytes(len(buffer[start : start + 64]))
        return bytes(buffer), "64 bytes zeroed"
    garbage = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100])))
    at = rng.randrange(len(buffer) + 1)
    return bytes(buffer[:at]) + garbage + bytes(buffer[at:]), f"{len(garbage)} bytes inserted"


@dataclass
class Mutant:
    label: str
    data: bytes
    suffix: str = ".onnx"
    flags: tuple[str, ...] = ()


def _mutated(data: bytes, rng: random.Random) -> tuple[onnx.ModelProto, list[str]]:
    proto = onnx.load_model_from_string(data)
    steps = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        mutation = rng.choice(PROTO_MUTATIONS)
        try:
            with np.errstate(all="ignore"):
                steps.append(mutation(proto, rng))
        except Exception as error:  # an earlier step left a tensor numpy cannot read: keep it so
            steps.append(f"{mutation.__name__} skipped ({type(error).__name__})")
    return proto, steps


def _passes_checker(proto: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(proto)
    except Exception:
        return False
    return True


def make_mutants(count: int, seed: int) -> Iterator[Mutant]:
    bases = _base_models()
    names = sorted(bases)
    rng = random.Random(seed)
    for index in range(count):
        name = names[index % len(names)]
        data = bases[name]
        steps: list[str] = []
        if rng.random() < 0.2:
            data, step = mutate_bytes(data, rng)
            steps.append(step)
        else:
            # Most mutants should get past onnx.checker, so that they reach the analysis: retry a few
            # times for one that does, but keep some the checker refuses.
            keep_invalid = rng.random() < 0.25
            for _ in range(6):
                proto, steps = _mutated(data, rng)
                if keep_invalid or _passes_checker(proto):
                    break
            data = proto.SerializeToString()
        flags = rng.choice(
            [
                (),
                (),
                ("--no-verify",),
                ("--method", "gram"),
                ("--method", "frobenius"),
                ("--method", "exact"),
                ("--max-lipschitz", "1.5"),
            ]
        )
        yield Mutant(f"#{index} {name}: {'; '.join(steps)}", data, flags=flags)


@functools.lru_cache(maxsize=1)
def small_torchscript() -> bytes:
    """A traced 4×4 CNN: the sample .pt analyses a 32×32 input (seconds), this one milliseconds.

    Built once per process from one module class of this file only (tracing a class a second
    time mangles its name), and with torch.jit.save's random serialization id overwritten, so the
    bytes do not depend on the run or on what other tests traced before.
    """
    import io
    import zipfile

    import torch
    from torch import nn

    class FuzzNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.weight = nn.Parameter(torch.randn(3, 2, 3, 3, generator=generator))
            self.bias = nn.Parameter(torch.randn(3, generator=generator))
            self.head = nn.Parameter(torch.randn(4, 12, generator=generator))

        def forward(self, x):
            h = torch.relu(torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1))
            return torch.nn.functional.max_pool2d(h, 2).flatten(1) @ self.head.t()

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(FuzzNet().eval(), torch.zeros(1, 2, 4, 4)), buffer)
    data = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith("serialization_id"):
                random_id = archive.read(name)
                data = data.replace(random_id, b"0" * len(random_id))
    return data


def torchscript_byte_mutants(count: int, seed: int, data: bytes | None = None) -> Iterator[Mutant]:
    data = small_torchscript() if data is None else data
    rng = random.Random(seed)
    for index in range(count):
        mutated, step = mutate_bytes(data, rng)
        yield Mutant(f"#ts{index} torchscript: {step}", mutated, ".pt")


# ----------------------------------------------------------------------------- running them


class Worker:
    """A long-lived ``_fuzz_worker.py`` process under a memory limit, restarted whenever a mutant
    kills it or overruns its time.  Requests and replies are JSON lines."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.buffer = b""
        self.restarts = 0

    def _start(self) -> None:
        env = {
            **os.environ,
            "LIPAUDIT_DEBUG": "0",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-u", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            preexec_fn=_limit_worker,
        )
        self.buffer = b""
        self._read_reply(WORKER_START_SECONDS)

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def ask(self, request: dict, seconds: float) -> dict:
        if self.process is None:
            self._start()
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died()
        return self._read_reply(seconds)

    def _read_reply(self, seconds: float) -> dict:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + seconds
        stream = self.process.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith(MARK):
                    return json.loads(text[len(MARK) :])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                self.restarts += 1
                return {"crash": f"no answer after {seconds:.0f} s (killed)"}
            ready, _, _ = select.select([stream], [], [], remaining)
            if ready:
                chunk = os.read(stream, 1 << 16)
                if not chunk:
                    return self._died()
                self.buffer += chunk

    def _died(self) -> dict:
        assert self.process is not None
        code = self.process.wait()
        self.process = None
        self.restarts += 1
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return {"crash": f"the process died ({how})"}


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    process = Worker()
    yield process
    process.close()


def _limit_worker() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def problem_with(reply: dict) -> str | None:
    """None when the CLI answered as it must; else what went wrong."""
    if "crash" in reply:
        return reply["crash"]
    if "harness_error" in reply:
        return f"escaped CliRunner: {reply['harness_error']}"
    if reply["exception"] is not None:
        return f"exception escaped: {reply['exception']}"
    code, stdout, stderr = reply["exit_code"], reply["stdout"], reply["stderr"]
    if code not in (0, 1, 2, 3):
        return f"exit code {code}"
    if "internal error" in stderr:
        return next(line for line in stderr.splitlines() if "internal error" in line)[:300]
    if "Traceback" in stdout + stderr:
        return "a traceback was printed"
    if code == 2:
        errors = [line for line in stderr.splitlines() if line.startswith("lipaudit: error:")]
        if len(errors) != 1:
            return f"exit 2 with {len(errors)} error lines: {stderr[:300]!r}"
        others = [line for line in stderr.splitlines() if line.strip() and not line.startswith("lipaudit:")]
        if len(others) > 1:
            return f"more than one line besides the error: {stderr[:300]!r}"
        return None
    try:
        report = json.loads(stdout)
    except ValueError:
        return f"exit {code} without a JSON report: {stdout[:200]!r}"
    network = report.get("network", {})
    if network.get("certified") and network.get("upper_bound") is None:
        return "certified without a figure"
    return None


def _check(worker: Worker, mutant: Mutant, directory: Path, seconds: float) -> tuple[Path, dict]:
    path = directory / f"mutant{mutant.suffix}"
    path.write_bytes(mutant.data)
    args = ["check", str(path), "-f", "json", "--color", "never", *mutant.flags]
    return path, worker.ask({"kind": "check", "args": args}, seconds)


def run_mutants(
    worker: Worker, mutants, directory: Path, *, seconds: float = PER_MUTANT_SECONDS
) -> tuple[list[str], int, float]:
    failures: list[str] = []
    count = 0
    started = time.perf_counter()
    for mutant in mutants:
        count += 1
        _, reply = _check(worker, mutant, directory, seconds)
        problem = problem_with(reply)
        if problem is not None:
            failures.append(f"{mutant.label} [{' '.join(mutant.flags)}]: {problem}")
    return failures, count, time.perf_counter() - started


def _summary(failures: list[str], count: int, elapsed: float) -> str:
    shown = "\n".join(failures[:25])
    return f"{len(failures)} of {count} mutants misbehaved ({elapsed:.1f} s):\n{shown}"


def test_every_base_model_gets_a_report(worker: Worker, tmp_path: Path) -> None:
    """The unmutated bases themselves: each must be accepted cleanly (a report or a clean verdict)."""
    mutants = [Mutant(f"base {name}", data) for name, data in _base_models().items()]
    mutants.append(Mutant("base torchscript", small_torchscript(), ".pt"))
    failures, count, elapsed = run_mutants(worker, mutants, tmp_path)
    assert not failures, _summary(failures, count, elapsed)


def test_mutants_get_a_report_or_one_clean_error(worker: Worker, tmp_path: Path) -> None:
    mutants = list(make_mutants(DEFAULT_MUTANTS, seed=20240901))
    mutants += list(torchscript_byte_mutants(8, seed=7))
    failures, count, elapsed = run_mutants(worker, mutants, tmp_path)
    assert not failures, _summary(failures, count, elapsed)


@pytest.mark.slow
def test_many_more_mutants(worker: Worker, tmp_path: Path) -> None:
    mutants = list(make_mutants(SLOW_MUTANTS, seed=1))
    mutants += list(torchscript_byte_mutants(40, seed=11))
    mutants += list(torchscript_byte_mutants(10, seed=12, data=(SAMPLES / "cnn_torchscript.pt").read_bytes()))
    mutants += [
        Mutant("full-size cnn.onnx", (SAMPLES / "cnn.onnx").read_bytes()),
        Mutant("full-size cnn_torchscript.pt", (SAMPLES / "cnn_torchscript.pt").read_bytes(), ".pt"),
    ]
    failures, count, elapsed = run_mutants(worker, mutants, tmp_path, seconds=120)
    assert not failures, _summary(failures, count, elapsed)


def figures_below_measured_slopes(worker: Worker, mutants, directory: Path) -> tuple[list[str], int]:
    """Mutants whose reported upper bound sits below a slope onnxruntime shows (0.1 % slack)."""
    failures, checked = [], 0
    for index, mutant in enumerate(mutants):
        path, reply = _check(worker, mutant, directory, PER_MUTANT_SECONDS)
        if reply.get("exit_code") not in (0, 1) or problem_with(reply) is not None:
            continue  # run_mutants reports those; here only figures count
        upper = json.loads(reply["stdout"])["network"]["upper_bound"]
        if upper is None:
            continue
        slope = worker.ask({"kind": "slope", "path": str(path), "seed": index}, PER_MUTANT_SECONDS).get("slope")
        if slope is None:
            continue
        checked += 1
        if upper < slope * (1 - 1e-3):
            failures.append(f"{mutant.label} [{' '.join(mutant.flags)}]: bound {upper:.6g} < measured {slope:.6g}")
    return failures, checked


SLOPE_BASES = ("layer_norm", "mlp", "pool_chain", "residual_mlp", "resize_pad", "subgraph_if", "unbounded")


def test_mutant_figures_stay_above_measured_slopes(worker: Worker, tmp_path: Path) -> None:
    mutants = [m for m in make_mutants(140, seed=424242) if m.label.split(":")[0].split()[1] in SLOPE_BASES]
    failures, checked = figures_below_measured_slopes(worker, mutants, tmp_path)
    assert checked > 20, f"only {checked} mutants had a figure to check"
    assert not failures, f"{len(failures)} of {checked} figures below a measured slope:\n" + "\n".join(failures[:25])


@pytest.mark.slow
def test_many_mutant_figures_stay_above_measured_slopes(worker: Worker, tmp_path: Path) -> None:
    failures, checked = figures_below_measured_slopes(worker, list(make_mutants(1200, seed=99)), tmp_path)
    assert not failures, f"{len(failures)} of {checked} figures below a measured slope:\n" + "\n".join(failures[:25])


def test_a_crashing_mutant_does_not_take_the_session_down(worker: Worker, tmp_path: Path) -> None:
    """The harness itself: a worker killed mid-request is reported and replaced."""
    assert worker.ask({"kind": "check", "args": ["--version"]}, WORKER_START_SECONDS).get("exit_code") == 0
    assert worker.process is not None
    worker.process.kill()
    reply = worker.ask({"kind": "check", "args": ["--version"]}, 10)
    assert "crash" in reply
    assert worker.ask({"kind": "check", "args": ["--version"]}, WORKER_START_SECONDS).get("exit_code") == 0


def test_mutation_is_deterministic() -> None:
    first = [(m.label, m.data, m.flags) for m in make_mutants(30, seed=5)]
    second = [(m.label, m.data, m.flags) for m in make_mutants(30, seed=5)]
    assert first == second
    assert [m.data for m in torchscript_byte_mutants(5, seed=3)] == [
        m.data for m in torchscript_byte_mutants(5, seed=3)
    ]


# ----------------------------------------------------------------------------- the 10⁹-element guard


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY, SUBPROCESS_MEMORY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _run_guarded(path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lipaudit", "check", str(path), "-f", "json", "--color", "never", *args]
    env = {**os.environ, "LIPAUDIT_DEBUG": "0", "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS, preexec_fn=_limit_child, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"lipaudit check {path.name} {' '.join(args)} ran past {SUBPROCESS_SECONDS} s")


def _huge_cases(directory: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    relu = model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [("x", FLOAT, [1, 1000, 1000, 1000])],
        [("y", FLOAT, [1, 1000, 1000, 1000])],
    )
    cnn = _fixed_dims(onnx.load(str(SAMPLES / "cnn.onnx")), {2: 31623, 3: 31623})
    expand = model(
        [helper.make_node("Expand", ["x", "shape"], ["y"])],
        [("x", FLOAT, [1, 1])],
        [("y", FLOAT, [1, 10**9])],
        {"shape": np.array([1, 10**9], np.int64)},
    )
    resize = model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
        [("x", FLOAT, [1, 1, 4, 4])],
        [("y", FLOAT, ["n", "c", "h", "w"])],
        {"scales": np.array([1, 1, 10000, 10000], np.float32)},
    )
    return {
        "relu_1e9_input": (save(relu, directory, "relu.onnx"), ()),
        "cnn_3e9_input": (save(cnn, directory, "cnn.onnx"), ()),
        "mlp_1e9_batch": (SAMPLES / "mlp.onnx", ("-s", "x=62500000x16")),
        "expand_to_1e9": (save(expand, directory, "expand.onnx"), ()),
        "resize_to_1.6e9": (save(resize, directory, "resize.onnx"), ()),
    }


GUARD_DEFAULT = ["relu_1e9_input", "cnn_3e9_input"]
GUARD_SLOW = ["mlp_1e9_batch", "expand_to_1e9", "resize_to_1.6e9"]


def _assert_guarded(name: str, directory: Path) -> None:
    path, args = _huge_cases(directory)[name]
    done = _run_guarded(path, *args)
    assert done.returncode in (0, 1, 2, 3), (done.returncode, done.stderr[-500:])
    assert "internal error" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-800:]
    if done.returncode == 2:
        errors = [line for line in done.stderr.splitlines() if line.startswith("lipaudit: error:")]
        assert len(errors) == 1, done.stderr
    else:
        json.loads(done.stdout)


@pytest.mark.parametrize("name", GUARD_DEFAULT)
def test_a_billion_element_shape_gives_a_clean_answer(tmp_path: Path, name: str) -> None:
    _assert_guarded(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", GUARD_SLOW)
def test_more_billion_element_shapes(tmp_path: Path, name: str) -> None:
    _assert_guarded(name, tmp_path)
