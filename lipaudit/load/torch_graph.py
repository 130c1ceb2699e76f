"""Shared by the TorchScript and torch.export loaders: run each aten op once, emit the IR it maps to.

Every op is run for real on a probe input (seeded normal values; zeros for integer inputs). That
records the value of every IR value for the faithfulness check, gives the shape of every
value (the rules need them), settles the size arithmetic and the `if`s of scripted code, and turns
ops on constants alone into constants, as ONNX constant folding would. A tensor is *variable* when
it depends on the network input; an op with a variable input becomes IR nodes through the
converters in ``aten_ops``, or, with no converter, a node of op type ``aten::name`` that the report
lists as unsupported. Scalars or branches that read the input's *values* are refused: the graph
would not be one fixed function of its input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from ..ir import Graph, Node, Value
from .probe import RuntimeProbe

OPSET = 17  # the IR follows ONNX opset 17 conventions (attributes vs inputs)
PROBE_HINT = "check --input-shape against what the model expects"

# Ops whose non-tensor result depends only on the input's shape, never its values.
SHAPE_QUERIES = frozenset(
    {
        "size",
        "sym_size",
        "dim",
        "numel",
        "sym_numel",
        "len",
        "is_floating_point",
        "is_complex",
        "stride",
        "sym_stride",
        "is_contiguous",
        "sym_storage_offset",
    }
)
# Ops whose tensor result depends only on the input's shape (and dtype).
SHAPE_ONLY = frozenset(
    {
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "_shape_as_tensor",
    }
)
# Ops whose output's shape depends on their input's values (the ONNX side's NonZero, Compress,
# Unique): a size read from it, or from anything computed from it, is a count of data, never a
# constant (passes/data_shapes.py decides the same for ONNX graphs).
DATA_SHAPED = frozenset(
    {
        "nonzero",
        "nonzero_numpy",
        "argwhere",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "unique_dim_consecutive",
        "repeat_interleave",
        "where",  # its one-argument form is nonzero
    }
)
# Ops that draw random numbers (their in-place forms end in "_"): their value is a draw, not a
# constant to fold once at load, nor a function of the input; they stay in the graph, unsupported.
RANDOM_OPS = frozenset(
    {
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
        "normal",
        "uniform",
        "exponential",
        "bernoulli",
        "multinomial",
        "poisson",
        "cauchy",
        "log_normal",
        "geometric",
        "random",
        "rrelu_with_noise",
    }
)
# Ops whose result shares memory with their first input: an in-place write to it changes the input.
VIEW_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "flatten",
        "unflatten",
        "select",
        "slice",
        "narrow",
        "transpose",
        "permute",
        "t",
        "squeeze",
        "unsqueeze",
        "expand",
        "expand_as",
        "as_strided",
        "diagonal",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "detach",
        "alias",
        "view_as",
        "contiguous",
        "numpy_T",
    }
)


@dataclass(eq=False)
class Tracked:
    """A tensor met while walking the graph: its IR name, its value at the probe input, and whether
    it depends on the network input."""

    name: str
    tensor: torch.Tensor
    variable: bool
    view_of: Tracked | None = None
    stale: bool = False  # an in-place write through a view changed it after it was read
    owner: str | None = None  # for a parameter or buffer: the path of the module holding it
    data_shaped: bool = False  # its shape depends on the input's values (DATA_SHAPED upstream)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


class Unmappable(Exception):
    """The op has no IR equivalent in this configuration; it becomes an unsupported node."""


def bind(schema: torch._C.FunctionSchema, args: list, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by their schema names, defaults filled in."""
    positional = [arg for arg in schema.arguments if not arg.kwarg_only]
    bound = {arg.name: value for arg, value in zip(positional, args)}
    for arg in schema.arguments:
        if arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.name not in bound and arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in flatten(item)]
    return [value]


def concrete(value: Any) -> Any:
    """Tracked values replaced by their probe tensors, inside lists, tuples and dicts too."""
    if isinstance(value, Tracked):
        return value.tensor
    if isinstance(value, (list, tuple)):
        return type(value)(concrete(item) for item in value)
    if isinstance(value, dict):
        return {key: concrete(item) for key, item in value.items()}
    return value


# torch dtypes as ONNX TensorProto element types.
ONNX_TYPES = {
    torch.float32: 1,
    torch.uint8: 2,
    torch.int8: 3,
    torch.int16: 5,
    torch.int32: 6,
    torch.int64: 7,
    torch.bool: 9,
    torch.float16: 10,
    torch.float64: 11,
    torch.bfloat16: 16,
}


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


Converter = Callable[["Emitter", dict[str, Any], list[Tracked]], None]


