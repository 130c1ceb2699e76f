"""An abstract network: a DAG of operations close to ONNX, with nothing but what the bounds need.

Built with the ``Network`` methods, in topological order (every method takes the ids of values
already built and returns the id of the new value).  Shapes follow ONNX and *include* the batch
axis (usually 1): a value is the whole tensor, and the ℓ2 norm is over all of it, as in the rest
of lipaudit.  Weights are float64 tensors (anything array-like is converted).  Biases and other
affine offsets never change a Lipschitz constant, so they are left out.

Node kinds and what the bounds use of them:
  input       the network input (several inputs count as one concatenated input);
  conv        Conv / ConvTranspose in ONNX layout, at the input size of the value it reads;
  dense       y = x @ M on the last axis (MatMul with a constant, Gemm with B' = M);
  scale       y = x * f, f broadcast (folded BatchNorm, Mul by a constant): norm max|f|;
  add         y = Σ c_i·x_i (Add, Sub, Sum);
  concat      Concat along an axis;
  avg_pool    AveragePool (ONNX attributes); mean: ReduceMean / GlobalAveragePool;
  reshape, transpose, slice, pad: coordinate maps, norm ≤ 1;
  activation  elementwise, slopes in [α, β] (a preset name or explicit slopes);
  lipschitz   anything else with a certified Lipschitz constant c w.r.t. all its inputs together
              (MaxPool, Softmax, an op the caller only has a factor for): a barrier for the linear
              maps, never looked into.

Every linear node can give its own certified operator norm (``node.norm()``): the caller's figure
when one was passed (``norm=``), otherwise computed here with lipaudit.spectral.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..invariants import present
from ..spectral import avgpool_norm, conv_norm, dense_norm
from ..spectral.conv import avgpool_layout
from ..spectral.dense import SVD_MARGIN
from .activations import evaluator, slope_range, split

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

LINEAR_KINDS = ("conv", "dense", "scale", "add", "concat", "avg_pool", "mean", "reshape", "transpose", "slice", "pad")


def _f64(array) -> Tensor:
    if isinstance(array, Tensor):
        return array.detach().to(dtype=torch.float64, device="cpu")
    array = np.asarray(array, dtype=np.float64)
    return torch.from_numpy(array.copy())


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX-order (begin, end) amounts per axis in F.pad's order (last axis first)."""
    order: list[int] = []
    for begin, end in reversed(list(zip(begins, ends))):
        order += [int(begin), int(end)]
    return order


