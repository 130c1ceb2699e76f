"""An abstract network: a DAG of operations close to ONNX, with nothing but what the bounds need.

Built with the ``Network`` methods, in topological order (every method takes the ids of values
already built and returns the id of the new value).  Shapes follow ONNX and *include* the batch
axis (usually 1): a value is the whole tensor, and the ℓ2 norm is over all of it, as in the rest
of lipaudit.  Weights are float64 tensors (anything array-like is converted).  Biases and other
affine offsets never change a Lipschitz constant, so they are left out.

Each node's ``op`` is one of:
  Input       the network input (several inputs count as one concatenated input);
  a typed linear map of lipaudit.linear_maps (Conv, Dense, Scale, Sum, Concat, AvgPool, Mean,
              Reshape, Permutation, Slice, Pad): the recursion looks through it;
  Activation  elementwise, slopes in [α, β];
  Opaque      anything else with a certified Lipschitz constant c w.r.t. all its inputs together
              (MaxPool, Softmax, an op the caller only has a factor for): a barrier for the linear
              maps, never looked into.

Every unary linear node gives its own certified operator norm (``node.norm()``): the caller's
figure when one was passed (``norm=``), otherwise the map's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from ..linear_maps import AvgPool, Concat, Conv, Dense, Linear, Mean, Pad, Permutation, Reshape, Scale, Slice, Sum
from ..linear_maps.base import SUM_MARGIN
from ..spectral.scaling import product_up, root_sum_squares
from .activations import preset, split


@dataclass(frozen=True)
class Input:
    """The network input."""

    def rule(self, bounds: Sequence[float]) -> float:
        return 1.0


@dataclass
class Activation:
    """φ elementwise with difference quotients in ``slopes`` = [α, β]; ``fn`` evaluates it (tests)."""

    slopes: tuple[float, float]
    label: str = "activation"
    fn: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        self.slopes = (float(self.slopes[0]), float(self.slopes[1]))
        self.split = split(self.slopes)  # validates

    def rule(self, bounds: Sequence[float]) -> float:
        return product_up(self.split[2], bounds[0])


@dataclass
class Opaque:
    """A node known only by its certified Lipschitz constant w.r.t. all its inputs together."""

    constant: float
    fn: Callable[..., Tensor] | None = None

    def rule(self, bounds: Sequence[float]) -> float:
        c = self.constant
        return product_up(c, root_sum_squares(bounds)) * SUM_MARGIN if c else 0.0


NodeOp = Input | Activation | Opaque | Linear


@dataclass
class NetworkNode:
    """One value of the network and the operation that makes it."""

    id: int
    name: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    op: NodeOp
    given_norm: float | None = None
    _norm: float | None = field(default=None, repr=False)

    @property
    def linear(self) -> Linear | None:
        """The node's linear map, or None for an input, activation or opaque node."""
        return self.op if isinstance(self.op, Linear) else None

    @property
    def activation(self) -> Activation | None:
        return self.op if isinstance(self.op, Activation) else None

    @property
    def split(self) -> tuple[float, float, float]:
        """(a, b, Lipschitz constant) of an activation."""
        if not isinstance(self.op, Activation):
            raise TypeError(f"node '{self.name}' is no activation")
        return self.op.split

    def norm(self) -> float | None:
        """Certified ℓ2 norm of a unary linear node (None for joins and the nonlinear nodes)."""
        if self.given_norm is not None:
            return self.given_norm
        if not isinstance(self.op, Linear) or self.op.arity != 1:
            return None
        if self._norm is None:
            self._norm = self.op.norm()
        return self._norm

    def rule(self, bounds: Sequence[float]) -> float:
        """The product bound's rule at this node, from the bounds of its inputs."""
        ins = [bounds[i] for i in self.inputs]
        if isinstance(self.op, Linear):
            return self.op.rule(ins, self.norm())
        return self.op.rule(ins)

    def rule_slopes(self, bounds: Sequence[float]) -> list[float]:
        """∂ rule / ∂ L(input) for each input."""
        ins = [bounds[i] for i in self.inputs]
        op = self.op
        if isinstance(op, Linear):
            return op.rule_slopes(ins, self.norm())
        if isinstance(op, Activation):
            return [op.split[2]]
        if isinstance(op, Opaque):
            total = root_sum_squares(ins)
            return [op.constant * b / total if total > 0 else 0.0 for b in ins]
        return []

    def forward(self, *xs: Tensor) -> Tensor:
        """The linear map on a batch (each input (B, *shape)); for activations and opaque nodes the
        function itself (``Network.evaluate`` uses it; the bounds never do)."""
        op = self.op
        if isinstance(op, Linear):
            if not xs or any(x is None for x in xs):
                raise ValueError(f"node '{self.name}' needs its inputs")
            return op.forward(*xs)
        fn = getattr(op, "fn", None)
        if fn is None:
            raise ValueError(f"node '{self.name}' has no function to evaluate")
        return fn(*xs)


