"""The Network of a lipaudit IR graph, for the recursion and the residual-branch bounds.

Only the graph walk and the checks live here; what each op is comes from the op itself
(docs/design.md, "Linear parts"):

  activations    an op with a ``slope_range`` (its one variable input elementwise, slopes in [α, β]);
  linear maps    an op whose ``linear_part`` is a typed map of lipaudit.linear_maps (one per output
                 where it has several): the recursion looks through it;
  anything else  an ``Opaque`` node with the certified factor the rules already computed: a
                 barrier the recursion never looks into (sound, only less tight).

A costly linear node (a convolution, a matrix, a pooling) carries the rule's factor as its own
norm, so the product here is the product the composer computed.

Nothing is taken on trust: every used output's map is run against the op's own ``run`` at the
value's real shape on a random input (run(x) − run(0), which removes biases and other offsets) and
compared entry by entry; every activation's slope range against the op's difference quotients on
a grid.  A node that fails either check becomes a barrier with its factor, so a wrong description
costs tightness, never soundness.  The recursion checks its own compositions the same way
(chain.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..invariants import present
from ..ir import Graph, Node
from ..linear_maps import AvgPool, Barrier, Conv, Dense, Linear, Scale
from ..ops import Factor, Op, RuleContext, resolve
from ..ops.linear_part import disagreement, run_node
from ..spectral.scaling import root_sum_squares
from .network import Activation, Network, NodeOp

# The slope check's grid: fine where every activation we know has its slope extremes, then out to
# ±1e6 (a HardSigmoid's linear zone can sit anywhere its beta puts it).
_FAR = torch.logspace(1.1, 6.0, 4000, dtype=torch.float64)
_GRID = torch.cat([-_FAR.flip(0), torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64), _FAR])
# A declared slope range whose largest |slope| is below the op's own factor by more than this
# (relative) cannot be its slope range: the node stays a barrier.
SLOPE_SLACK = 1e-5

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


def network_from_graph(
    graph: Graph,
    factors: dict[Node, list[Factor]],
    *,
    seed: int = 0,
    neuron_slopes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> GraphNetwork:
    """The Network of ``graph``; ``factors``: every node's per-output factors, as composed.

    ``neuron_slopes``: on a bounded domain, each activation node's per-entry slope ranges (α, β)
    (neuron_slopes.py); an activation found there is split per neuron (``_per_neuron``) once its
    global slopes passed the checks.

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
        if not used:
            continue
        inputs = [ids[name] for name in variables]
        parts, why = _linear_parts(graph, node)
        if parts is not None and any(i not in parts for i in used):
            parts, why = None, why or "some output it makes is no map of its input"
        if parts is not None:
            why = _check(graph, node, parts, used, [net.shape(i) for i in inputs], variables, generator, slopes_seen)
            why = why or _check_factor(node, parts, node_factors)
        if parts is not None and not why:
            local = (neuron_slopes or {}).get(node.name)
            for i in used:
                part = parts[i]
                if local is not None and isinstance(part, Activation):
                    ids[node.outputs[i]] = _per_neuron(net, inputs[0], part, local, node.outputs[i])
                    continue
                ids[node.outputs[i]] = _adder(parts[i], node_factors[i])(net, inputs, node.outputs[i])
            if isinstance(parts[used[0]], Activation):
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
    return root_sum_squares(weights)  # squares of weights near 1e-160 would leave float64's range


# ---------------------------------------------------------------------------------------------
# What each op is, as a Network node: the op's own description (Op.linear_part, Op.slope_range)


def _op(graph: Graph, node: Node) -> Op:
    return present(resolve(node, graph.opset_of(node)), f"the op of {node.op_type}")


def _linear_parts(graph: Graph, node: Node) -> tuple[dict[int, NodeOp] | None, str]:
    """Per output, the Network op of the node (an activation or a typed linear map)."""
    if node.implicit_inputs:
        return None, "it reads a subgraph"
    op = resolve(node, graph.opset_of(node))
    if op is None:
        return None, f"{node.op_type} has no op"
    ctx = RuleContext(graph)
    try:
        slopes = op.slope_range(node, ctx)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return None, f"its slopes could not be read ({error})"
    if slopes is not None:
        if graph.variable_inputs(node) != [node.inputs[0]]:
            return None, "an activation with a variable parameter"
        lo, hi = float(slopes[0]), float(slopes[1])
        if not all(math.isfinite(s) for s in (lo, hi)) or lo > hi:
            return None, "its slopes are not bounded"
        return {0: Activation((lo, hi), node.op_type.lower())}, ""
    try:
        part = op.linear_part(node, ctx)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return None, f"its attributes could not be read ({error})"
    if isinstance(part, Barrier):
        return None, part.reason
    if isinstance(part, Linear):
        return {0: part}, ""
    return {i: m for i, m in enumerate(part) if m is not None}, ""


def _adder(op: NodeOp, factor: Factor) -> Build:
    """Adds ``op`` reading the given values; a unary map whose norm costs work carries the rule's
    factor as its norm (the product here is then the composer's), a cheap one the lower of the two.
    The factor is its input's weight, where the composer counts the copies a broadcast makes
    (lipaudit.compose.factors): Where's rule is 1 for a selection whose kept branch is broadcast."""
    norm = None
    if isinstance(op, Linear) and op.arity == 1 and factor.value is not None:
        weight = _joint_constant(factor, 1)
        norm = weight if isinstance(op, (Conv, Dense, AvgPool)) else min(weight, op.norm())
    return lambda net, xs, name: net.append(op, xs, name=name, norm=norm)


