"""The Network of a lipaudit IR graph, for the recursion and the residual-branch bounds.

Each node with a variable input becomes one Network node (one per used output):

  linear ops     Conv, ConvTranspose, Gemm / MatMul by a constant, Add / Sub / Sum of variables,
                 Mul / Div by a constant, Neg, BatchNormalization (inference), Concat,
                 AveragePool, GlobalAveragePool, ReduceMean, Reshape-like ops, Transpose, zero Pad,
                 one-axis Slice, Identity / Dropout, and a bias (Add or Sub of a constant): the
                 recursion looks through them;
  activations    every elementwise op of the activation family, with the slope range its rule
                 declares;
  anything else  a ``lipschitz`` node with the certified factor the rules already computed: a
                 barrier the recursion never looks into (sound, only less tight).

A linear node carries the rule's factor as its own norm (so the product here is the product the
composer computed), and the recursion computes only the norms of chains of them.

Nothing is taken on trust: every linear node's map is compared with the op's own ``run``
(run(x) − run(0) on a random x, which removes biases and other offsets), and every activation's
slope range with the op's difference quotients on a grid.  A node that fails either check becomes a
barrier with its factor.  So a gap in this module costs tightness, never soundness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..invariants import present
from ..ir import Graph, Node
from ..ops import Env, Factor, resolve
from ..ops.activation import FAMILY as ACTIVATION_FAMILY
from ..ops.activation import Activation
from ..ops.activation_steep import NotLipschitz
from ..ops.geometry import conv_transpose_layout, kernel_shape, window_geometry
from ..ops.normalization import batchnorm_scale
from .network import Network

# A node's map may differ from its op's run by float32 rounding only: far below this, relative to
# the output's scale.  A wrong geometry (pads, strides, a transposed matrix) differs by O(1).
LINEAR_CHECK_TOLERANCE = 1e-4
# The slope check's grid: fine where every activation we know has its slope extremes, then out to
# ±1e6 (a HardSigmoid's linear zone can sit anywhere its beta puts it).
_FAR = torch.logspace(1.1, 6.0, 4000, dtype=torch.float64)
_GRID = torch.cat([-_FAR.flip(0), torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64), _FAR])
# A declared slope range whose largest |slope| is below the op's own factor by more than this
# (relative) cannot be its slope range: the node stays a barrier.
SLOPE_SLACK = 1e-5
# Ops whose slope range comes from their constant inputs here, not from a declaration.
_SLOPES_FROM_DATA = {("", "PRelu")}

Build = Callable[[Network, list[int], str], int]  # (network, input ids, value name) -> id


class NotMappable(ValueError):
    """The graph cannot be described as a Network (a shape is unknown): no recursion for it."""


@dataclass
class GraphNetwork:
    """The Network and how it reads the graph: which node became a barrier and why."""

    network: Network
    ids: dict[str, int] = field(default_factory=dict)  # graph value name -> Network value id
    barriers: dict[str, str] = field(default_factory=dict)  # node name -> why it is not looked through
    linear: int = 0
    activations: int = 0


def network_from_graph(graph: Graph, factors: dict[Node, list[Factor]], *, seed: int = 0) -> GraphNetwork:
    """The Network of ``graph``; ``factors``: every node's per-output factors, as composed.

    Raises NotMappable when a value's shape is unknown or a factor is not a finite bound."""
    net = Network()
    result = GraphNetwork(net)
    ids = result.ids
    generator = torch.Generator().manual_seed(seed)
    slopes_seen: dict[tuple, str] = {}  # slope checks of this graph, by op, attributes and constant inputs
    for name in graph.inputs:
        ids[name] = net.input(_shape(graph, name), name=name)
    for node in graph.nodes:
        variables = graph.variable_inputs(node)
        if not variables:
            continue
        node_factors = factors.get(node)
        if node_factors is None:
            raise NotMappable(f"node '{node.name}' has no factor")
        used = [i for i, out in enumerate(node.outputs) if out and graph.is_used(out)]
        for i in used:
            factor = node_factors[i] if i < len(node_factors) else None
            if factor is None or factor.status != "bounded" or factor.value is None or not math.isfinite(factor.value):
                raise NotMappable(f"output {i} of node '{node.name}' has no finite bound")
        inputs = [ids[name] for name in variables]
        if (node.domain, node.op_type) == ("", "Split") and variables == [node.inputs[0]]:
            parts, why = _split_parts(graph, node, used, generator)
            if parts is not None:
                for i, (axis, start, stop) in parts.items():
                    ids[node.outputs[i]] = net.slice(inputs[0], axis, start, stop, 1, name=node.outputs[i])
                result.linear += 1
                continue
            build = None
        else:
            build, why = (None, "it has several outputs") if used != [0] else _builder(graph, node, node_factors[0])
        if build is not None:
            why = _check(graph, node, build, [net.shape(i) for i in inputs], variables, generator, slopes_seen)
        if build is not None and not why:
            ids[node.outputs[0]] = build(net, inputs, node.outputs[0])
            if net[ids[node.outputs[0]]].kind == "activation":
                result.activations += 1
            else:
                result.linear += 1
            continue
        result.barriers[node.name] = why
        for i in used:
            ids[node.outputs[i]] = net.lipschitz(
                inputs,
                _joint_constant(node_factors[i], len(inputs)),
                shape=_shape(graph, node.outputs[i]),
                name=node.outputs[i],
            )
    for name in graph.outputs:
        if name in ids:
            net.output(ids[name])
    if not net.outputs:
        raise NotMappable("no output depends on the input")
    return result


