"""TorchScript files (``torch.jit.save`` of a scripted or traced module) → IR.

The module's inlined forward graph is interpreted node by node: ``prim::`` nodes (constants,
attributes, lists, ``if`` and loops) and scalar arithmetic in Python, aten ops through
``TorchGraphBuilder.call``, which runs each one on the probe input and emits its IR. Weights are
reached through ``prim::GetAttr`` chains, so they and the layers are named by module path
(``layer1.0.conv1``). Conv settings come from the graph's constants, which traced graphs keep too.
The module is put in eval mode first, as ``torch.onnx.export`` does.
"""

from __future__ import annotations

import io
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import InputShapeError, ModelLoadError
from ..ir import Graph
from ..shapes import UNNAMED, resolve_input_shapes
from . import aten_composites  # noqa: F401 (its converters join CONVERTERS)
from .aten_ops import CONVERTERS
from .naming import layer_name
from .probe import RuntimeProbe
from .torch_files import quiet_torch
from .torch_graph import TorchGraphBuilder, Tracked, first_line

# TorchScript passes dtypes as ScalarType codes (c10/core/ScalarType.h order).
SCALAR_TYPES = [
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.float32,
    torch.float64,
    torch.complex32,
    torch.complex64,
    torch.complex128,
    torch.bool,
    torch.qint8,
    torch.quint8,
    torch.qint32,
    torch.bfloat16,
]

# Scalar and list ops of scripted code, whose generic schemas torch.ops cannot call from Python.
_PY_OPS: dict[str, Callable[..., Any]] = {
    "__getitem__": operator.getitem,
    "len": len,
    "__is__": operator.is_,
    "__isnot__": operator.is_not,
    "__not__": operator.not_,
    "__and__": operator.and_,
    "__or__": operator.or_,
    "__contains__": lambda c, k: k in c,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "gt": operator.gt,
    "le": operator.le,
    "ge": operator.ge,
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "neg": operator.neg,
    "floordiv": operator.floordiv,
    "remainder": operator.mod,
    "pow": operator.pow,
    "min": min,
    "max": max,
    "Int": int,
    "Float": float,
    "Bool": bool,
    "str": str,
    "list": list,
    "format": lambda s, *args: s.format(*args),
    "append": lambda items, item: items.append(item) or items,
    "extend": lambda items, more: items.extend(more),
    "slice": lambda items, start, end, step: items[start:end:step],
    "warn": lambda *args: None,
    "_set_item": lambda items, key, value: items.__setitem__(key, value) or items,
    "__range_length": lambda lo, hi, step: len(range(lo, hi, step)),
    "__derive_index": lambda index, start, step: start + index * step,
    # Report grad mode as on, so modules with a fused inference path (nn.TransformerEncoderLayer)
    # take their op-by-op path, as torch.onnx.export does.
    "is_grad_enabled": lambda: True,
    "keys": lambda d: list(d.keys()),
    "values": lambda d: list(d.values()),
    "all": all,
    "any": any,
}
_HIERARCHY_ENTRY = re.compile(r"([^.()]+)\(([^()]*)\)")
_LOOP_LIMIT = 1_000_000


class _ModuleRef:
    """A submodule reached by prim::GetAttr, with its path from the root."""

    def __init__(self, module: Any, path: str) -> None:
        self.module, self.path = module, path