@dataclass
class Node:
    """One value of the network and the operation that makes it.

    ``forward`` applies the operation's *linear part* to a batch: each input has a leading batch
    axis in front of its own shape (B, *shape).  For activations and lipschitz nodes it is the
    nonlinear function itself (``evaluate`` uses it; the bounds never call it).
    """

    id: int
    kind: str
    name: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...] = ()
    params: dict = field(default_factory=dict)
    given_norm: float | None = None
    _norm: float | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ activation split

    @property
    def slopes(self) -> tuple[float, float]:
        return self.params["slopes"]

    @property
    def split(self) -> tuple[float, float, float]:
        """(a, b, Lipschitz constant) of an activation."""
        return split(self.params["slopes"])

    # ------------------------------------------------------------------ norms

    def norm(self) -> float | None:
        """Certified ℓ2 norm of a unary linear node (None for add / concat and the nonlinear kinds)."""
        if self.given_norm is not None:
            return self.given_norm
        if self._norm is None:
            self._norm = self._compute_norm()
        return self._norm

    def _compute_norm(self) -> float | None:
        p = self.params
        if self.kind == "conv":
            result = conv_norm(
                p["weight"],
                p["spatial"],
                strides=p["strides"],
                pads=p["pads"],
                dilations=p["dilations"],
                groups=p["groups"],
                transposed=p["transposed"],
                output_padding=p.get("output_padding"),
                power_iterations=0,
            )
            return result.value
        if self.kind == "dense":
            return dense_norm(p["matrix"]).value
        if self.kind == "scale":
            return float(p["factor"].abs().max()) if p["factor"].numel() else 0.0
        if self.kind == "avg_pool":
            return avgpool_norm(
                p["kernel"],
                p["spatial"],
                strides=p["strides"],
                pads=p["pads"],
                count_include_pad=p["count_include_pad"],
                channels=1,
                ceil_mode=p["ceil_mode"],
                power_iterations=0,
            ).value
        if self.kind == "mean":
            return SVD_MARGIN / math.sqrt(p["count"])
        if self.kind in ("reshape", "transpose", "slice", "pad"):
            return 1.0
        return None

    # ------------------------------------------------------------------ evaluation

    def forward(self, *xs: Tensor) -> Tensor:
        p, kind = self.params, self.kind
        if kind == "add":
            out = xs[0] * p["coefficients"][0]
            for c, other in zip(p["coefficients"][1:], xs[1:]):
                out = out + c * other
            return out
        if kind == "concat":
            return torch.cat(xs, dim=p["axis"] + 1)
        if kind in ("activation", "lipschitz"):
            fn = p.get("fn")
            if fn is None:
                raise ValueError(f"{kind} node '{self.name}' has no function to evaluate")
            return fn(*xs)
        if kind not in LINEAR_KINDS:
            raise ValueError(f"node '{self.name}' of kind {kind} has no forward")
        # the remaining kinds are unary: they read one value
        x = present(xs[0] if xs else None, f"the input of {kind} node '{self.name}'")
        if kind == "conv":
            return _conv_forward(x, p)
        if kind == "dense":
            return x @ p["matrix"].to(dtype=x.dtype, device=x.device)
        if kind == "scale":
            return x * p["factor"].to(dtype=x.dtype, device=x.device)
        if kind == "avg_pool":
            return _avg_pool_forward(x, p)
        if kind == "mean":
            return x.mean(dim=[a + 1 for a in p["axes"]], keepdim=p["keepdims"])
        if kind == "reshape":
            return x.reshape(x.shape[0], *self.shape)
        if kind == "transpose":
            return x.permute(0, *[a + 1 for a in p["perm"]])
        if kind == "slice":
            index = [slice(None)] * x.ndim
            index[p["axis"] + 1] = slice(p["start"], p["stop"], p["step"])
            return x[tuple(index)]
        if kind == "pad":
            return F.pad(x, _torch_pad((0, *p["begins"]), (0, *p["ends"])))
        raise ValueError(f"node '{self.name}' of kind {kind} has no forward")


def _conv_forward(x: Tensor, p: dict) -> Tensor:
    batch, n = x.shape[0], x.shape[1]
    w = p["weight"].to(dtype=x.dtype, device=x.device)
    d = w.ndim - 2
    x = x.reshape(batch * n, *x.shape[2:])
    begins, ends = p["pads"][:d], p["pads"][d:]
    if not p["transposed"]:
        y = _CONV[d](
            F.pad(x, _torch_pad(begins, ends)), w, stride=p["strides"], dilation=p["dilations"], groups=p["groups"]
        )
    else:
        full = _CONV_TRANSPOSE[d](x, w, stride=p["strides"], dilation=p["dilations"], groups=p["groups"])
        extra = p.get("output_padding") or (0,) * d
        y = F.pad(full, _torch_pad([-b for b in begins], [q - e for q, e in zip(extra, ends)]))
    return y.reshape(batch, n, *y.shape[1:])


def _avg_pool_forward(x: Tensor, p: dict) -> Tensor:
    """AveragePool with ONNX attributes: window sums over the zero-padded input divided by the
    number of counted cells (all of the window with count_include_pad, else the real inputs), the
    ceil_mode windows cut at the padded input's end (torch's and onnxruntime's convention)."""
    batch, n, c = x.shape[:3]
    kernel, strides, pads = p["kernel"], p["strides"], p["pads"]
    d = len(kernel)
    spatial = x.shape[3:]
    ends = list(p["ends_extended"])
    padded = F.pad(x.reshape(batch * n * c, 1, *spatial), _torch_pad(pads[:d], ends))
    ones = torch.ones((1, 1, *kernel), dtype=x.dtype, device=x.device)
    sums = _CONV[d](padded, ones, stride=strides)
    sums = sums[(slice(None), slice(None), *(slice(0, o) for o in p["out"]))]
    divisors = p["divisors"].to(dtype=x.dtype, device=x.device)
    return (sums / divisors).reshape(batch, n, c, *p["out"])