def _per_neuron(net: Network, x: int, activation: Activation, slopes: tuple[np.ndarray, np.ndarray], name: str) -> int:
    """The activation with per-entry slopes [α_i, β_i]: φ = diag(m)·Id + diag(r)·ψ, m = (α+β)/2,
    r = (β−α)/2, ψ entrywise 1-Lipschitz (slopes in [−1, 1]; docs/design.md, "Slope split", per entry).

    As Network nodes: Sum(Scale(m)·x, Scale(r)·ψ(u·x)), u_i = [r_i > 0], ψ of slopes [−1, 1] (a = 0:
    the recursion cuts there, and its term ‖A·diag(r)‖·L(x) carries the per-entry r exactly).  Entries
    with α_i = β_i are linear; when every entry is, the node is Scale(m) alone, so a network of stable
    ReLUs is one linear map and its chain norm is exact.  Entries sharing one range throughout: one
    Activation with those slopes."""
    shape = net.shape(x)
    alpha = np.broadcast_to(np.asarray(slopes[0], dtype=np.float64), shape)
    beta = np.broadcast_to(np.asarray(slopes[1], dtype=np.float64), shape)
    if not (np.all(alpha <= beta) and np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
        return net.append(activation, (x,), name=name)
    if alpha.size and np.all(alpha == alpha.flat[0]) and np.all(beta == beta.flat[0]):
        return net.append(Activation((float(alpha.flat[0]), float(beta.flat[0])), activation.label), (x,), name=name)
    middle = alpha / 2 + beta / 2
    reach = np.maximum(beta - middle, middle - alpha)
    # |slope − m_i| ≤ r_i for every slope in [α_i, β_i] despite the rounding of m and r: widen r.
    reach = np.where(reach > 0, reach * (1.0 + 1e-12) + 1e-300, 0.0)
    linear = torch.from_numpy(np.ascontiguousarray(middle))
    if not np.any(reach):
        return net.append(Scale.of(linear), (x,), name=name)
    kept = net.append(Scale.of(linear), (x,), name=f"{name}/linear")
    # ψ reads only the entries it acts on (r_i > 0): the recursion then bounds ‖Δ(those entries)‖,
    # often a few rows of a layer, not ‖Δx‖ (ψ_i depends on x_i alone, and r_i = 0 drops the others).
    unstable = torch.from_numpy(np.ascontiguousarray((reach > 0).astype(np.float64)))
    kept_in = net.append(Scale.of(unstable), (x,), name=f"{name}/unstable")
    rest = net.append(Activation((-1.0, 1.0), f"{activation.label}/nonlinear"), (kept_in,), name=f"{name}/nonlinear")
    injected = net.append(Scale.of(torch.from_numpy(np.ascontiguousarray(reach))), (rest,), name=f"{name}/injected")
    return net.add([kept, injected], name=name)


# ---------------------------------------------------------------------------------------------
# Checks against the op's own run


def _check(
    graph: Graph,
    node: Node,
    parts: dict[int, NodeOp],
    used: list[int],
    shapes: list[tuple[int, ...]],
    variables: list[str],
    generator: torch.Generator,
    slopes_seen: dict[tuple, str],
) -> str:
    """'' when each used output's Network node does what the op's run does, else why not.

    A linear map is run against the op at the value's real shape on a random input, offsets
    removed (run(x) − run(0)), and the whole output compared entry by entry; an activation's slopes
    against its difference quotients on a fine grid (docs/design.md, "Checks")."""
    scratch = Network()
    inputs = [scratch.input(shape) for shape in shapes]
    built = {}
    for i in used:
        try:
            built[i] = scratch[_adder(parts[i], Factor.unknown(""))(scratch, inputs, node.outputs[i])]
        except (ValueError, RuntimeError, TypeError, IndexError) as error:
            return f"it could not be described ({error})"
        if built[i].shape != _shape(graph, node.outputs[i]):
            # e.g. a PReLU whose slope broadcasts the data into copies
            return f"it makes a {built[i].shape} value where the op makes {_shape(graph, node.outputs[i])}"
    if any(isinstance(parts[i], Activation) for i in used):
        activation = parts[used[0]]
        assert isinstance(activation, Activation)
        if (node.domain, node.op_type) == ("", "PRelu"):
            return ""  # slopes read from its constant slope input, the op's own range
        return _check_slopes(graph, node, activation.slopes, slopes_seen)
    xs = {name: torch.randn(shape, generator=generator, dtype=torch.float64) for name, shape in zip(variables, shapes)}
    return disagreement(graph, _op(graph, node), node, {i: built[i].forward for i in used}, variables, xs)


def _check_factor(node: Node, parts: dict[int, NodeOp], factors: list[Factor]) -> str:
    """An activation whose slopes stay below the op's own factor cannot be right."""
    activation = parts.get(0)
    factor = factors[0] if factors else None
    if not isinstance(activation, Activation) or factor is None or factor.value is None:
        return ""
    if max(abs(activation.slopes[0]), abs(activation.slopes[1])) * (1 + SLOPE_SLACK) < factor.value:
        return f"its declared slopes {activation.slopes} are below its own factor {factor.value:.6g}"
    return ""


def _run(graph: Graph, node: Node, variables: dict[str, Tensor], dtype: torch.dtype = torch.float64) -> list[Tensor]:
    """The node's outputs from its op's own run, the variables given and the constants its own."""
    return run_node(graph, _op(graph, node), node, variables, dtype)


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