def _declared_inputs(module: Any, graph: torch._C.Graph) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Tensor inputs with their types, and the other arguments of forward() with their defaults."""
    names, types, defaults = [], {}, {}
    for arg, value in zip(module.forward.schema.arguments[1:], list(graph.inputs())[1:]):
        kind = value.type()
        if isinstance(kind, torch.TensorType):
            names.append(arg.name)
            types[arg.name] = kind
        elif arg.has_default_value():
            defaults[arg.name] = arg.default_value
        else:
            raise ModelLoadError(
                f"forward() takes '{arg.name}' of type {kind} with no default; lipaudit feeds tensors only",
                hint="save a wrapper module whose forward takes tensors only",
            )
    return names, types, defaults


def _input_shapes(
    names: list[str], types: dict[str, Any], given: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    declared: dict[str, list[int | str | None]] = {}
    for name in names:
        sizes = types[name].sizes()
        if sizes is not None:
            declared[name] = list(sizes)
            continue
        shape = given.get(name, given.get(UNNAMED) if len(names) == 1 else None)
        if shape is None:
            raise InputShapeError(
                f"input '{name}' has no recorded shape (scripted modules keep none, nor do "
                "traced ones saved without their example inputs)",
                hint=f"pass --input-shape {name}=1x3x32x32, the shape you would feed it",
            )
        declared[name] = [None] * len(shape)
    return resolve_input_shapes(declared, given)


def _node_name(node: torch._C.Node, short: str) -> str:
    entries = [
        (name, kind)
        for name, kind in _HIERARCHY_ENTRY.findall(node.getModuleHierarchy())
        if name not in ("SELF", "UNKNOWN_INSTANCE")
    ]
    path = ".".join(name for name, _ in entries)
    return layer_name(path, entries[-1][1] if entries else "", short)


def _is_tensor_op(schema: torch._C.FunctionSchema) -> bool:
    return any("Tensor" in str(arg.type) for arg in schema.arguments)


class _Interpreter:
    def __init__(self, builder: TorchGraphBuilder) -> None:
        self.builder = builder
        self.env: dict[int, Any] = {}

    def get(self, value: torch._C.Value) -> Any:
        return self.env[value.unique()]

    def run_block(self, block: Any, inputs: list[Any]) -> list[Any]:
        for value, item in zip(block.inputs(), inputs):
            self.env[value.unique()] = item
        for node in block.nodes():
            self.run_node(node)
        return [self.get(value) for value in block.outputs()]

    def run_node(self, node: torch._C.Node) -> None:
        kind = node.kind()
        args = [self.get(value) for value in node.inputs()]
        if kind.startswith("prim::"):
            results = self.prim(node, kind, args)
        elif kind.startswith("aten::"):
            results = [self.aten(node, args)]
        else:
            raise ModelLoadError(
                f"{kind} in the TorchScript graph is not supported",
                hint="script or trace the model with standard torch ops only",
            )
        outputs = list(node.outputs())
        if len(outputs) > 1 and len(results) == 1:
            results = list(results[0])
        for value, result in zip(outputs, results):
            self.env[value.unique()] = result

    def prim(self, node: torch._C.Node, kind: str, args: list[Any]) -> list[Any]:
        name = kind.split("::", 1)[1]
        if name == "Constant":
            value = node.output().toIValue()
            if isinstance(value, torch.Tensor):
                return [self.builder.constant(value, node.output().debugName())]
            return [value]
        if name == "GetAttr":
            return [self.get_attr(args[0], node.s("name"))]
        if name == "If":
            return self.run_block(list(node.blocks())[0 if args[0] else 1], [])
        if name == "Loop":
            return self.loop(node, args)
        if name == "RaiseException":
            raise ModelLoadError(
                f"the model raised an exception on a probe input: {args[0]}",
                hint="check --input-shape against what the model expects",
            )
        simple: dict[str, Callable[[list[Any]], list[Any]]] = {
            "ListConstruct": lambda a: [list(a)],
            "TupleConstruct": lambda a: [tuple(a)],
            "DictConstruct": lambda a: [dict(zip(a[::2], a[1::2]))],
            "ListUnpack": lambda a: list(a[0]),
            "TupleUnpack": lambda a: list(a[0]),
            "TupleIndex": lambda a: [a[0][a[1]]],
            "unchecked_cast": lambda a: [a[0]],
            "Uninitialized": lambda a: [None],
            "device": lambda a: [torch.device("cpu")],
            "type": lambda a: [a[0].type],
            "dtype": lambda a: [SCALAR_TYPES.index(a[0].tensor.dtype)],
            "layout": lambda a: [0],  # torch.strided, as TorchScript numbers layouts (torch.norm asks)
            "NumToTensor": lambda a: [self.builder.constant(torch.tensor(a[0]), "num")],
            "min": lambda a: [min(*a) if len(a) > 1 else min(a[0])],
            "max": lambda a: [max(*a) if len(a) > 1 else max(a[0])],
        }
        if name.startswith("is_") or name == "requires_grad":  # tensor properties: is_cuda, is_nested…
            tensor = args[0].tensor if isinstance(args[0], Tracked) else args[0]
            return [bool(getattr(tensor, name))]
        if name not in simple:
            raise ModelLoadError(
                f"{kind} in the TorchScript graph is not supported",
                hint="script or trace the model with standard torch ops only",
            )
        return simple[name](args)

    def get_attr(self, owner: Any, attr: str) -> Any:
        if not isinstance(owner, _ModuleRef):
            raise ModelLoadError(f"prim::GetAttr '{attr}' on something that is not a module")
        value = getattr(owner.module, attr)
        path = f"{owner.path}.{attr}" if owner.path else attr
        if isinstance(value, torch.jit.ScriptModule):
            return _ModuleRef(value, path)
        if isinstance(value, torch.Tensor):
            return self.builder.constant(value, path, owner=owner.path)
        return value

    def loop(self, node: torch._C.Node, args: list[Any]) -> list[Any]:
        trip_count, condition, carried = args[0], args[1], list(args[2:])
        block, index = next(iter(node.blocks())), 0
        while condition and index < trip_count:
            if index >= _LOOP_LIMIT:
                raise ModelLoadError(f"a loop in the TorchScript graph ran over {_LOOP_LIMIT} times")
            condition, *carried = self.run_block(block, [index, *carried])
            index += 1
        return carried

    def aten(self, node: torch._C.Node, args: list[Any]) -> Any:
        if node.schema() == "(no schema)":
            raise ModelLoadError(
                f"{node.kind()} in the TorchScript graph has no schema, so it cannot be run",
                hint="script or trace the model with standard torch ops only",
            )
        schema = torch._C.parse_schema(node.schema())
        short = schema.name.split("::", 1)[1]
        if short == "tensor" and not any(isinstance(arg, Tracked) for arg in args):
            # torch.tensor of a Python list (scripted x[:, [0, 2]]): its generic schema (t[] data)
            # cannot be called through torch.ops; the list holds numbers, so the tensor is a constant
            dtype = args[1] if len(args) > 1 else None
            tensor = torch.tensor(args[0], dtype=SCALAR_TYPES[dtype] if isinstance(dtype, int) else dtype)
            return self.builder.constant(tensor, _node_name(node, "tensor"))
        if not _is_tensor_op(schema) and short in _PY_OPS:
            try:
                return _PY_OPS[short](*args)
            except Exception as error:  # the scripted code's own checks (an index out of range…)
                raise ModelLoadError(
                    f"{schema.name} failed on a probe input: {first_line(error)}",
                    hint="check --input-shape against what the model expects",
                ) from error
        mutates = short.endswith("_") and not short.startswith("_")
        functional = short[:-1] if mutates else short
        try:
            op = getattr(getattr(torch.ops.aten, functional), schema.overload_name or "default")
        except (AttributeError, RuntimeError) as error:
            raise ModelLoadError(
                f"{schema.name} in the TorchScript graph cannot be evaluated",
                hint="script or trace the model with standard torch ops only",
            ) from error
        positional = [value for arg, value in zip(schema.arguments, args) if not arg.kwarg_only]
        keywords = {arg.name: value for arg, value in zip(schema.arguments, args) if arg.kwarg_only}
        keywords = {k: (SCALAR_TYPES[v] if k == "dtype" and isinstance(v, int) else v) for k, v in keywords.items()}
        result = self.builder.call(
            op,
            op._schema,
            positional,
            keywords,
            node_name=_node_name(node, functional),
            value_names=[v.debugName() for v in node.outputs()],
            mutates=mutates,
        )
        if mutates and isinstance(args[0], Tracked):
            self.env[node.inputsAt(0).unique()] = result
        return result


# Ops whose argument at this position holds indices: an input a scripted module reads there is an
# integer tensor (torch.jit.script keeps no dtype for its inputs, torch.jit.trace does).
_INDEX_ARGUMENTS = {"aten::embedding": 1, "aten::embedding_bag": 1, "aten::one_hot": 0}


def _undeclared_dtype(value: Any) -> torch.dtype:
    """The dtype of an input the archive does not declare: int64 where an op reads it as indices,
    else float32."""
    for use in value.uses():
        if _INDEX_ARGUMENTS.get(use.user.kind()) == use.offset:
            return torch.int64
    return torch.float32


def load_torchscript(
    data: bytes, path: Path, input_shapes: dict[str, tuple[int, ...]], traced_inputs: bool, seed: int = 0
) -> tuple[Graph, Any, RuntimeProbe]:
    """The IR, and the loaded ScriptModule (in eval mode) it was read from."""
    with quiet_torch():
        try:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _restore_shapes=traced_inputs)
        except Exception as error:  # the TorchScript importer raises RuntimeError for most problems
            raise ModelLoadError(
                f"{path} is not a readable TorchScript archive ({first_line(error)})",
                hint="save it again with torch.jit.save",
            ) from error
        module.eval()
        graph = module.inlined_graph
        names, types, defaults = _declared_inputs(module, graph)
        shapes = _input_shapes(names, types, input_shapes)
        builder = TorchGraphBuilder(CONVERTERS, seed)
        interpreter = _Interpreter(builder)
        graph_inputs = list(graph.inputs())
        interpreter.env[graph_inputs[0].unique()] = _ModuleRef(module, "")
        for arg, value in zip(module.forward.schema.arguments[1:], graph_inputs[1:]):
            if arg.name in defaults:
                interpreter.env[value.unique()] = defaults[arg.name]
            else:
                dtype = types[arg.name].dtype() or _undeclared_dtype(value)
                interpreter.env[value.unique()] = builder.input(arg.name, shapes[arg.name], dtype)
        with torch.no_grad():
            outputs = interpreter.run_block(graph, [])
    kind = "traced" if traced_inputs else "scripted"
    graph = builder.finish(outputs, "torchscript", {"producer": f"torch {torch.__version__} ({kind})"})
    with quiet_torch():
        return graph, module, builder.probe(module)