def _avg_pool_geometry(spatial, kernel, strides, pads, count_include_pad, ceil_mode) -> dict:
    outs, ends, sums = avgpool_layout(kernel, spatial, strides, pads, (1,) * len(kernel), count_include_pad, ceil_mode)
    return {
        "out": outs,
        "ends_extended": ends,
        "divisors": sums.clamp(min=1.0)[0, 0],
        "uniform": bool((sums == math.prod(kernel)).all()),
    }


def _known_shape(node: Node, shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The output shape where it follows from the input shapes by arithmetic (None: ask a meta
    tensor).  Meta arithmetic and reductions go through torch's Python references, whose first use
    imports the compiler stack: seconds, for shapes known here."""
    kind, p = node.kind, node.params
    if kind in ("activation", "lipschitz", "add", "scale"):
        return shapes[0]
    if kind == "mean":
        return tuple(1 if a in p["axes"] else n for a, n in enumerate(shapes[0]) if p["keepdims"] or a not in p["axes"])
    if kind == "concat":
        axis = p["axis"]
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1 :]
    if kind == "transpose":
        return tuple(shapes[0][a] for a in p["perm"])
    if kind == "slice":
        axis = p["axis"]
        return shapes[0][:axis] + (len(range(p["start"], p["stop"], p["step"])),) + shapes[0][axis + 1 :]
    if kind == "pad":
        return tuple(n + b + e for n, b, e in zip(shapes[0], p["begins"], p["ends"]))
    if kind == "dense":
        return shapes[0][:-1] + (int(p["matrix"].shape[1]),)
    if kind == "avg_pool":
        return shapes[0][:2] + tuple(p["out"])
    if kind == "conv":
        return shapes[0][:1] + _conv_shape(shapes[0][1:], p)
    return None


def _conv_shape(shape: tuple[int, ...], p: dict) -> tuple[int, ...]:
    """(C_out, *spatial out) of an ONNX Conv / ConvTranspose with explicit pads, read as (C_in, *spatial)."""
    w = p["weight"]
    d = w.ndim - 2
    begins, ends = p["pads"][:d], p["pads"][d:]
    extra = p.get("output_padding") or (0,) * d
    spatial = []
    for i, n in enumerate(shape[1:]):
        k, s, dil = int(w.shape[2 + i]), p["strides"][i], p["dilations"][i]
        if p["transposed"]:
            spatial.append((n - 1) * s - begins[i] - ends[i] + dil * (k - 1) + extra[i] + 1)
        else:
            spatial.append((n + begins[i] + ends[i] - dil * (k - 1) - 1) // s + 1)
    if min(spatial, default=1) < 1:
        raise ValueError(f"convolution of a {shape} value has an empty output {spatial}")
    channels = int(w.shape[1]) * p["groups"] if p["transposed"] else int(w.shape[0])
    return (channels, *spatial)


class Network:
    """A DAG of Nodes in topological order; see the module docstring for the node kinds."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.outputs: list[int] = []

    # ------------------------------------------------------------------ plumbing

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, value: int) -> Node:
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

    def _add(
        self,
        kind: str,
        inputs: Sequence[int],
        params: dict,
        name: str | None,
        norm: float | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> int:
        inputs = tuple(int(i) for i in inputs)
        for i in inputs:
            if not 0 <= i < len(self.nodes):
                raise ValueError(f"input {i} is not a value of this network (it has {len(self.nodes)})")
        if norm is not None and not (norm >= 0):
            raise ValueError(f"norm must be a non-negative number, got {norm}")
        node = Node(
            len(self.nodes),
            kind,
            name or f"{kind}_{len(self.nodes)}",
            inputs,
            (),
            params,
            None if norm is None else float(norm),
        )
        if shape is None:
            shape = _known_shape(node, [self.nodes[i].shape for i in inputs])
        if shape is None:
            # shapes only: meta tensors carry no data, so this costs nothing at any size
            probes = [torch.zeros((1, *self.nodes[i].shape), dtype=torch.float64, device="meta") for i in inputs]
            shape = tuple(node.forward(*probes).shape[1:])
        node.shape = tuple(int(s) for s in shape)
        self.nodes.append(node)
        return node.id

    # ------------------------------------------------------------------ builders

    def input(self, shape: Sequence[int], *, name: str | None = None) -> int:
        return self._add("input", (), {}, name, shape=tuple(shape))

    def conv(
        self,
        x: int,
        weight,
        *,
        strides: Sequence[int] | None = None,
        pads: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        groups: int = 1,
        name: str | None = None,
        norm: float | None = None,
    ) -> int:
        """ONNX Conv: weight (C_out, C_in/groups, *k); pads (begin_1.., end_1..); x is (N, C_in, *spatial)."""
        return self._conv(x, weight, strides, pads, dilations, groups, False, None, name, norm)

    def conv_transpose(
        self,
        x: int,
        weight,
        *,
        strides: Sequence[int] | None = None,
        pads: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        groups: int = 1,
        output_padding: Sequence[int] | None = None,
        name: str | None = None,
        norm: float | None = None,
    ) -> int:
        """ONNX ConvTranspose: weight (C_in, C_out/groups, *k); explicit pads (no auto_pad)."""
        return self._conv(x, weight, strides, pads, dilations, groups, True, output_padding, name, norm)

    def _conv(self, x, weight, strides, pads, dilations, groups, transposed, output_padding, name, norm) -> int:
        w = _f64(weight)
        d = w.ndim - 2
        if d not in (1, 2, 3):
            raise ValueError(f"convolution weight must have 3 to 5 axes, got {tuple(w.shape)}")
        in_shape = self.nodes[x].shape
        if len(in_shape) != d + 2:
            raise ValueError(f"convolution with a {d}-d kernel reads a value of shape {in_shape}")
        params = {
            "weight": w,
            "strides": tuple(int(s) for s in (strides or (1,) * d)),
            "pads": tuple(int(p) for p in (pads or (0,) * (2 * d))),
            "dilations": tuple(int(s) for s in (dilations or (1,) * d)),
            "groups": int(groups),
            "transposed": transposed,
            "spatial": tuple(in_shape[2:]),
            "output_padding": tuple(int(p) for p in output_padding) if output_padding else None,
        }
        return self._add("conv", (x,), params, name, norm)

    def dense(self, x: int, matrix, *, name: str | None = None, norm: float | None = None) -> int:
        """y = x @ matrix on the last axis; matrix (n_in, n_out).  Gemm with transB: pass B.T."""
        m = _f64(matrix)
        if m.ndim != 2 or self.nodes[x].shape[-1] != m.shape[0]:
            raise ValueError(f"dense matrix {tuple(m.shape)} does not act on the last axis of {self.nodes[x].shape}")
        return self._add("dense", (x,), {"matrix": m}, name, norm)

    def scale(self, x: int, factor, *, name: str | None = None, norm: float | None = None) -> int:
        """y = x * factor, factor broadcast against x's shape (ONNX Mul by a constant, folded BatchNorm:
        factor of shape (C, 1, 1) for an NCHW value)."""
        f = _f64(factor)
        shape = self.nodes[x].shape
        if tuple(torch.broadcast_shapes(f.shape, shape)) != tuple(shape):
            raise ValueError(f"scale factor of shape {tuple(f.shape)} would broadcast {shape} to a larger shape")
        return self._add("scale", (x,), {"factor": f}, name, norm)

    def add(
        self, inputs: Sequence[int], coefficients: Sequence[float] | None = None, *, name: str | None = None
    ) -> int:
        """y = Σ c_i·x_i over values of one shape (Add: c = 1, 1; Sub: 1, −1)."""
        coefficients = tuple(float(c) for c in (coefficients or (1.0,) * len(inputs)))
        if len(coefficients) != len(inputs) or not inputs:
            raise ValueError("add needs one coefficient per input")
        shapes = {self.nodes[i].shape for i in inputs}
        if len(shapes) != 1:
            raise ValueError(f"add of values with different shapes {sorted(shapes)}: broadcast them first")
        return self._add("add", inputs, {"coefficients": coefficients}, name)

    def concat(self, inputs: Sequence[int], axis: int, *, name: str | None = None) -> int:
        rank = len(self.nodes[inputs[0]].shape)
        return self._add("concat", inputs, {"axis": axis % rank}, name)

    def avg_pool(
        self,
        x: int,
        kernel: Sequence[int],
        *,
        strides: Sequence[int] | None = None,
        pads: Sequence[int] | None = None,
        count_include_pad: bool = False,
        ceil_mode: bool = False,
        name: str | None = None,
        norm: float | None = None,
    ) -> int:
        """ONNX AveragePool on an (N, C, *spatial) value (no dilation)."""
        kernel = tuple(int(k) for k in kernel)
        d = len(kernel)
        spatial = self.nodes[x].shape[2:]
        params = {
            "kernel": kernel,
            "strides": tuple(int(s) for s in (strides or (1,) * d)),
            "pads": tuple(int(p) for p in (pads or (0,) * (2 * d))),
            "count_include_pad": bool(count_include_pad),
            "ceil_mode": bool(ceil_mode),
            "spatial": tuple(spatial),
        }
        params.update(
            _avg_pool_geometry(spatial, kernel, params["strides"], params["pads"], count_include_pad, ceil_mode)
        )
        return self._add("avg_pool", (x,), params, name, norm)

    def mean(self, x: int, axes: Sequence[int], *, keepdims: bool = True, name: str | None = None) -> int:
        """ReduceMean over ``axes``; GlobalAveragePool is the mean over the spatial axes."""
        shape = self.nodes[x].shape
        axes = tuple(sorted(a % len(shape) for a in axes))
        count = math.prod(shape[a] for a in axes)
        return self._add("mean", (x,), {"axes": axes, "keepdims": keepdims, "count": count}, name)

    def reshape(self, x: int, shape: Sequence[int], *, name: str | None = None) -> int:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != math.prod(self.nodes[x].shape):
            raise ValueError(f"cannot reshape {self.nodes[x].shape} to {shape}")
        return self._add("reshape", (x,), {}, name, shape=shape)

    def transpose(self, x: int, perm: Sequence[int], *, name: str | None = None) -> int:
        return self._add("transpose", (x,), {"perm": tuple(int(p) for p in perm)}, name)

    def slice(self, x: int, axis: int, start: int, stop: int, step: int = 1, *, name: str | None = None) -> int:
        if step < 1:
            raise ValueError("slice steps must be positive (reverse a negative-step slice: it is a permutation)")
        rank = len(self.nodes[x].shape)
        return self._add("slice", (x,), {"axis": axis % rank, "start": start, "stop": stop, "step": step}, name)

    def pad(self, x: int, pads: Sequence[int], *, name: str | None = None) -> int:
        """Constant (zero) Pad with ONNX pads (begin per axis, then end per axis)."""
        rank = len(self.nodes[x].shape)
        pads = tuple(int(p) for p in pads)
        if len(pads) != 2 * rank or min(pads) < 0:
            raise ValueError(f"pad needs {2 * rank} non-negative amounts, got {pads}")
        return self._add("pad", (x,), {"begins": pads[:rank], "ends": pads[rank:]}, name)

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
        """Elementwise activation: a preset ``kind`` (activations.slope_range) or explicit ``slopes``
        (then ``fn`` evaluates it, for tests).  Per-element slopes (PReLU): pass their overall range."""
        if slopes is None:
            slopes = slope_range(kind, alpha)
        slopes = (float(slopes[0]), float(slopes[1]))
        split(slopes)  # validates
        params = {"slopes": slopes, "activation": kind, "fn": fn or evaluator(kind, alpha)}
        return self._add("activation", (x,), params, name)

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
        together (math.inf when unbounded).  ``shape`` defaults to the first input's; ``fn`` takes
        the inputs with their batch axis (B, *shape) and is only used by ``evaluate``."""
        inputs = (inputs,) if isinstance(inputs, int) else tuple(inputs)
        if not (constant >= 0):
            raise ValueError(f"Lipschitz constant must be non-negative, got {constant}")
        params = {"constant": float(constant), "fn": fn}
        return self._add(
            "lipschitz", inputs, params, name, shape=tuple(shape) if shape is not None else self.nodes[inputs[0]].shape
        )

    def output(self, *values: int) -> None:
        for v in values:
            if v not in self.outputs:
                self.outputs.append(int(v))

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, *inputs: Tensor) -> list[Tensor]:
        """Run the network on a batch (inputs of shape (B, *input shape)); returns the outputs.

        Activations and lipschitz nodes use their ``fn``.  For tests: the bounds never need it.
        """
        values: dict[int, Tensor] = {}
        feed = iter(inputs)
        for node in self.nodes:
            if node.kind == "input":
                values[node.id] = next(feed)
            else:
                values[node.id] = node.forward(*(values[i] for i in node.inputs))
        return [values[o] for o in self.outputs]