class Network:
    """A DAG of Nodes in topological order; see the module docstring for the node ops."""

    def __init__(self) -> None:
        self.nodes: list[NetworkNode] = []
        self.outputs: list[int] = []
        # Work the bounds of this network may share (chain.ChainCache: composite maps and their
        # measured norms, pure functions of the ops they read); a residual branch's network
        # (branches.py) shares its parent's, as it shares its ops.
        self.shared: dict = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, value: int) -> NetworkNode:
        return self.nodes[value]

    def shape(self, value: int) -> tuple[int, ...]:
        return self.nodes[value].shape

    def consumers(self) -> list[list[int]]:
        """For each value, the ids of the nodes that read it (with repeats for repeated inputs)."""
        readers: list[list[int]] = [[] for _ in self.nodes]
        for node in self.nodes:
            for i in node.inputs:
                readers[i].append(node.id)
        return readers

    def append(
        self,
        op: NodeOp,
        inputs: Sequence[int],
        *,
        name: str | None = None,
        norm: float | None = None,
        shape: Sequence[int] | None = None,
    ) -> int:
        """Add a node doing ``op`` on ``inputs``; its shape from the map (or ``shape``)."""
        inputs = tuple(int(i) for i in inputs)
        for i in inputs:
            if not 0 <= i < len(self.nodes):
                raise ValueError(f"input {i} is not a value of this network (it has {len(self.nodes)})")
        if norm is not None and not (norm >= 0):
            raise ValueError(f"norm must be a non-negative number, got {norm}")
        if isinstance(op, Linear) and op.arity == 1 and len(inputs) != 1:
            raise ValueError(f"{type(op).__name__} reads one value, got {len(inputs)}")
        if shape is None:
            shapes = [self.nodes[i].shape for i in inputs]
            shape = op.out_shape(shapes) if isinstance(op, Linear) else shapes[0]
        label = type(op).__name__.lower()
        node = NetworkNode(
            len(self.nodes), name or f"{label}_{len(self.nodes)}", inputs, tuple(int(s) for s in shape), op
        )
        node.given_norm = None if norm is None else float(norm)
        self.nodes.append(node)
        return node.id

    # ------------------------------------------------------------------ builders

    def input(self, shape: Sequence[int], *, name: str | None = None) -> int:
        return self.append(Input(), (), name=name, shape=tuple(shape))

    def conv(self, x: int, weight, *, strides=None, pads=None, dilations=None, groups: int = 1, name=None, norm=None):
        """ONNX Conv: weight (C_out, C_in/groups, *k); pads (begin_1.., end_1..); x is (N, C_in, *spatial)."""
        conv = Conv.of(weight, self.nodes[x].shape[2:], strides, pads, dilations, groups)
        self._rank(x, conv.dims + 2)
        return self.append(conv, (x,), name=name, norm=norm)

    def conv_transpose(
        self, x: int, weight, *, strides=None, pads=None, dilations=None, groups=1, output_padding=None, **named
    ) -> int:
        """ONNX ConvTranspose: weight (C_in, C_out/groups, *k); explicit pads (no auto_pad)."""
        conv = Conv.of(weight, self.nodes[x].shape[2:], strides, pads, dilations, groups, True, output_padding)
        self._rank(x, conv.dims + 2)
        return self.append(conv, (x,), **named)

    def _rank(self, x: int, rank: int) -> None:
        if len(self.nodes[x].shape) != rank:
            raise ValueError(f"a convolution reading a rank-{rank} value got one of shape {self.nodes[x].shape}")

    def dense(self, x: int, matrix, *, name: str | None = None, norm: float | None = None) -> int:
        """y = x @ matrix on the last axis; matrix (n_in, n_out).  Gemm with transB: pass B.T."""
        return self.append(Dense.of(matrix), (x,), name=name, norm=norm)

    def scale(self, x: int, factor, *, name: str | None = None, norm: float | None = None) -> int:
        """y = x * factor, factor broadcast against x's shape (folded BatchNorm: (C, 1, 1) for NCHW)."""
        return self.append(Scale.of(factor), (x,), name=name, norm=norm)

    def add(self, inputs: Sequence[int], coefficients: Sequence[float] | None = None, *, name=None) -> int:
        """y = Σ c_i·x_i over values of one shape (Add: c = 1, 1; Sub: 1, −1)."""
        coefficients = tuple(float(c) for c in (coefficients or (1.0,) * len(inputs)))
        return self.append(Sum(coefficients), inputs, name=name)

    def concat(self, inputs: Sequence[int], axis: int, *, name: str | None = None) -> int:
        rank = len(self.nodes[inputs[0]].shape)
        return self.append(Concat(axis % rank), inputs, name=name)

    def avg_pool(
        self, x: int, kernel, *, strides=None, pads=None, count_include_pad=False, ceil_mode=False, name=None, norm=None
    ) -> int:
        """ONNX AveragePool on an (N, C, *spatial) value (no dilation)."""
        pool = AvgPool.of(kernel, self.nodes[x].shape[2:], strides, pads, count_include_pad, ceil_mode)
        return self.append(pool, (x,), name=name, norm=norm)

    def mean(self, x: int, axes: Sequence[int], *, keepdims: bool = True, name: str | None = None) -> int:
        """ReduceMean over ``axes``; GlobalAveragePool is the mean over the spatial axes."""
        shape = self.nodes[x].shape
        axes = tuple(sorted(a % len(shape) for a in axes))
        return self.append(Mean(axes, keepdims, math.prod(shape[a] for a in axes)), (x,), name=name)

    def reshape(self, x: int, shape: Sequence[int], *, name: str | None = None) -> int:
        return self.append(Reshape(tuple(int(s) for s in shape)), (x,), name=name)

    def transpose(self, x: int, perm: Sequence[int], *, name: str | None = None) -> int:
        return self.append(Permutation.of_axes(self.nodes[x].shape, perm), (x,), name=name)

    def permute(self, x: int, index, shape: Sequence[int], *, name: str | None = None) -> int:
        """y.flat[j] = x.flat[index[j]] (−1: zero): a reversal, a roll, a gather of distinct entries."""
        return self.append(Permutation.of(index, shape, math.prod(self.nodes[x].shape)), (x,), name=name)

    def slice(self, x: int, axis: int, start: int, stop: int, step: int = 1, *, name: str | None = None) -> int:
        rank = len(self.nodes[x].shape)
        return self.append(Slice(axis % rank, start, stop, step), (x,), name=name)

    def pad(self, x: int, pads: Sequence[int], *, name: str | None = None) -> int:
        """Zero Pad with ONNX pads (begin per axis, then end per axis)."""
        return self.append(Pad.of(pads, len(self.nodes[x].shape)), (x,), name=name)

    def activation(
        self,
        x: int,
        kind: str = "relu",
        *,
        slopes: tuple[float, float] | None = None,
        alpha: float | None = None,
        fn: Callable[[Tensor], Tensor] | None = None,
        name: str | None = None,
    ) -> int:
        """Elementwise activation: a preset name (activations.preset: the slopes of its op) or
        explicit ``slopes`` (then ``fn`` evaluates it, for tests).  PReLU: pass its overall range."""
        if slopes is None:
            slopes, fn = preset(kind, alpha)
        return self.append(Activation(slopes, kind, fn), (x,), name=name)

    def lipschitz(
        self,
        inputs: int | Sequence[int],
        constant: float,
        *,
        shape: Sequence[int] | None = None,
        fn: Callable[..., Tensor] | None = None,
        name: str | None = None,
    ) -> int:
        """A node the bounds only know by its certified Lipschitz constant w.r.t. all of its inputs
        together (math.inf when unbounded).  ``fn`` takes the inputs with their batch axis."""
        inputs = (inputs,) if isinstance(inputs, int) else tuple(inputs)
        if not (constant >= 0):
            raise ValueError(f"Lipschitz constant must be non-negative, got {constant}")
        return self.append(Opaque(float(constant), fn), inputs, name=name, shape=shape)

    def output(self, *values: int) -> None:
        for v in values:
            if v not in self.outputs:
                self.outputs.append(int(v))

    def evaluate(self, *inputs: Tensor) -> list[Tensor]:
        """Run the network on a batch (inputs of shape (B, *input shape)); returns the outputs (tests)."""
        values: dict[int, Tensor] = {}
        feed = iter(inputs)
        for node in self.nodes:
            if isinstance(node.op, Input):
                values[node.id] = next(feed)
            else:
                values[node.id] = node.forward(*(values[i] for i in node.inputs))
        return [values[o] for o in self.outputs]