def _shape(graph: Graph, name: str) -> tuple[int, ...]:
    shape = graph.shape(name)
    if shape is None or any(d is None or d < 0 for d in shape):
        raise NotMappable(f"the shape of '{name}' is unknown")
    return tuple(int(d) for d in shape)


def _joint_constant(factor: Factor, inputs: int) -> float:
    """c with ‖Δy‖ ≤ c·√(Σ‖Δx_i‖²), from a factor's per-input weights (Cauchy–Schwarz for a sum)."""
    assert factor.value is not None
    weights = factor.input_weights if factor.input_weights is not None else [factor.value] * inputs
    if factor.combine == "rss":
        return max(weights, default=0.0)
    return math.sqrt(math.fsum(w * w for w in weights))


# ---------------------------------------------------------------------------------------------
# What each op is, as a Network node


def _builder(graph: Graph, node: Node, factor: Factor) -> tuple[Build | None, str]:
    """(how to add the node to a Network, or None and why it stays a barrier)."""
    if node.implicit_inputs:
        return None, "it reads a subgraph"
    op = resolve(node, graph.opset_of(node))
    if isinstance(op, Activation) and op.family == ACTIVATION_FAMILY and not isinstance(op, NotLipschitz):
        # (comparisons, arg-extremes and steps share the class but have no slope range to split)
        return _activation(graph, node, op, factor)
    maker = _LINEAR.get((node.domain, node.op_type))
    if maker is None:
        return None, f"{node.op_type} is not a linear map the recursion looks through"
    try:
        return maker(graph, node, factor.value)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return None, f"its attributes could not be read ({error})"


def _activation(graph: Graph, node: Node, op: Activation, factor: Factor) -> tuple[Build | None, str]:
    if graph.variable_inputs(node) != [node.inputs[0]]:
        return None, "an activation with a variable parameter"
    if (node.domain, node.op_type) in _SLOPES_FROM_DATA:
        # PRelu: slope 1 for x ≥ 0 and each slope value below; every quotient lies between them
        slope = np.asarray(_const(graph, node, 1), dtype=np.float64)
        slopes = (min(1.0, float(slope.min(initial=1.0))), max(1.0, float(slope.max(initial=1.0))))
    else:
        lo, hi = op.slope_range(node)
        slopes = (float(lo), float(hi))
    if not all(math.isfinite(s) for s in slopes) or slopes[0] > slopes[1]:
        return None, "its slopes are not bounded"
    if factor.value is not None and max(abs(slopes[0]), abs(slopes[1])) * (1 + SLOPE_SLACK) < factor.value:
        return None, f"its declared slopes {slopes} are below its own factor {factor.value:.6g}"
    return (lambda net, xs, name: net.activation(xs[0], node.op_type.lower(), slopes=slopes, name=name)), ""