class TorchGraphBuilder:
    """Collects IR nodes and values while a loader walks a torch graph.

    ``converters`` maps aten op names to the functions that emit their IR (aten_ops.CONVERTERS);
    the loaders pass it in, as fvcore passes its op handles.
    """

    def __init__(self, converters: dict[str, Converter], seed: int = 0) -> None:
        self.converters = converters
        self.rng = np.random.default_rng(seed)
        self.feeds: dict[str, np.ndarray] = {}
        self.input_dtypes: dict[str, torch.dtype] = {}  # numpy has no bfloat16: its feed is float32
        self.recorded: dict[str, torch.Tensor] = {}  # every variable value, as the aten ops computed it
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = {}
        self.inputs: list[str] = []
        self._value_names: set[str] = set()
        self._node_names: set[str] = set()
        self._params: dict[int, Tracked] = {}
        # Ops that turned the input's values into Python values (a branch, a size): (op, inputs read).
        self.data_reads: list[tuple[str, list[str]]] = []

    @staticmethod
    def _unique(hint: str, taken: set[str]) -> str:
        name, k = hint, 0
        while name in taken or not name:
            k += 1
            name = f"{hint}_{k}"
        taken.add(name)
        return name

    def reserve(self, hint: str) -> str:
        return self._unique(hint or "v", self._value_names)

    def node_name(self, hint: str) -> str:
        return self._unique(hint or "node", self._node_names)

    def input(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tracked:
        if dtype.is_floating_point:
            probe = torch.from_numpy(self.rng.standard_normal(shape)).to(dtype)
        else:
            probe = torch.zeros(shape, dtype=dtype)
        tracked = Tracked(self.reserve(name), probe, True)
        self.values[tracked.name] = Value(tracked.name, tracked.shape)
        self.inputs.append(tracked.name)
        self.feeds[tracked.name] = to_numpy(probe)
        self.input_dtypes[tracked.name] = dtype
        return tracked

    def constant(self, tensor: torch.Tensor, hint: str, owner: str | None = None) -> Tracked:
        """A constant tensor; a parameter (``owner`` set) met twice keeps its first name, its module path."""
        if owner is None:
            return Tracked(self.reserve(hint), tensor.detach(), False)
        key = id(tensor)
        if key not in self._params:
            probe = tensor.detach().requires_grad_(tensor.requires_grad)  # scripted code may ask
            self._params[key] = Tracked(self.reserve(hint), probe, False, owner=owner)
        return self._params[key]

    def ir_name(self, tracked: Tracked) -> str:
        """The IR name of a tracked tensor, registering a constant's content on first use."""
        if not tracked.variable and tracked.name not in self.values:
            array = to_numpy(tracked.tensor)
            self.values[tracked.name] = Value(tracked.name, tuple(array.shape), array)
        return tracked.name

    def call(
        self,
        op: Callable,
        schema: torch._C.FunctionSchema,
        args: list,
        kwargs: dict[str, Any],
        *,
        node_name: str,
        value_names: list[str],
        mutates: bool = False,
    ) -> Any:
        """Run ``op`` on the probe values and emit IR for it; returns the result with tensors tracked.

        ``op`` is the functional form: for an in-place op the caller rebinds its first input to the result.
        """
        namespace, _, short = schema.name.partition("::")
        bound = bind(schema, args, kwargs)
        tracked_in = [t for t in flatten(list(bound.values())) if isinstance(t, Tracked)]
        for tracked in tracked_in:
            if _is_stale(tracked):
                raise ModelLoadError(
                    f"{schema.name} reads '{tracked.name}' after an in-place write changed it "
                    "through a view, which lipaudit cannot follow",
                    hint="replace the in-place op with its out-of-place form and save again",
                )
        random = short.rstrip("_") in RANDOM_OPS
        # a draw is not a constant: kept in the graph (where it has no rule), never folded
        variable = random or any(t.variable for t in tracked_in)
        owners = [t.owner for t in tracked_in if t.owner]
        node_name = owners[0] if owners else node_name  # the layer whose weights it reads
        try:
            result = op(*concrete(args), **concrete(kwargs))
        except Exception as error:  # any op may refuse a shape
            raise ModelLoadError(
                f"{schema.name} failed on a probe input: {first_line(error)}", hint=PROBE_HINT
            ) from error
        if mutates and tracked_in and tracked_in[0].variable:
            base = tracked_in[0].view_of
            while base is not None:
                base.stale, base = True, base.view_of
        data_shaped = any(t.data_shaped for t in tracked_in) or (variable and _shapes_data(short, bound))
        if not any(isinstance(leaf, torch.Tensor) for leaf in flatten(result)):
            # a size of a data-shaped value is a count of data, not a fact of the input's shape
            reads_data = short not in SHAPE_QUERIES or data_shaped
            if variable and reads_data and result is not None:  # None: an assertion
                # The walk goes on along the probe's branch; finish() marks every output as
                # depending on this read, so the report says why there is no figure.
                self.data_reads.append((schema.name, [t.name for t in tracked_in if t.variable]))
            return result
        names = iter(value_names)
        hint = value_names[0] if value_names else short
        outs: list[Tracked] = []
        view_of = tracked_in[0] if short in VIEW_OPS and tracked_in and tracked_in[0].variable else None

        def wrap(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                name = self.reserve(next(names, f"{hint}_{len(outs)}"))
                keep = variable and (short not in SHAPE_ONLY or data_shaped)
                tracked = Tracked(name, value, keep, view_of if keep else None, data_shaped=keep and data_shaped)
                if keep:
                    self.values[name] = Value(name, tracked.shape)
                    self.recorded[name] = value.detach()
                    outs.append(tracked)
                return tracked
            if isinstance(value, (list, tuple)):
                return type(value)(wrap(item) for item in value)
            return value

        wrapped = wrap(result)
        if outs:
            self._convert(namespace, short, bound, tracked_in, outs, node_name)
        return wrapped

    def _convert(
        self,
        namespace: str,
        short: str,
        bound: dict[str, Any],
        tracked_in: list[Tracked],
        outs: list[Tracked],
        node_name: str,
    ) -> None:
        emitter = Emitter(self, node_name)
        converter = self.converters.get(short) if namespace == "aten" else None
        reason = ""
        try:
            if short.rstrip("_") in RANDOM_OPS:
                raise Unmappable(f"{namespace}::{short} draws random numbers: its output is no function of the input")
            if converter is None:
                raise Unmappable("")
            converter(emitter, {**bound, "__op__": short}, outs)
        except Unmappable as why:
            emitter.nodes.clear()
            reason = str(why)
        except (KeyError, TypeError, ValueError, IndexError) as error:  # an overload the converter does not know
            emitter.nodes.clear()
            reason = f"could not map {namespace}::{short}: {type(error).__name__}: {error}"
        produced = {name for node in emitter.nodes for name in node.outputs}
        missing = [out.name for out in outs if out.name not in produced]
        if missing:
            inputs = [self.ir_name(t) for t in tracked_in]
            notes = [reason] if reason else []
            emitter.nodes.append(Node(node_name, f"{namespace}::{short}", tuple(inputs), tuple(missing), notes=notes))
        for node in emitter.nodes:
            node.name = self.node_name(node.name)
            self.nodes.append(node)

    def finish(self, outputs: list[Any], fmt: str, metadata: dict[str, Any]) -> Graph:
        tensors = [t for t in flatten(outputs) if isinstance(t, Tracked)]
        for tracked in tensors:
            if _is_stale(tracked):
                raise ModelLoadError(
                    f"output '{tracked.name}' was changed by an in-place write through a view, "
                    "which lipaudit cannot follow",
                    hint="replace the in-place op with its out-of-place form and save again",
                )
        names = list(dict.fromkeys(t.name for t in tensors if t.variable))
        if not names:
            raise ModelLoadError(
                "no output of the model depends on its input",
                hint="check that the saved module is the network you meant",
            )
        if self.data_reads:
            names = [self._data_dependent(name) for name in names]
        typed = {**{name: t.dtype for name, t in self.recorded.items()}, **self.input_dtypes}
        # The element types, as ONNX shape inference gives them for the ONNX path (a Cast's rule reads them).
        metadata = {**metadata, "elem_types": {n: ONNX_TYPES[d] for n, d in typed.items() if d in ONNX_TYPES}}
        graph = Graph(self.nodes, self.values, self.inputs, names, opset=OPSET, format=fmt, metadata=metadata)
        graph.remove_unused()
        return graph

    def _data_dependent(self, output: str) -> str:
        """``output`` through an unsupported node that reads what the first value-to-Python op read:
        the graph walked is the probe's branch only, so it stands for the model on no other input."""
        op, read = self.data_reads[0]
        reason = (
            f"{op} turns the input's values into a Python value (a branch or a size chosen by the data), "
            "so the network is not one fixed graph of its input; export it without data-dependent control flow"
        )
        if op.partition("::")[2] in SHAPE_QUERIES:
            reason = (
                f"{op} reads the size of a value whose shape the input's values choose (nonzero, masked "
                "indexing, unique): a count of data is a step function of the input, not Lipschitz"
            )
        name = self.reserve(f"{output}_data_dependent")
        self.values[name] = Value(name, self.values[output].shape)
        self.recorded[name] = self.recorded[output]
        inputs = (output, *[r for r in read if r != output])
        self.nodes.append(Node(self.node_name("data_dependent"), op, inputs, (name,), notes=[reason]))
        return name

    def probe(self, module: Callable[..., Any]) -> RuntimeProbe:
        """What the aten ops computed on the probe input, and what ``module`` itself returns on it."""
        values = {name: to_numpy(tensor) for name, tensor in self.recorded.items()}
        with torch.no_grad():
            result = module(*[torch.from_numpy(self.feeds[name]).to(self.input_dtypes[name]) for name in self.inputs])
        outputs = [to_numpy(t) for t in flatten(result) if isinstance(t, torch.Tensor)]
        coarse = any(dtype == torch.bfloat16 for dtype in self.input_dtypes.values())
        return RuntimeProbe("torch", dict(self.feeds), values, outputs, rounding=2.0**-8 if coarse else 0.0)


def _shapes_data(short: str, bound: dict[str, Any]) -> bool:
    """Whether this op on a variable input gives an output whose shape its values choose: a
    DATA_SHAPED op, or indexing by a variable boolean mask (x[x > 0])."""
    if short == "where":
        return len([v for v in bound.values() if v is not None]) == 1
    if short == "repeat_interleave":  # by counts read from the data
        return any(isinstance(t, Tracked) and t.variable for t in (bound.get("repeats"),))
    if short in DATA_SHAPED:
        return True
    if short == "index":
        masks = [t for t in flatten(bound.get("indices", [])) if isinstance(t, Tracked)]
        return any(t.variable and t.tensor.dtype in (torch.bool, torch.uint8) for t in masks)
    return False


def _is_stale(tracked: Tracked) -> bool:
    node: Tracked | None = tracked
    while node is not None:
        if node.stale:
            return True
        node = node.view_of
    return False


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Emitter:
    """What a converter writes with: IR names for operands, new constants, and nodes."""

    def __init__(self, builder: TorchGraphBuilder, name: str) -> None:
        self.builder = builder
        self.name = name
        self.nodes: list[Node] = []

    def x(self, value: Any, like: Tracked | None = None) -> str:
        """The IR name of an operand: a tracked tensor, None (a missing input), or a Python number."""
        if value is None:
            return ""
        if isinstance(value, Tracked):
            if like is not None and not value.variable and _scalar_cast_to(value.tensor, like.tensor.dtype):
                # torch computes with a 0-dim constant in the other operand's float type (a traced
                # 1.7 is float64, used as float32(1.7)): the ONNX export stores that number
                return self.const(to_numpy(value.tensor.to(like.tensor.dtype)), "const")
            return self.builder.ir_name(value)
        dtype = like.tensor.dtype if like is not None else torch.float32
        return self.const(to_numpy(torch.as_tensor(value, dtype=dtype)), "const")

    def const(self, array: np.ndarray, suffix: str) -> str:
        name = self.builder.reserve(f"{self.name}.{suffix}")
        array = np.asarray(array)
        self.builder.values[name] = Value(name, tuple(array.shape), array)
        return name

    def ints(self, values: list[int] | tuple[int, ...], suffix: str) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), suffix)

    def temp(self, shape: tuple[int, ...], suffix: str) -> str:
        name = self.builder.reserve(f"{self.name}.{suffix}")
        self.builder.values[name] = Value(name, tuple(shape))
        return name

    def node(
        self, op_type: str, inputs: Sequence[str], outputs: Sequence[Tracked | str], *, domain: str = "", **attrs: Any
    ) -> None:
        names = tuple(out.name if isinstance(out, Tracked) else out for out in outputs)
        name = self.name if not self.nodes else f"{self.name}/{op_type}"
        stored = {key: _as_stored(value) for key, value in attrs.items()}
        self.nodes.append(Node(name, op_type, tuple(inputs), names, stored, domain=domain))


def _scalar_cast_to(tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether torch's type promotion casts the 0-dim ``tensor`` to ``dtype`` in an op whose result
    has that float type."""
    return tensor.dim() == 0 and tensor.is_floating_point() and dtype.is_floating_point and tensor.dtype != dtype


def _as_stored(value: Any) -> Any:
    """An attribute as an ONNX file stores it: floats in float32 (AttributeProto.f), so that the torch
    and ONNX forms of one model read the same numbers (a LeakyReLU slope 0.2 is 0.2000000030 in both)."""
    if isinstance(value, float):
        return float(np.float32(value))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, float) for v in value):
        return [float(np.float32(v)) for v in value]
    return value