def _const(graph: Graph, node: Node, index: int) -> np.ndarray | None:
    return graph.const(node.inputs[index]) if index < len(node.inputs) and node.inputs[index] else None


def _variable_at(graph: Graph, node: Node, *positions: int) -> bool:
    return [name for name in graph.variable_inputs(node)] == [node.inputs[p] for p in positions]


def _same_shape_as_output(graph: Graph, node: Node, index: int = 0) -> bool:
    return graph.shape(node.inputs[index]) == graph.shape(node.outputs[0])


def _conv(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    weight = _const(graph, node, 1)
    if weight is None or not _variable_at(graph, node, 0):
        return None, "a convolution whose kernel or bias is variable"
    spatial = _shape(graph, node.inputs[0])[2:]
    group = node.attr_int("group")
    if node.op_type == "ConvTranspose":
        _, strides, dilations, output_padding, begins, ends = conv_transpose_layout(node, weight.shape, spatial)
        return (
            lambda net, xs, name: net.conv_transpose(
                xs[0],
                weight,
                strides=strides,
                pads=tuple(begins) + tuple(ends),
                dilations=dilations,
                groups=group,
                output_padding=output_padding,
                name=name,
                norm=norm,
            )
        ), ""
    geometry = window_geometry(node, kernel_shape(node, weight.shape), spatial)
    return (
        lambda net, xs, name: net.conv(
            xs[0],
            weight,
            strides=geometry.strides,
            pads=geometry.pads,
            dilations=geometry.dilations,
            groups=group,
            name=name,
            norm=norm,
        )
    ), ""


def _gemm(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    matrix = _const(graph, node, 1)
    if matrix is None or not _variable_at(graph, node, 0) or node.attr_int("transA"):
        return None, "a Gemm that is not x·B with a constant B"
    matrix = node.attr_float("alpha") * (matrix.T if node.attr_int("transB") else matrix)
    return (lambda net, xs, name: net.dense(xs[0], matrix, name=name, norm=norm)), ""


def _matmul(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    matrix = _const(graph, node, 1)
    if matrix is None or matrix.ndim != 2 or not _variable_at(graph, node, 0):
        return None, "a MatMul that is not x·B with a constant matrix B"
    return (lambda net, xs, name: net.dense(xs[0], matrix, name=name, norm=norm)), ""


def _sum(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    """Add, Sub, Sum: of variables of the output's shape (a residual join), or a variable and a
    constant that does not broadcast it (a bias)."""
    variables = graph.variable_inputs(node)
    out_shape = graph.shape(node.outputs[0])
    if any(graph.shape(name) != out_shape for name in variables):
        return None, "it broadcasts a variable input"
    if len(variables) == len(node.inputs):
        signs = (1.0, -1.0) if node.op_type == "Sub" else (1.0,) * len(variables)
        return (lambda net, xs, name: net.add(xs, signs, name=name)), ""
    if len(variables) != 1:
        return None, "a sum of several variables and a constant"
    negated = node.op_type == "Sub" and variables[0] == node.inputs[1]
    if negated:
        return (lambda net, xs, name: net.scale(xs[0], -1.0, name=name, norm=norm)), ""
    return _identity(graph, node, norm)


def _identity(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    shape = _shape(graph, node.outputs[0])
    return (lambda net, xs, name: net.reshape(xs[0], shape, name=name)), ""


def _scale(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    """Mul, Div by a constant that does not broadcast the variable; Neg."""
    if node.op_type == "Neg":
        return (lambda net, xs, name: net.scale(xs[0], -1.0, name=name, norm=norm)), ""
    variables = graph.variable_inputs(node)
    if len(variables) != 1 or not _same_shape_as_output(graph, node, node.inputs.index(variables[0])):
        return None, "a product of variables, or one that broadcasts its input"
    index = node.inputs.index(variables[0])
    if node.op_type == "Div" and index != 0:
        return None, "a division by a variable"
    constant = np.asarray(_const(graph, node, 1 - index), dtype=np.float64)
    if node.op_type == "Div":
        with np.errstate(divide="ignore"):
            constant = 1.0 / constant
    if not np.all(np.isfinite(constant)):
        return None, "a division by zero"
    return (lambda net, xs, name: net.scale(xs[0], constant, name=name, norm=norm)), ""


def _batch_norm(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    scale, var = _const(graph, node, 1), _const(graph, node, 4)
    if scale is None or var is None or not _variable_at(graph, node, 0) or node.attr_int("training_mode", 0):
        return None, "BatchNormalization with variable statistics"
    rank = len(_shape(graph, node.inputs[0]))
    multiplier = batchnorm_scale(scale, var, node.attr_float("epsilon")).reshape((-1,) + (1,) * (rank - 2))
    return (lambda net, xs, name: net.scale(xs[0], multiplier, name=name, norm=norm)), ""


def _concat(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    if len(graph.variable_inputs(node)) != len(node.inputs):
        return None, "a Concat with a constant part"
    axis = node.attr_int("axis")
    return (lambda net, xs, name: net.concat(xs, axis, name=name)), ""


def _average_pool(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    spatial = _shape(graph, node.inputs[0])[2:]
    geometry = window_geometry(node, kernel_shape(node), spatial)
    if any(d != 1 for d in geometry.dilations):
        return None, "a dilated AveragePool"
    include_pad, ceil_mode = bool(node.attr_int("count_include_pad", 0)), bool(node.attr_int("ceil_mode", 0))
    return (
        lambda net, xs, name: net.avg_pool(
            xs[0],
            geometry.kernel,
            strides=geometry.strides,
            pads=geometry.pads,
            count_include_pad=include_pad,
            ceil_mode=ceil_mode,
            name=name,
            norm=norm,
        )
    ), ""


def _mean(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    rank = len(_shape(graph, node.inputs[0]))
    if node.op_type == "GlobalAveragePool":
        axes, keepdims = tuple(range(2, rank)), True
    else:
        axes_input = _const(graph, node, 1)
        axes = tuple(int(a) for a in axes_input.reshape(-1)) if axes_input is not None else node.attr_ints("axes", ())
        keepdims = bool(node.attr_int("keepdims", 1))
        if not axes:
            if node.attr_int("noop_with_empty_axes", 0):
                return _identity(graph, node, norm)
            axes = tuple(range(rank))
    return (lambda net, xs, name: net.mean(xs[0], axes, keepdims=keepdims, name=name)), ""


def _reshape(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    if not _variable_at(graph, node, 0):
        return None, "its shape is variable"
    return _identity(graph, node, norm)


def _transpose(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    rank = len(_shape(graph, node.inputs[0]))
    perm = node.attr_ints("perm", ()) or tuple(reversed(range(rank)))
    return (lambda net, xs, name: net.transpose(xs[0], perm, name=name)), ""


def _pad(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    pads = _const(graph, node, 1) if len(node.inputs) > 1 else np.asarray(node.attr_ints("pads", ()))
    if (
        pads is None
        or node.attr_str("mode") != "constant"
        or not _variable_at(graph, node, 0)
        or (len(node.inputs) > 3 and node.inputs[3])
    ):
        return None, "a Pad that is not a constant zero-or-offset pad of all axes"
    amounts = tuple(int(p) for p in np.asarray(pads).reshape(-1))
    return (lambda net, xs, name: net.pad(xs[0], amounts, name=name)), ""


def _slice(graph: Graph, node: Node, norm: float) -> tuple[Build | None, str]:
    """A slice along one axis with a positive step (the others: a barrier of factor 1)."""
    in_shape, out_shape = _shape(graph, node.inputs[0]), _shape(graph, node.outputs[0])
    changed = [a for a, (i, o) in enumerate(zip(in_shape, out_shape)) if i != o]
    constants = [_const(graph, node, i) for i in range(1, len(node.inputs))]
    parts = [p for p in constants if p is not None]
    if len(changed) != 1 or not _variable_at(graph, node, 0) or len(parts) < len(constants) or len(parts) < 2:
        return None, "a Slice of several axes or with variable bounds"
    starts, ends = parts[0].reshape(-1), parts[1].reshape(-1)
    axes = parts[2].reshape(-1) if len(parts) > 2 else np.arange(len(starts))
    steps = parts[3].reshape(-1) if len(parts) > 3 else np.ones(len(starts), np.int64)
    axis = changed[0]
    where = [k for k, a in enumerate(axes) if int(a) % len(in_shape) == axis]
    if len(where) != 1 or int(steps[where[0]]) < 1:
        return None, "a Slice with a negative step"
    start, stop = slice(int(starts[where[0]]), int(ends[where[0]])).indices(in_shape[axis])[:2]
    step = int(steps[where[0]])
    return (lambda net, xs, name: net.slice(xs[0], axis, start, stop, step, name=name)), ""


_LINEAR: dict[tuple[str, str], Callable[[Graph, Node, Any], tuple[Build | None, str]]] = {
    ("", "Conv"): _conv,
    ("", "ConvTranspose"): _conv,
    ("", "Gemm"): _gemm,
    ("", "MatMul"): _matmul,
    ("", "Add"): _sum,
    ("", "Sub"): _sum,
    ("", "Sum"): _sum,
    ("", "Mul"): _scale,
    ("", "Div"): _scale,
    ("", "Neg"): _scale,
    ("", "BatchNormalization"): _batch_norm,
    ("", "Concat"): _concat,
    ("", "AveragePool"): _average_pool,
    ("", "GlobalAveragePool"): _mean,
    ("", "ReduceMean"): _mean,
    ("", "Reshape"): _reshape,
    ("", "Flatten"): _identity,
    ("", "Squeeze"): _reshape,
    ("", "Unsqueeze"): _reshape,
    ("", "Transpose"): _transpose,
    ("", "Pad"): _pad,
    ("", "Slice"): _slice,
    ("", "Identity"): _identity,
    ("", "Dropout"): _identity,
}


# ---------------------------------------------------------------------------------------------
# Checks against the op's own run


def _check(
    graph: Graph,
    node: Node,
    build: Build,
    shapes: list[tuple[int, ...]],
    variables: list[str],
    generator: torch.Generator,
    slopes_seen: dict[tuple, str],
) -> str:
    """'' when the Network node does what the op's run does (module docstring), else why not."""
    scratch = Network()
    inputs = [scratch.input(shape) for shape in shapes]
    try:
        built = scratch[build(scratch, inputs, node.outputs[0])]
    except (ValueError, RuntimeError, TypeError, IndexError) as error:
        return f"it could not be described ({error})"
    if built.shape != _shape(graph, node.outputs[0]):
        # e.g. a PReLU whose slope broadcasts the data into copies
        return f"it makes a {built.shape} value where the op makes {_shape(graph, node.outputs[0])}"
    if built.kind == "activation":
        return (
            ""
            if (node.domain, node.op_type) in _SLOPES_FROM_DATA
            else _check_slopes(graph, node, built.slopes, slopes_seen)
        )
    xs = {name: torch.randn(shape, generator=generator, dtype=torch.float64) for name, shape in zip(variables, shapes)}
    try:
        with torch.no_grad():
            moved = _run(graph, node, xs)[0]
            still = _run(graph, node, {name: torch.zeros_like(x) for name, x in xs.items()})[0]
            mine = built.forward(*(xs[name].unsqueeze(0) for name in variables))[0]  # one per position
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        return f"its map could not be checked ({error})"
    expected = moved.double() - still.double()
    if tuple(expected.shape) != tuple(mine.shape):
        return f"its map has shape {tuple(mine.shape)}, the op's {tuple(expected.shape)}"
    scale = _largest(expected) + _largest(still) + 1e-30
    if _largest(expected - mine) > LINEAR_CHECK_TOLERANCE * scale:
        return "its map differs from the op's run"
    return ""


def _split_parts(
    graph: Graph, node: Node, used: list[int], generator: torch.Generator
) -> tuple[dict[int, tuple[int, int, int]] | None, str]:
    """Each used output of a Split as (axis, start, stop) of its input, checked against the op's run."""
    in_shape = _shape(graph, node.inputs[0])
    axis = node.attr_int("axis") % len(in_shape)
    try:
        shapes = [_shape(graph, out) for out in node.outputs]
    except NotMappable as error:
        return None, str(error)
    rest = in_shape[:axis] + in_shape[axis + 1 :]
    if sum(s[axis] for s in shapes) != in_shape[axis] or any(s[:axis] + s[axis + 1 :] != rest for s in shapes):
        return None, "its parts do not tile its input"
    starts = [sum(s[axis] for s in shapes[:i]) for i in range(len(shapes))]
    parts = {i: (axis, starts[i], starts[i] + shapes[i][axis]) for i in used}
    x = torch.randn(in_shape, generator=generator, dtype=torch.float64)
    try:
        with torch.no_grad():
            outputs = _run(graph, node, {node.inputs[0]: x})
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        return None, f"its parts could not be checked ({error})"
    for i, (_, start, stop) in parts.items():
        part = x.narrow(axis, start, stop - start)
        if i >= len(outputs) or tuple(outputs[i].shape) != tuple(part.shape):
            return None, f"its output {i} is not the part of its input its shape says"
        if _largest(outputs[i].double() - part) > LINEAR_CHECK_TOLERANCE * (_largest(part) + 1e-30):
            return None, f"its output {i} differs from the part of its input its shape says"
    return parts, ""


def _largest(t: Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _run(graph: Graph, node: Node, variables: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """The node's outputs from its op's own run, the variables given and the constants its own."""
    op = present(resolve(node, graph.opset_of(node)), f"the op of {node.op_type}")
    env = Env(graph.opset_of(node), dtype, torch.device("cpu"))
    args: list[Any] = []
    for name in node.inputs:
        if not name:
            args.append(None)
        elif name in variables:
            args.append(variables[name].to(env.dtype))
        else:
            const = np.asarray(graph.const(name))
            tensor = torch.as_tensor(np.array(const))
            args.append(tensor.to(env.dtype) if tensor.is_floating_point() else tensor)
    result = op.run(env, node, args)
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _check_slopes(graph: Graph, node: Node, slopes: tuple[float, float], seen: dict[tuple, str]) -> str:
    """'' when every difference quotient of the op on a fine grid lies in ``slopes``; ``seen``
    keeps the verdicts of this graph (the same op, attributes and constant inputs)."""
    constants = tuple(np.asarray(graph.const(name)).tobytes() for name in node.inputs[1:] if name)
    key = (node.domain, node.op_type, tuple(sorted((k, repr(v)) for k, v in node.attrs.items())), constants, slopes)
    if key not in seen:
        try:
            values = (
                _run(graph, node, {node.inputs[0]: _GRID}, torch.float64)[0] if _scalar_params(graph, node) else None
            )
        except (RuntimeError, ValueError, TypeError, IndexError):
            values = None
        if values is None or values.shape != _GRID.shape:
            seen[key] = "its slopes could not be checked"
        else:
            quotients = torch.diff(values) / torch.diff(_GRID)
            slack = 1e-6 * max(1.0, abs(slopes[0]), abs(slopes[1]))
            inside = bool(((quotients >= slopes[0] - slack) & (quotients <= slopes[1] + slack)).all())
            seen[key] = "" if inside else f"its declared slopes {slopes} miss some of its difference quotients"
    return seen[key]


def _scalar_params(graph: Graph, node: Node) -> bool:
    """Constant side inputs (a PReLU slope) broadcast over a 1-d grid only when they are scalars."""
    return all(np.asarray(graph.const(name)).size == 1 for name in node.inputs[1:] if name)
