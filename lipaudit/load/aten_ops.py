"""aten ops → the IR op types the ONNX loader produces, so both formats share one set of rules.

Each converter gets an ``Emitter``, the op's arguments by schema name (tensors as ``Tracked``) and
its tensor outputs, already computed on the probe input. Attributes follow ONNX opset 17: pads as
(begin…, end…), Reshape/Squeeze/Unsqueeze/Split/Slice/ReduceSum/Pad parameters as constant inputs,
ReduceMean/ReduceMax axes as attributes. A converter raises ``Unmappable`` for a configuration the
IR cannot express; the op then shows as unsupported (``aten::name``), never as a factor of 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..ops.activation import softplus_cut_is_invisible
from ..ops.geometry import block_counts, fold_attributes, patch_picks
from .naming import PAD_OPS
from .torch_graph import ONNX_TYPES, Converter, Emitter, Tracked, Unmappable, to_numpy

CONVERTERS: dict[str, Converter] = {}
INT64_MAX = 2**63 - 1


class DuplicateConverterError(RuntimeError):
    pass


def _add(name: str, fn: Converter) -> None:
    if name in CONVERTERS:
        raise DuplicateConverterError(f"aten::{name} already has a converter")
    CONVERTERS[name] = fn


def converts(*names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in names:
            _add(name, fn)
        return fn

    return register


def _ints(value: Any, n: int) -> list[int]:
    """An int or a list of ints (length 1 or n) as a list of n ints."""
    values = [int(value)] if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    return values * n if len(values) == 1 else values


def _axis(dim: int, rank: int) -> int:
    return int(dim) % max(rank, 1)


def _rank_in_name(op: str) -> int:
    """2 for max_pool2d, adaptive_avg_pool2d, …"""
    found = re.search(r"(\d)d", op)
    if found is None:
        raise Unmappable(f"{op} names no spatial rank")
    return int(found.group(1))


def _spatial(x: Tracked, n: int) -> None:
    if x.tensor.dim() != n + 2:
        raise Unmappable(f"input of rank {x.tensor.dim()} (unbatched)")


# --- linear maps ------------------------------------------------------------------------------


def _conv(em: Emitter, a: dict[str, Any], out: Tracked, *, transposed: bool) -> None:
    x, w, b = a["input"], a["weight"], a.get("bias")
    n = w.tensor.dim() - 2
    _spatial(x, n)
    kernel = list(w.shape[2:])
    dilations = _ints(a["dilation"], n)
    padding = a["padding"]
    if isinstance(padding, str):  # conv2d(padding="same" | "valid"): torch pads the extra one at the end
        totals = [d * (k - 1) if padding == "same" else 0 for d, k in zip(dilations, kernel)]
        pads = [t // 2 for t in totals] + [t - t // 2 for t in totals]
    else:
        pads = _ints(padding, n) * 2
    attrs: dict[str, Any] = dict(
        kernel_shape=kernel, strides=_ints(a["stride"], n), pads=pads, dilations=dilations, group=int(a["groups"])
    )
    if transposed:
        attrs["output_padding"] = _ints(a["output_padding"], n)
    inputs = [em.x(x), em.x(w)] + ([em.x(b)] if b is not None else [])
    em.node("ConvTranspose" if transposed else "Conv", inputs, [out], **attrs)


@converts("conv1d", "conv2d", "conv3d", "_convolution_mode")
def conv(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    _conv(em, a, outs[0], transposed=False)


@converts("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    _conv(em, a, outs[0], transposed=True)


@converts("_convolution", "convolution")
def convolution(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    _conv(em, a, outs[0], transposed=bool(a["transposed"]))


@converts("linear")
def linear(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, w, b = a["input"], a["weight"], a.get("bias")
    if x.tensor.dim() == 2:
        em.node("Gemm", [em.x(x), em.x(w)] + ([em.x(b)] if b is not None else []), outs, transB=1)
        return
    if w.variable:
        raise Unmappable("a variable weight on an input of rank other than 2")
    weight_t = em.const(to_numpy(w.tensor).T.copy(), "weight_t")
    if b is None:
        em.node("MatMul", [em.x(x), weight_t], outs)
        return
    product = em.temp(outs[0].shape, "matmul")
    em.node("MatMul", [em.x(x), weight_t], [product])
    em.node("Add", [product, em.x(b)], outs)


@converts("einsum")
def einsum(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Einsum", [em.x(t) for t in a["tensors"]], outs, equation=str(a["equation"]))


@converts("addmm")
def addmm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """beta·self + alpha·(mat1 @ mat2): one Gemm where alpha and beta are float32 numbers (Gemm keeps
    them as float32 attributes); else spelled out, so that a float64 alpha of 1e-250 is not read as 0."""
    alpha, beta = float(a["alpha"]), float(a["beta"])
    if float(np.float32(alpha)) == alpha and float(np.float32(beta)) == beta:
        em.node("Gemm", [em.x(a["mat1"]), em.x(a["mat2"]), em.x(a["self"], outs[0])], outs, alpha=alpha, beta=beta)
        return
    _plus_scaled_product(em, a["mat1"], a["mat2"], a, outs)


@converts("matmul", "mm", "bmm")
def matmul(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    right = a.get("other", a.get("mat2"))
    em.node("MatMul", [em.x(a["self"]), em.x(right)], outs)


@converts("baddbmm")
def baddbmm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """beta·self + alpha·(batch1 @ batch2)."""
    _plus_scaled_product(em, a["batch1"], a["batch2"], a, outs)


def _plus_scaled_product(em: Emitter, left: Any, right: Any, a: dict[str, Any], outs: list[Tracked]) -> None:
    """beta·self + alpha·(left @ right), alpha and beta as constants of the model's float type."""
    product = em.temp(outs[0].shape, "product")
    em.node("MatMul", [em.x(left), em.x(right)], [product])
    _plus_scaled(em, product, a, outs)


def _plus_scaled(em: Emitter, product: str, a: dict[str, Any], outs: list[Tracked]) -> None:
    """beta·self + alpha·product."""
    out = outs[0]
    scaled = product
    if float(a.get("alpha", 1)) != 1.0:
        scaled = em.temp(out.shape, "scaled")
        em.node("Mul", [product, em.x(float(a["alpha"]), out)], [scaled])
    em.node("Add", [scaled, _scaled(em, a["self"], a.get("beta"), out)], outs)


# --- normalisation ----------------------------------------------------------------------------


def _eps(a: dict[str, Any]) -> float:
    """epsilon as the float32 that float32 kernels (and ONNX attributes) use: a shade below 1e-5."""
    return float(np.float32(a["eps"]))


def _affine(em: Emitter, value: Any, shape: tuple[int, ...], fill: float, suffix: str, like: Tracked) -> str:
    if value is not None:
        return em.x(value)
    return em.const(np.full(shape, fill, dtype=to_numpy(like.tensor[:0]).dtype), suffix)


@converts("batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training")
def batch_norm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["input"]
    channels = (x.shape[1],)
    inputs = [
        em.x(x),
        _affine(em, a["weight"], channels, 1.0, "scale", x),
        _affine(em, a["bias"], channels, 0.0, "bias", x),
        em.x(a["running_mean"]),
        em.x(a["running_var"]),
    ]
    attrs: dict[str, Any] = {"epsilon": _eps(a)}
    if a.get("training") or a["running_mean"] is None:
        attrs["training_mode"] = 1  # batch statistics: the rule reports it as unbounded
    em.node("BatchNormalization", inputs, outs[:1], **attrs)


@converts("instance_norm")
def instance_norm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    if not a["use_input_stats"]:
        batch_norm(em, a, outs)
        return
    x = a["input"]
    channels = (x.shape[1],)
    em.node(
        "InstanceNormalization",
        [
            em.x(x),
            _affine(em, a["weight"], channels, 1.0, "scale", x),
            _affine(em, a["bias"], channels, 0.0, "bias", x),
        ],
        outs[:1],
        epsilon=_eps(a),
    )


@converts("layer_norm", "native_layer_norm")
def layer_norm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, shape = a["input"], tuple(int(d) for d in a["normalized_shape"])
    em.node(
        "LayerNormalization",
        [em.x(x), _affine(em, a["weight"], shape, 1.0, "scale", x), _affine(em, a["bias"], shape, 0.0, "bias", x)],
        outs[:1],
        axis=-len(shape),
        epsilon=_eps(a),
    )


@converts("group_norm")
def group_norm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["input"]
    channels = (x.shape[1],)
    em.node(
        "GroupNormalization",
        [
            em.x(x),
            _affine(em, a["weight"], channels, 1.0, "scale", x),
            _affine(em, a["bias"], channels, 0.0, "bias", x),
        ],
        outs[:1],
        num_groups=int(a["num_groups"]),
        epsilon=_eps(a),
    )


# --- activations ------------------------------------------------------------------------------

_UNARY = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "silu": "Silu",
    "mish": "Mish",
    "hardswish": "HardSwish",
    "selu": "Selu",
    "abs": "Abs",
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "reciprocal": "Reciprocal",
    "sin": "Sin",
    "cos": "Cos",
    "tan": "Tan",
    "atan": "Atan",
    "asinh": "Asinh",
    "sinh": "Sinh",
    "cosh": "Cosh",
    "asin": "Asin",
    "acos": "Acos",
    "acosh": "Acosh",
    "atanh": "Atanh",
    "erf": "Erf",
    "sign": "Sign",
    "floor": "Floor",
    "ceil": "Ceil",
}
_IDENTITY = {
    "contiguous",
    "clone",
    "detach",
    "alias",
    "lift_fresh_copy",
    "dropout",
    "feature_dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "_to_copy",
    "to",
    "type_as",
}


def _unary(op_type: str) -> Converter:
    def convert(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
        em.node(op_type, [em.x(a["self"])], outs)

    return convert


for _name, _op_type in _UNARY.items():
    _add(_name, _unary(_op_type))


@converts(*_IDENTITY)
def identity(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"] if "self" in a else a["input"]
    if a.get("train"):
        raise Unmappable("dropout in training mode is random")
    before, after = x.tensor.dtype, outs[0].tensor.dtype
    if before == after:
        em.node("Identity", [em.x(x)], outs)
        return
    # A change of dtype is a Cast: to float16/bfloat16 or an integer type it rounds (a step function).
    if after not in ONNX_TYPES:
        raise Unmappable(f"cast from {before} to {after}")
    em.node("Cast", [em.x(x)], outs, to=ONNX_TYPES[after])


@converts("round")
def round_(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    if a.get("decimals", 0):
        raise Unmappable("round to decimals")
    em.node("Round", [em.x(a["self"])], outs)


@converts("gelu")
def gelu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Gelu", [em.x(a["self"])], outs, approximate=str(a.get("approximate", "none")))


@converts("leaky_relu")
def leaky_relu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("LeakyRelu", [em.x(a["self"])], outs, alpha=float(a["negative_slope"]))


@converts("elu")
def elu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    if float(a["scale"]) != 1.0 or float(a["input_scale"]) != 1.0:
        raise Unmappable("elu with scale or input_scale other than 1")
    em.node("Elu", [em.x(a["self"])], outs, alpha=float(a["alpha"]))


@converts("celu")
def celu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Celu", [em.x(a["self"])], outs, alpha=float(a["alpha"]))


@converts("hardsigmoid")
def hardsigmoid(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("HardSigmoid", [em.x(a["self"])], outs, alpha=1 / 6, beta=0.5)


@converts("hardshrink", "softshrink")
def shrink(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    lambd = float(a["lambd"])
    em.node("Shrink", [em.x(a["self"])], outs, lambd=lambd, bias=lambd if a["__op__"] == "softshrink" else 0.0)


@converts("log_sigmoid")
def log_sigmoid(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """log σ(x) = −softplus(−x): 1-Lipschitz, as the ONNX paths' Log(Sigmoid(x)) is fused."""
    x = a["self"]
    negated, smooth = em.temp(x.shape, "negated"), em.temp(x.shape, "softplus")
    em.node("Neg", [em.x(x)], [negated])
    em.node("Softplus", [negated], [smooth])
    em.node("Neg", [smooth], outs)


@converts("softplus")
def softplus(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Softplus(βx)/β; where its threshold cut is more than rounding in the model's float type (the
    default cut in float64), Where(βx > t, x, Softplus(βx)/β) as the dynamo exporter writes it,
    which the rules report as a step."""
    x, beta, threshold = a["self"], float(a["beta"]), float(a["threshold"])
    if beta <= 0:
        raise Unmappable(f"softplus with beta {beta:g} ≤ 0")
    float64 = isinstance(x, Tracked) and x.tensor.dtype == torch.float64
    smooth = softplus_cut_is_invisible(beta, threshold, np.float64 if float64 else np.float32)
    below_cut = "" if smooth else em.temp(x.shape, "softplus_below_cut")
    result: list[Tracked | str] = list(outs) if smooth else [below_cut]
    scaled = em.x(x)
    if beta == 1.0:
        em.node("Softplus", [scaled], result)
    else:
        scaled, smoothed = em.temp(x.shape, "beta_x"), em.temp(x.shape, "softplus")
        em.node("Mul", [em.x(x), em.x(beta, x)], [scaled])
        em.node("Softplus", [scaled], [smoothed])
        em.node("Mul", [smoothed, em.x(1.0 / beta, x)], result)
    if not smooth:
        above = em.temp(x.shape, "above_cut")
        em.node("Greater", [scaled, em.x(threshold, x)], [above])
        em.node("Where", [above, em.x(x), below_cut], outs)


@converts("threshold")
def threshold(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """x above t, else v: max(x, t) when v = t (continuous, slope 1); otherwise a jump of t − v at t,
    written as the dynamo exporter writes it, a Where on x ≤ t (which the rules report as a step)."""
    x, t, v = a["self"], float(a["threshold"]), float(a["value"])
    if t == v:
        em.node("Max", [em.x(x), em.x(t, x)], outs)
        return
    below = em.temp(x.shape, "below")
    em.node("LessOrEqual", [em.x(x), em.x(t, x)], [below])
    em.node("Where", [below, em.x(v, x), em.x(x)], outs)


@converts("hardtanh", "relu6", "clamp", "clip", "clamp_min", "clamp_max")
def clip(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, op = a["self"], a["__op__"]
    low: float | None
    high: float | None
    if op == "relu6":
        low, high = 0.0, 6.0
    elif op == "hardtanh":
        low, high = a["min_val"], a["max_val"]
    else:
        low, high = a.get("min"), a.get("max")
    em.node("Clip", [em.x(x), em.x(low, x), em.x(high, x)], outs)


@converts("prelu", "_prelu_kernel")
def prelu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, slope = a["self"], a["weight"]
    if slope.variable:
        raise Unmappable("a variable slope")
    array = to_numpy(slope.tensor)
    if array.size > 1 and x.tensor.dim() >= 2:  # one slope per channel (axis 1), broadcast the ONNX way
        array = array.reshape((-1,) + (1,) * (x.tensor.dim() - 2))
    em.node("PRelu", [em.x(x), em.const(array, "slope")], outs)


@converts("softmax", "_softmax", "log_softmax", "_log_softmax")
def softmax(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    op_type = "LogSoftmax" if "log" in a["__op__"] else "Softmax"
    em.node(op_type, [em.x(x)], outs, axis=_axis(a["dim"], x.tensor.dim()))


# --- elementwise arithmetic -------------------------------------------------------------------


def _scaled(em: Emitter, value: Any, alpha: Any, like: Tracked) -> str:
    if alpha is None or float(alpha) == 1.0:
        return em.x(value, like)
    if not isinstance(value, Tracked):
        return em.x(value * alpha, like)
    if not value.variable:
        return em.const(to_numpy(value.tensor * alpha), "scaled")
    scaled = em.temp(value.shape, "scaled")
    em.node("Mul", [em.x(value), em.x(alpha, like)], [scaled])
    return scaled


def _binary(op_type: str) -> Converter:
    """self ∘ alpha·other (add, sub: alpha scales ``other``)."""

    def convert(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
        if a.get("rounding_mode") is not None:
            raise Unmappable(f"division with rounding_mode={a['rounding_mode']}")
        out = outs[0]
        em.node(op_type, [em.x(a["self"], out), _scaled(em, a["other"], a.get("alpha"), out)], outs)

    return convert


@converts("rsub")
def rsub(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """rsub(self, other, alpha) = other − alpha·self: alpha scales ``self``, not ``other``."""
    out = outs[0]
    em.node("Sub", [em.x(a["other"], out), _scaled(em, a["self"], a.get("alpha"), out)], outs)


for _name, _fn in {
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
    "div": _binary("Div"),
    "maximum": _binary("Max"),
    "minimum": _binary("Min"),
}.items():
    _add(_name, _fn)


# Comparisons and selections: step functions of the data, which the rules report as such.
_COMPARE = {"gt": "Greater", "lt": "Less", "ge": "GreaterOrEqual", "le": "LessOrEqual", "eq": "Equal"}


@converts(*_COMPARE, "ne")
def compare(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    left, right = em.x(a["self"]), em.x(a["other"], a["self"])
    if a["__op__"] != "ne":
        em.node(_COMPARE[a["__op__"]], [left, right], outs)
        return
    equal = em.temp(outs[0].shape, "equal")
    em.node("Equal", [left, right], [equal])
    em.node("Not", [equal], outs)


@converts("logical_not")
def logical_not(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Not", [em.x(a["self"])], outs)


@converts("where")
def where(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """where(condition, self, other): self where the condition holds (ONNX Where's order)."""
    if "self" not in a:
        raise Unmappable("where(condition) returns indices")
    out = outs[0]
    em.node("Where", [em.x(a["condition"]), em.x(a["self"], out), em.x(a["other"], out)], outs)


@converts("masked_fill")
def masked_fill(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """masked_fill(self, mask, value): value where the mask holds, self elsewhere."""
    out = outs[0]
    em.node("Where", [em.x(a["mask"]), em.x(a["value"], out), em.x(a["self"], out)], outs)


@converts("glu")
def glu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """glu(x) = a·σ(b), a and b the halves of x along ``dim``: written as torch's ONNX export writes it."""
    x = a["self"]
    axis = _axis(a.get("dim", -1), x.tensor.dim())
    half = x.shape[axis] // 2
    shape = outs[0].shape
    first, second, gate = em.temp(shape, "first"), em.temp(shape, "second"), em.temp(shape, "gate")
    em.node("Split", [em.x(x), em.ints([half, half], "split")], [first, second], axis=axis)
    em.node("Sigmoid", [second], [gate])
    em.node("Mul", [first, gate], outs)


@converts("pow")
def pow_(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Pow", [em.x(a["self"], outs[0]), em.x(a["exponent"], outs[0])], outs)


# --- pooling ----------------------------------------------------------------------------------


def _window(a: dict[str, Any], x: Tracked) -> tuple[int, list[int], list[int], list[int]]:
    n = _rank_in_name(a["__op__"])
    _spatial(x, n)
    kernel = _ints(a["kernel_size"], n)
    stride = _ints(a["stride"], n) if a.get("stride") else kernel
    return n, kernel, stride, _ints(a["padding"], n) * 2


@converts(
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
)
def max_pool(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    n, kernel, stride, pads = _window(a, x)
    em.node(
        "MaxPool",
        [em.x(x)],
        outs[:1],
        kernel_shape=kernel,
        strides=stride,
        pads=pads,
        dilations=_ints(a["dilation"], n),
        ceil_mode=int(bool(a["ceil_mode"])),
    )


@converts("avg_pool1d", "avg_pool2d", "avg_pool3d")
def avg_pool(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """With ``divisor_override`` d every window's sum is divided by d: the mean over the whole window,
    padding included, times (window size)/d. Windows that run past the padding (ceil_mode) are
    shorter, so that case stays unmapped."""
    x, divisor = a["self"], a.get("divisor_override")
    _, kernel, stride, pads = _window(a, x)
    if divisor is not None and a["ceil_mode"]:
        raise Unmappable("divisor_override with ceil_mode")
    attrs: dict[str, Any] = dict(kernel_shape=kernel, strides=stride, pads=pads, ceil_mode=int(bool(a["ceil_mode"])))
    if divisor is None:
        em.node("AveragePool", [em.x(x)], outs, count_include_pad=int(bool(a["count_include_pad"])), **attrs)
        return
    mean = em.temp(outs[0].shape, "window_mean")
    em.node("AveragePool", [em.x(x)], [mean], count_include_pad=1, **attrs)
    em.node("Mul", [mean, em.x(math.prod(kernel) / float(divisor), x)], outs)


@converts(
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
)
def adaptive_pool(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, out = a["self"], outs[0]
    _spatial(x, _rank_in_name(a["__op__"]))
    is_max = "max" in a["__op__"]
    sizes_in, sizes_out = x.shape[2:], out.shape[2:]
    if all(s == 1 for s in sizes_out):
        em.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [em.x(x)], [out])
        return
    if any(i % o for i, o in zip(sizes_in, sizes_out)):
        if is_max:
            raise Unmappable(f"adaptive max pooling from {list(sizes_in)} to {list(sizes_out)} has unequal windows")
        _adaptive_mean(em, x, out)
        return
    kernel = [i // o for i, o in zip(sizes_in, sizes_out)]
    em.node(
        "MaxPool" if is_max else "AveragePool",
        [em.x(x)],
        [out],
        kernel_shape=kernel,
        strides=kernel,
        pads=[0] * (2 * len(kernel)),
    )


def _window_means(size_in: int, size_out: int, like: Tracked) -> np.ndarray:
    """Row o averages entries ⌊o·I/O⌋ … ⌈(o+1)·I/O⌉ − 1, torch's adaptive windows."""
    means = torch.zeros((size_out, size_in), dtype=like.tensor.dtype)
    for o in range(size_out):
        start, end = (o * size_in) // size_out, -((-(o + 1) * size_in) // size_out)
        means[o, start:end] = 1.0 / (end - start)
    return to_numpy(means)


def _adaptive_mean(em: Emitter, x: Tracked, out: Tracked) -> None:
    """Adaptive average pooling with unequal windows is separable: one constant averaging matrix per
    spatial axis, applied by MatMul (the last axis on the right, the others on the left after moving
    them next to last): a chain of exact linear maps."""
    rank = x.tensor.dim()
    current, shape = em.x(x), list(x.shape)
    axes = [axis for axis in range(2, rank) if x.shape[axis] != out.shape[axis]]
    for k, axis in enumerate(axes):
        means = _window_means(x.shape[axis], out.shape[axis], x)
        prior = list(shape)
        shape[axis] = out.shape[axis]
        result = out.name if k == len(axes) - 1 else em.temp(tuple(shape), f"mean{axis}")
        if axis == rank - 1:
            em.node("MatMul", [current, em.const(means.T.copy(), f"means{axis}")], [result])
        elif axis == rank - 2:
            em.node("MatMul", [em.const(means, f"means{axis}"), current], [result])
        else:
            perm = list(range(rank))
            perm[axis], perm[rank - 2] = rank - 2, axis
            before = em.temp(tuple(prior[p] for p in perm), f"moved{axis}")
            after = em.temp(tuple(shape[p] for p in perm), f"pooled{axis}")
            em.node("Transpose", [current], [before], perm=perm)
            em.node("MatMul", [em.const(means, f"means{axis}"), before], [after])
            em.node("Transpose", [after], [result], perm=perm)
        current = result


@converts("square")
def square(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = em.x(a["self"])
    em.node("Mul", [x, x], outs)


# --- sorting ----------------------------------------------------------------------------------


@converts("sort")
def sort(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """torch.sort as a TopK of every entry along the axis (values and int64 indices alike)."""
    x = a["self"]
    rank = x.tensor.dim()
    axis = _axis(a.get("dim", -1), rank) if rank else 0
    em.node(
        "TopK",
        [em.x(x), em.ints([x.shape[axis] if rank else 1], "k")],
        outs,
        axis=axis,
        largest=int(bool(a.get("descending", False))),
        sorted=1,
    )


@converts("topk")
def topk(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    if not a.get("sorted", True):
        raise Unmappable("topk with sorted=False (torch's order of the values is unspecified)")
    em.node(
        "TopK",
        [em.x(x), em.ints([int(a["k"])], "k")],
        outs,
        axis=_axis(a.get("dim", -1), x.tensor.dim()),
        largest=int(bool(a.get("largest", True))),
        sorted=1,
    )


# --- reductions -------------------------------------------------------------------------------


def _reduce_axes(a: dict[str, Any], rank: int) -> list[int]:
    dims = a.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        return list(range(rank))
    return sorted(_axis(d, rank) for d in ([dims] if isinstance(dims, int) else dims))


def _reduce(op_type: str, axes_as_input: bool) -> Converter:
    def convert(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
        x = a["self"]
        axes = _reduce_axes(a, x.tensor.dim())
        keep = int(bool(a.get("keepdim", False)))
        if axes_as_input:
            em.node(op_type, [em.x(x), em.ints(axes, "axes")], outs[:1], keepdims=keep)
        else:
            em.node(op_type, [em.x(x)], outs[:1], axes=axes, keepdims=keep)

    return convert


for _name, _fn in {
    "mean": _reduce("ReduceMean", False),
    "sum": _reduce("ReduceSum", True),
    "amax": _reduce("ReduceMax", False),
    "amin": _reduce("ReduceMin", False),
    "logsumexp": _reduce("ReduceLogSumExp", False),
}.items():
    _add(_name, _fn)


@converts("max", "min")
def max_min(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    if "other" in a:
        _binary("Max" if a["__op__"] == "max" else "Min")(em, a, outs)
        return
    _reduce("ReduceMax" if a["__op__"] == "max" else "ReduceMin", False)(em, a, outs)


@converts("var", "std")
def variance(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Σ(x − mean)²/(N − correction) over ``dim``, as ONNX exporters spell it (a Sqrt after, for std)."""
    x = a["self"]
    rank = x.tensor.dim()
    axes = _reduce_axes(a, rank)
    correction = a.get("correction", 1 if a.get("unbiased", True) else 0)
    correction = 1.0 if correction is None else float(correction)
    count = math.prod(x.shape[d] for d in axes)
    if count - correction <= 0:
        raise Unmappable(f"variance of {count} entries with correction {correction:g}")
    kept = tuple(1 if d in axes else n for d, n in enumerate(x.shape))
    mean, centred, squares = em.temp(kept, "mean"), em.temp(x.shape, "centred"), em.temp(x.shape, "squares")
    em.node("ReduceMean", [em.x(x)], [mean], axes=axes, keepdims=1)
    em.node("Sub", [em.x(x), mean], [centred])
    em.node("Mul", [centred, centred], [squares])
    total = em.temp(outs[0].shape, "sum")
    em.node("ReduceSum", [squares, em.ints(axes, "axes")], [total], keepdims=int(bool(a.get("keepdim", False))))
    if a["__op__"] == "var":
        em.node("Mul", [total, em.x(1.0 / (count - correction), outs[0])], outs)
        return
    var = em.temp(outs[0].shape, "var")
    em.node("Mul", [total, em.x(1.0 / (count - correction), outs[0])], [var])
    em.node("Sqrt", [var], outs)


@converts("linalg_vector_norm", "norm", "frobenius_norm")
def vector_norm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """The 2-norm over ``dim`` (all entries when none): ReduceL2, as ONNX writes it; the 1-norm
    ReduceL1; the ∞-norm (−∞) the largest (smallest) |x|, as the dynamo exporter writes them."""
    order = a.get("ord", a.get("p", 2))
    if order is None:
        order = 2
    if isinstance(order, str) or a.get("dtype") is not None or float(order) not in (1.0, 2.0, math.inf, -math.inf):
        raise Unmappable(f"a vector norm of order {order}")
    if float(order) in (1.0, 2.0):
        _reduce("ReduceL2" if float(order) == 2.0 else "ReduceL1", False)(em, a, outs)
        return
    x = a["self"]
    magnitude = em.temp(x.shape, "abs")
    em.node("Abs", [em.x(x)], [magnitude])
    extreme = "ReduceMax" if float(order) > 0 else "ReduceMin"
    keep = int(bool(a.get("keepdim", False)))
    em.node(extreme, [magnitude], outs[:1], axes=_reduce_axes(a, x.tensor.dim()), keepdims=keep)


@converts("cumsum")
def cumsum(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    if a.get("dtype") is not None and outs[0].tensor.dtype != x.tensor.dtype:
        raise Unmappable("cumsum with a dtype change")
    em.node("CumSum", [em.x(x), em.ints([_axis(a["dim"], x.tensor.dim())], "axis")], outs)


# --- moving entries ---------------------------------------------------------------------------


@converts("view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias", "unflatten", "view_as", "reshape_as")
def reshape(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Reshape", [em.x(a["self"]), em.ints(outs[0].shape, "shape")], outs)


@converts("flatten")
def flatten(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    if rank >= 2 and _axis(a["start_dim"], rank) == 1 and _axis(a["end_dim"], rank) == rank - 1:
        em.node("Flatten", [em.x(x)], outs, axis=1)
    else:
        reshape(em, a, outs)


@converts("permute")
def permute(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    em.node("Transpose", [em.x(x)], outs, perm=[_axis(d, x.tensor.dim()) for d in a["dims"]])


@converts("transpose", "t", "numpy_T")
def transpose(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    perm = list(range(rank))
    if "dim0" in a:
        i, j = _axis(a["dim0"], rank), _axis(a["dim1"], rank)
        perm[i], perm[j] = perm[j], perm[i]
    else:
        perm.reverse()
    em.node("Transpose", [em.x(x)], outs, perm=perm)


@converts("unsqueeze")
def unsqueeze(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    em.node("Unsqueeze", [em.x(x), em.ints([_axis(a["dim"], x.tensor.dim() + 1)], "axes")], outs)


@converts("squeeze")
def squeeze(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    dims = a.get("dim")
    candidates = range(rank) if dims is None else [_axis(d, rank) for d in ([dims] if isinstance(dims, int) else dims)]
    axes = [d for d in candidates if x.shape[d] == 1]
    if not axes:
        em.node("Identity", [em.x(x)], outs)
    else:
        em.node("Squeeze", [em.x(x), em.ints(axes, "axes")], outs)


@converts("cat", "concat", "concatenate")
def cat(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    tensors = [t for t in a["tensors"] if t.tensor.numel() or t.tensor.dim() > 1]  # torch skips empty 1-D
    em.node("Concat", [em.x(t) for t in tensors], outs, axis=_axis(a["dim"], outs[0].tensor.dim()))


@converts("stack")
def stack(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    axis = _axis(a["dim"], outs[0].tensor.dim())
    parts = []
    for k, t in enumerate(a["tensors"]):
        shape = t.shape[:axis] + (1,) + t.shape[axis:]
        part = em.temp(shape, f"unsqueeze{k}")
        em.node("Unsqueeze", [em.x(t), em.ints([axis], f"axes{k}")], [part])
        parts.append(part)
    em.node("Concat", parts, outs, axis=axis)


@converts("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "unbind")
def split(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    axis = _axis(a.get("dim", 0), rank)
    if a["__op__"] != "unbind":
        sizes = [out.shape[axis] for out in outs]
        if sum(sizes) != x.shape[axis]:
            raise Unmappable("overlapping or partial split")
        em.node("Split", [em.x(x), em.ints(sizes, "split")], outs, axis=axis)
        return
    pieces = [em.temp(out.shape[:axis] + (1,) + out.shape[axis:], f"piece{k}") for k, out in enumerate(outs)]
    em.node("Split", [em.x(x), em.ints([1] * len(outs), "split")], pieces, axis=axis)
    for k, (piece, out) in enumerate(zip(pieces, outs)):
        em.node("Squeeze", [piece, em.ints([axis], f"axes{k}")], [out])


@converts("slice")
def slice_(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    axis = _axis(a.get("dim", 0), rank)
    start = 0 if a.get("start") is None else int(a["start"])
    end = INT64_MAX if a.get("end") is None else min(int(a["end"]), INT64_MAX)
    em.node(
        "Slice",
        [
            em.x(x),
            em.ints([start], "starts"),
            em.ints([end], "ends"),
            em.ints([axis], "axes"),
            em.ints([int(a.get("step", 1))], "steps"),
        ],
        outs,
    )


@converts("flip")
def flip(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """torch.flip as one Slice of step −1 on each axis (a permutation, as ONNX writes a reversal)."""
    x = a["self"]
    rank = x.tensor.dim()
    axes = sorted({_axis(int(d), rank) for d in a["dims"]})
    em.node(
        "Slice",
        [
            em.x(x),
            em.ints([-1] * len(axes), "starts"),
            em.ints([-INT64_MAX - 1] * len(axes), "ends"),
            em.ints(axes, "axes"),
            em.ints([-1] * len(axes), "steps"),
        ],
        outs,
    )


@converts("narrow")
def narrow(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """x.narrow(dim, start, length): a negative start counts from the end, so it is wrapped before
    the end is taken (start + length from a negative start would end before it, an empty slice)."""
    x = a["self"]
    start = int(a["start"])
    if start < 0:
        start += int(x.tensor.shape[_axis(a["dim"], x.tensor.dim())])
    slice_(em, {"self": x, "dim": a["dim"], "start": start, "end": start + int(a["length"]), "step": 1}, outs)


@converts("select")
def select(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    axis = _axis(a["dim"], x.tensor.dim())
    em.node("Gather", [em.x(x), em.const(np.asarray(int(a["index"]), np.int64), "index")], outs, axis=axis)


@converts("index_select")
def index_select(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    em.node("Gather", [em.x(x), em.x(a["index"])], outs, axis=_axis(a["dim"], x.tensor.dim()))


@converts("gather")
def gather(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    em.node("GatherElements", [em.x(x), em.x(a["index"])], outs, axis=_axis(a["dim"], x.tensor.dim()))


@converts("index")
def index(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """x[:, …, idx] with one constant index tensor (integers, or a mask read as its positions): a
    Gather on that axis. Several index tensors broadcast against each other, which Gather cannot say."""
    x = a["self"]
    given = [(axis, t) for axis, t in enumerate(a["indices"]) if t is not None]
    if len(given) != 1 or not isinstance(given[0][1], Tracked) or given[0][1].variable:
        raise Unmappable("indexing by more than one tensor, or by a tensor computed from the input")
    axis, chosen = given[0]
    positions = chosen.tensor
    if positions.dtype == torch.bool:
        if positions.dim() != 1:
            raise Unmappable("a mask over several axes")
        positions = positions.nonzero().reshape(-1)
    em.node("Gather", [em.x(x), em.const(to_numpy(positions.to(torch.int64)), "index")], outs, axis=axis)


@converts("roll")
def roll(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Each rolled axis is the Concat of its last ``shift`` entries and the rest (a permutation)."""
    x = a["self"]
    rank = x.tensor.dim()
    shifts, dims = _ints(a["shifts"], 1), [int(d) for d in (a.get("dims") or [])]
    if not dims or len(shifts) != len(dims):
        raise Unmappable("roll of the flattened tensor")
    current = em.x(x)
    for k, (shift, dim) in enumerate(zip(shifts, dims)):
        axis = _axis(dim, rank)
        size = x.shape[axis]
        cut = size - shift % size if size else 0
        result = outs[0].name if k == len(dims) - 1 else em.temp(x.shape, f"rolled{k}")
        if cut in (0, size):
            em.node("Identity", [current], [result])
        else:
            tail_shape = x.shape[:axis] + (size - cut,) + x.shape[axis + 1 :]
            head_shape = x.shape[:axis] + (cut,) + x.shape[axis + 1 :]
            tail, head = em.temp(tail_shape, f"tail{k}"), em.temp(head_shape, f"head{k}")
            em.node("Split", [current, em.ints([cut, size - cut], f"split{k}")], [head, tail], axis=axis)
            em.node("Concat", [tail, head], [result], axis=axis)
        current = result


def _patch_geometry(a: dict[str, Any]) -> tuple[list[int], list[int], list[int], list[int]]:
    padding = _ints(a["padding"], 2)
    return _ints(a["kernel_size"], 2), _ints(a["dilation"], 2), padding * 2, _ints(a["stride"], 2)


@converts("im2col")
def im2col(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """F.unfold: the convolution whose weights pick one entry each (geometry.patch_picks), then a
    Reshape (as exact as any convolution)."""
    x = a["self"]
    _spatial(x, 2)
    n, c = x.shape[:2]
    kernel, dilations, pads, strides = _patch_geometry(a)
    taps = math.prod(kernel)
    blocks = block_counts(x.shape[2:], kernel, dilations, pads, strides)
    windows = em.temp((n, c * taps, *blocks), "windows")
    picks = em.const(patch_picks(c, kernel, to_numpy(x.tensor).dtype), "picks")
    attrs: dict[str, Any] = dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, group=1)
    em.node("Conv", [em.x(x), picks], [windows], **attrs)
    em.node("Reshape", [windows, em.ints(outs[0].shape, "shape")], outs)


@converts("col2im")
def col2im(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """F.fold, the adjoint of F.unfold: the columns laid out as blocks, then the transposed one-hot
    convolution, which sums the patches that overlap (as passes/col2im.py reads ONNX's Col2Im)."""
    x, out = a["self"], outs[0]
    if x.tensor.dim() != 3:
        raise Unmappable("fold of an unbatched input")
    kernel, dilations, pads, strides = _patch_geometry(a)
    blocks = block_counts(out.shape[2:], kernel, dilations, pads, strides)
    laid_out = em.temp((x.shape[0], x.shape[1], *blocks), "blocks")
    em.node("Reshape", [em.x(x), em.ints((x.shape[0], x.shape[1], *blocks), "blocks_shape")], [laid_out])
    picks = em.const(patch_picks(out.shape[1], kernel, to_numpy(x.tensor).dtype), "picks")
    attrs = fold_attributes(out.shape[2:], blocks, kernel, dilations, pads, strides)
    em.node("ConvTranspose", [laid_out, picks], outs, **attrs)


@converts("expand", "expand_as", "broadcast_to")
def expand(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Expand", [em.x(a["self"]), em.ints(outs[0].shape, "shape")], outs)


@converts("repeat")
def repeat(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, repeats = a["self"], [int(r) for r in a["repeats"]]
    if len(repeats) != x.tensor.dim():
        raise Unmappable("repeat that adds dimensions")
    em.node("Tile", [em.x(x), em.ints(repeats, "repeats")], outs)


@converts("tile")
def tile(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, dims = a["self"], [int(d) for d in a["dims"]]
    if len(dims) > x.tensor.dim():
        raise Unmappable("tile that adds dimensions")
    em.node("Tile", [em.x(x), em.ints([1] * (x.tensor.dim() - len(dims)) + dims, "repeats")], outs)


@converts("repeat_interleave")
def repeat_interleave(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Each entry along ``dim`` copied ``repeats`` times in place: a Gather with constant indices."""
    x, repeats = a.get("self"), a.get("repeats")
    if not isinstance(x, Tracked) or a.get("dim") is None:
        raise Unmappable("repeat_interleave of the flattened tensor, or of counts alone")
    if isinstance(repeats, Tracked):
        if repeats.variable:
            raise Unmappable("repeat_interleave by counts computed from the input")
        repeats = repeats.tensor
    axis = _axis(a["dim"], x.tensor.dim())
    picks = torch.arange(x.shape[axis]).repeat_interleave(torch.as_tensor(repeats))
    em.node("Gather", [em.x(x), em.const(to_numpy(picks.to(torch.int64)), "index")], outs, axis=axis)


@converts("diff")
def diff(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """n-th forward difference along ``dim``: x[1:] − x[:-1], n times, after prepend and append."""
    x = a["self"]
    rank = x.tensor.dim()
    axis = _axis(a.get("dim", -1), rank)
    parts = [t for t in (a.get("prepend"), x, a.get("append")) if t is not None]
    length = sum(t.shape[axis] if isinstance(t, Tracked) else 1 for t in parts)
    shape = list(x.shape)
    shape[axis] = length
    current = em.x(x)
    if len(parts) > 1:
        if not all(isinstance(t, Tracked) and t.tensor.dim() == rank for t in parts):
            raise Unmappable("diff with a scalar prepend or append")
        current = em.temp(tuple(shape), "joined")
        em.node("Concat", [em.x(t) for t in parts], [current], axis=axis)
    steps = int(a.get("n", 1))
    for k in range(steps):
        shape[axis] -= 1
        later, earlier = em.temp(tuple(shape), f"later{k}"), em.temp(tuple(shape), f"earlier{k}")
        for name, start, end in ((later, 1, INT64_MAX), (earlier, 0, shape[axis])):
            em.node(
                "Slice",
                [current, em.ints([start], f"s{k}"), em.ints([end], f"e{k}"), em.ints([axis], f"a{k}")],
                [name],
            )
        current = outs[0].name if k == steps - 1 else em.temp(tuple(shape), f"diff{k}")
        em.node("Sub", [later, earlier], [current])


@converts("channel_shuffle", "native_channel_shuffle")
def channel_shuffle(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Channels (g, c/g) read as (c/g, g): Reshape → Transpose → Reshape, as ONNX exporters write it."""
    x = a["self"]
    groups = int(a["groups"])
    n, c = x.shape[:2]
    rest = tuple(x.shape[2:])
    split = em.temp((n, groups, c // groups) + rest, "groups")
    moved = em.temp((n, c // groups, groups) + rest, "moved")
    em.node("Reshape", [em.x(x), em.ints((n, groups, c // groups) + rest, "split_shape")], [split])
    em.node("Transpose", [split], [moved], perm=[0, 2, 1, *range(3, 3 + len(rest))])
    em.node("Reshape", [moved, em.ints(outs[0].shape, "shape")], outs)


@converts("diagonal")
def diagonal(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """The two axes moved last and merged, then a Gather of the diagonal's positions (as torch puts
    the diagonal: a new last axis)."""
    x = a["self"]
    rank = x.tensor.dim()
    first, second = _axis(a.get("dim1", 0), rank), _axis(a.get("dim2", 1), rank)
    offset = int(a.get("offset", 0))
    rest = [d for d in range(rank) if d not in (first, second)]
    rows, columns = x.shape[first], x.shape[second]
    positions = [i * columns + i + offset for i in range(rows) if 0 <= i + offset < columns]
    moved = em.temp(tuple(x.shape[d] for d in rest) + (rows, columns), "moved")
    merged = em.temp(tuple(x.shape[d] for d in rest) + (rows * columns,), "merged")
    em.node("Transpose", [em.x(x)], [moved], perm=[*rest, first, second])
    em.node("Reshape", [moved, em.ints(tuple(x.shape[d] for d in rest) + (rows * columns,), "shape")], [merged])
    em.node("Gather", [merged, em.ints(positions, "positions")], outs, axis=len(rest))


@converts("tril", "triu")
def triangle(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Trilu, as both ONNX exporters write it, so that every path meets the same pass (trilu-mask)."""
    x = a["self"]
    offset = em.ints([int(a.get("diagonal", 0))], "k")
    em.node("Trilu", [em.x(x), offset], outs, upper=int(a["__op__"] == "triu"))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@converts(*sorted(PAD_OPS))
def pad(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    op = a["__op__"]
    mode = a.get("mode") or (
        "reflect"
        if op.startswith("reflection")
        else "replicate"
        if op.startswith("replication")
        else "circular"
        if op == "_pad_circular"
        else "constant"
    )
    if mode not in _PAD_MODES:
        raise Unmappable(f"pad mode {mode}")
    # (last begin, last end, 2nd-last begin, …)
    torch_pads = [int(p) for p in (a["pad"] if "pad" in a else a["padding"])]
    begins, ends = [0] * rank, [0] * rank
    for k in range(len(torch_pads) // 2):
        begins[rank - 1 - k], ends[rank - 1 - k] = torch_pads[2 * k], torch_pads[2 * k + 1]
    inputs = [em.x(x), em.ints(begins + ends, "pads")]
    if mode == "constant":
        inputs.append(em.x(float(a.get("value") or 0.0), x))
    em.node("Pad", inputs, outs, mode=_PAD_MODES[mode])


@converts("pixel_shuffle")
def pixel_shuffle(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    if x.tensor.dim() != 4:
        raise Unmappable(f"pixel_shuffle of a rank-{x.tensor.dim()} input")
    em.node("DepthToSpace", [em.x(x)], outs, blocksize=int(a["upscale_factor"]), mode="CRD")


@converts("pixel_unshuffle")
def pixel_unshuffle(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """out[c·r² + i·r + j, h, w] = x[c, h·r + i, w·r + j]: not SpaceToDepth's order (blocks first), so
    written as torch's own ONNX export writes it, Reshape → Transpose → Reshape."""
    x = a["self"]
    if x.tensor.dim() != 4:
        raise Unmappable(f"pixel_unshuffle of a rank-{x.tensor.dim()} input")
    r = int(a["downscale_factor"])
    n, c, h, w = x.shape
    blocks = (n, c, h // r, r, w // r, r)
    split = em.temp(blocks, "blocks")
    moved = em.temp((n, c, r, r, h // r, w // r), "moved")
    em.node("Reshape", [em.x(x), em.ints(blocks, "blocks_shape")], [split])
    em.node("Transpose", [split], [moved], perm=[0, 1, 3, 5, 2, 4])
    em.node("Reshape", [moved, em.ints(outs[0].shape, "shape")], outs)


# ONNX Resize settings that reproduce torch's upsampling.
_UPSAMPLE = {
    "nearest": ("nearest", "asymmetric", "floor"),
    "_nearest_exact": ("nearest", "tf_half_pixel_for_nn", "floor"),
}


def _upsample_scales(a: dict[str, Any], spatial: int) -> list[float] | None:
    """The scale factors the caller gave (torch then samples at them, not at out/in), or None."""
    if a.get("scale_factors") is not None:
        return [float(s) for s in _ints_or_floats(a["scale_factors"], spatial)]
    names = ["scales"] if spatial == 1 else [f"scales_{axis}" for axis in ("d", "h", "w")[3 - spatial :]]
    given = [float(a[name]) for name in names if a.get(name) is not None]
    if given and len(given) < len(names):
        raise Unmappable("upsampling with a scale factor for some axes only")
    return given or None


def _ints_or_floats(value: Any, n: int) -> list[float]:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    return values * n if len(values) == 1 else values


@converts(
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
    "upsample_linear1d",
    "upsample_bilinear2d",
    "upsample_trilinear3d",
    "upsample_bicubic2d",
)
def upsample(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """torch samples output index i of an axis at (i + ½)/s − ½ (linear, cubic), ⌊i/s⌋ (nearest) or
    ⌊(i + ½)/s⌋ (nearest-exact), with s the caller's scale factor when one is given, else out/in;
    align_corners samples at i·(in − 1)/(out − 1) whatever the factor. ONNX Resize computes the same
    coordinates from its ``scales`` input, and from out/in with ``sizes``."""
    x: Tracked = a["input"] if "input" in a else a["self"]
    op, out = a["__op__"], outs[0]
    spatial = x.tensor.dim() - 2
    if spatial < 1:
        raise Unmappable(f"upsampling of a rank-{x.tensor.dim()} input")
    mixes = "linear" in op or "cubic" in op
    align_corners = mixes and bool(a.get("align_corners"))
    if mixes:
        corners = "align_corners" if align_corners else "pytorch_half_pixel"
        interpolation = "cubic" if "cubic" in op else "linear"
        attrs: dict[str, Any] = dict(mode=interpolation, coordinate_transformation_mode=corners)
        if "cubic" in op:  # torch's bicubic: Keys' kernel with a = −0.75, indices past an edge read the edge
            attrs.update(cubic_coeff_a=-0.75, exclude_outside=0)
    else:
        mode, corners, rounding = _UPSAMPLE["_nearest_exact" if "exact" in op else "nearest"]
        attrs = dict(mode=mode, coordinate_transformation_mode=corners, nearest_mode=rounding)
    scales = None if align_corners else _upsample_scales(a, spatial)
    if scales is None:
        if corners == "pytorch_half_pixel" and any(o == 1 < i for i, o in zip(x.shape[2:], out.shape[2:])):
            # ONNX samples a length-1 output at 0, torch at (in − 1)/2.
            raise Unmappable("linear or cubic upsampling to a length of 1 without align_corners")
        em.node("Resize", [em.x(x), "", "", em.ints(out.shape, "sizes")], outs, **attrs)
        return
    if any(not s > 0 for s in scales):
        raise Unmappable(f"upsampling with scale factors {scales}")
    # Resize derives its output length as ⌊in·s⌋ in float32; it must be the length torch made.
    lengths = [int(np.floor(np.float32(i) * np.float32(s))) for i, s in zip(x.shape[2:], scales)]
    if lengths != list(out.shape[2:]):
        raise Unmappable(f"upsampling by {scales}: ONNX Resize would make {lengths}, torch made {list(out.shape[2:])}")
    if corners == "pytorch_half_pixel" and 1 in lengths and any(i > 1 for i in x.shape[2:]):
        raise Unmappable("linear or cubic upsampling to a length of 1 without align_corners")
    all_scales = np.asarray([1.0, 1.0, *scales], dtype=np.float32)
    em.node("Resize", [em.x(x), "", em.const(all_scales, "scales")], outs, **attrs)


# --- attention --------------------------------------------------------------------------------


@converts("scaled_dot_product_attention")
def attention(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """ONNX Attention (opset 23) on 4-D (batch, heads, tokens, dim) inputs: the same mask convention
    (a boolean mask keeps True entries, a float one is added), causal mask and scale.  3-D (batch,
    tokens, dim) inputs are one head: each gets a heads axis of 1 around the 4-D form (a 3-D mask
    too; a 2-D one broadcasts as it is)."""
    q, k, v = a["query"], a["key"], a["value"]
    if float(a.get("dropout_p") or 0.0):
        raise Unmappable("attention with dropout_p > 0 is random")
    rank = q.tensor.dim()
    if rank not in (3, 4) or k.tensor.dim() != rank or v.tensor.dim() != rank:
        raise Unmappable("attention on inputs of rank other than 3 or 4")
    # torch aligns the causal mask top-left (tril of ones(L, S)), as ONNX Attention without a cache does.
    causal = bool(a.get("is_causal"))
    attrs: dict[str, Any] = {"is_causal": int(causal)}
    scale = a.get("scale")
    if scale is not None:
        if not float(scale):
            raise Unmappable("attention with scale 0")
        attrs["scale"] = float(scale)
    mask = a.get("attn_mask")
    if rank == 4:
        inputs = [em.x(q), em.x(k), em.x(v)] + ([em.x(mask)] if mask is not None else [])
        em.node("Attention", inputs, outs[:1], **attrs)
        return

    def with_head(t: Tracked, tag: str) -> str:
        shape = tuple(int(d) for d in t.shape)
        if len(shape) < 3:
            return em.x(t)
        moved = em.temp((shape[0], 1) + shape[1:], f"{tag}_one_head")
        em.node("Reshape", [em.x(t), em.ints([shape[0], 1, *shape[1:]], f"{tag}_one_head_shape")], [moved])
        return moved

    inputs = [with_head(t, tag) for t, tag in ((q, "q"), (k, "k"), (v, "v"))]
    if mask is not None:
        inputs.append(with_head(mask, "mask"))
    b, length, width = int(q.shape[0]), int(q.shape[1]), int(v.shape[-1])
    attended = em.temp((b, 1, length, width), "attended")
    em.node("Attention", inputs, [attended], **attrs)
    em.node("Reshape", [attended, em.ints([b, length, width], "attended_shape")], outs[:1])


def _dense(
    em: Emitter, x: str, shape: tuple[int, ...], weight: np.ndarray, bias: np.ndarray, tag: str, out: str = ""
) -> str:
    """x·Wᵀ + b on the last axis (nn.Linear's weight layout); ``out`` names the result."""
    result_shape = shape[:-1] + (weight.shape[0],)
    product = em.temp(result_shape, f"{tag}_matmul")
    em.node("MatMul", [x, em.const(weight.T.copy(), f"{tag}_weight_t")], [product])
    out = out or em.temp(result_shape, tag)
    em.node("Add", [product, em.const(bias, f"{tag}_bias")], [out])
    return out


def _self_attention(
    em: Emitter, inputs: list[str], shape: tuple[int, ...], heads: int, weights: list[np.ndarray], out: str = ""
) -> str:
    """Multi-head attention as nn.MultiheadAttention computes it on (B, L, E) inputs (query, key,
    value): in-projections (one packed weight and bias), one Attention over the heads, the
    out-projection. ``weights``: qkv weight, qkv bias, out weight, out bias."""
    qkv_weight, qkv_bias, proj_weight, proj_bias = weights
    b, length, embed = shape
    d = embed // heads
    parts = []
    for k, (name, tag) in enumerate(zip(inputs, ("q", "k", "v"))):
        rows = slice(k * embed, (k + 1) * embed)
        projected = _dense(em, name, shape, qkv_weight[rows], qkv_bias[rows], f"{tag}_proj")
        split, moved = em.temp((b, length, heads, d), f"{tag}_split"), em.temp((b, heads, length, d), f"{tag}_heads")
        em.node("Reshape", [projected, em.ints([b, length, heads, d], f"{tag}_shape")], [split])
        em.node("Transpose", [split], [moved], perm=[0, 2, 1, 3])
        parts.append(moved)
    attended = em.temp((b, heads, length, d), "attended")
    em.node("Attention", parts, [attended])
    merged, joined = em.temp((b, length, heads, d), "merged"), em.temp(shape, "joined")
    em.node("Transpose", [attended], [merged], perm=[0, 2, 1, 3])
    em.node("Reshape", [merged, em.ints(list(shape), "joined_shape")], [joined])
    return _dense(em, joined, shape, proj_weight, proj_bias, "out_proj", out)


def _constants(a: dict[str, Any], names: list[str], what: str) -> list[np.ndarray]:
    arrays = []
    for name in names:
        value = a.get(name)
        if isinstance(value, Tracked) and not value.variable:
            value = value.tensor
        if not isinstance(value, torch.Tensor):
            raise Unmappable(f"{what} with weights computed from the input, or missing")
        arrays.append(to_numpy(value))
    return arrays


@converts("_native_multi_head_attention")
def native_multi_head_attention(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """nn.MultiheadAttention's inference fast path (batch first, no mask), as its op-by-op path."""
    if a.get("mask") is not None:
        raise Unmappable("the fast multi-head attention path with a mask")
    if a.get("need_weights") and len(outs) > 1 and outs[1].tensor.numel():
        raise Unmappable("multi-head attention that also returns its weights")
    tensors = [a["query"], a["key"], a["value"]]
    if any(t.tensor.dim() != 3 for t in tensors) or len({t.shape for t in tensors}) != 1:
        raise Unmappable("multi-head attention on inputs of rank other than 3 or of unequal lengths")
    weights = _constants(a, ["qkv_weight", "qkv_bias", "proj_weight", "proj_bias"], "multi-head attention")
    heads = int(a["num_head"])
    _self_attention(em, [em.x(t) for t in tensors], tensors[0].shape, heads, weights, outs[0].name)


@converts("_transformer_encoder_layer_fwd")
def transformer_encoder_layer(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """nn.TransformerEncoderLayer's inference fast path (no mask): x + MHA(LN₁ x), then + FFN(LN₂ ·)
    with norm_first; LN₁(x + MHA(x)), then LN₂(· + FFN(·)) without. FFN = W₂·act(W₁·x + b₁) + b₂,
    act GELU (exact) or ReLU."""
    if a.get("mask") is not None:
        raise Unmappable("the fast transformer encoder path with a mask")
    src = a["src"]
    if src.tensor.dim() != 3:
        raise Unmappable("a transformer encoder layer on an input of rank other than 3")
    shape = src.shape
    attention_weights = _constants(a, ["qkv_weight", "qkv_bias", "proj_weight", "proj_bias"], "transformer layer")
    norm1_w, norm1_b, norm2_w, norm2_b = _constants(
        a, ["norm_weight_1", "norm_bias_1", "norm_weight_2", "norm_bias_2"], "transformer layer"
    )
    ffn1_w, ffn1_b, ffn2_w, ffn2_b = _constants(
        a, ["ffn_weight_1", "ffn_bias_1", "ffn_weight_2", "ffn_bias_2"], "transformer layer"
    )
    epsilon, heads = float(np.float32(a["eps"])), int(a["num_heads"])

    def norm(x: str, weight: np.ndarray, bias: np.ndarray, tag: str, out: str = "") -> str:
        out = out or em.temp(shape, tag)
        inputs = [x, em.const(weight, f"{tag}_scale"), em.const(bias, f"{tag}_bias")]
        em.node("LayerNormalization", inputs, [out], axis=-1, epsilon=epsilon)
        return out

    def feed_forward(x: str) -> str:
        hidden = _dense(em, x, shape, ffn1_w, ffn1_b, "ffn1")
        active = em.temp(shape[:-1] + (ffn1_w.shape[0],), "ffn_act")
        if a["use_gelu"]:
            em.node("Gelu", [hidden], [active], approximate="none")
        else:
            em.node("Relu", [hidden], [active])
        return _dense(em, active, shape, ffn2_w, ffn2_b, "ffn2")

    def add(x: str, y: str, tag: str, out: str = "") -> str:
        out = out or em.temp(shape, tag)
        em.node("Add", [x, y], [out])
        return out

    x = em.x(src)
    if a["norm_first"]:
        normed = norm(x, norm1_w, norm1_b, "norm1")
        x = add(x, _self_attention(em, [normed] * 3, shape, heads, attention_weights), "residual1")
        add(x, feed_forward(norm(x, norm2_w, norm2_b, "norm2")), "residual2", outs[0].name)
    else:
        x = norm(
            add(x, _self_attention(em, [x] * 3, shape, heads, attention_weights), "residual1"),
            norm1_w,
            norm1_b,
            "norm1",
        )
        norm(add(x, feed_forward(x), "residual2"), norm2_w, norm2_b, "norm2", outs[0].name)


@converts("rms_norm")
def rms_norm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """x/√(mean x² + ε)·γ over the trailing ``normalized_shape``: the Normalize core (centered = 0)
    that FuseNormalization makes of a decomposed RMSNorm, times γ. ε defaults to the dtype's epsilon."""
    x, shape = a["input"], tuple(int(d) for d in a["normalized_shape"])
    rank = x.tensor.dim()
    eps = a.get("eps")
    epsilon = float(torch.finfo(x.tensor.dtype).eps) if eps is None else float(np.float32(eps))
    axes = list(range(rank - len(shape), rank))
    if a.get("weight") is None:
        em.node("Normalize", [em.x(x)], outs[:1], domain="lipaudit", axes=axes, epsilon=epsilon, centered=0)
        return
    core = em.temp(x.shape, "normalized")
    em.node("Normalize", [em.x(x)], [core], domain="lipaudit", axes=axes, epsilon=epsilon, centered=0)
    em.node("Mul", [core, em.x(a["weight"])], outs[:1])


# --- recurrent layers -------------------------------------------------------------------------

# Torch stacks the gates as (i, f, g, o) for LSTM and (r, z, n) for GRU; ONNX as (i, o, f, c) and (z, r, h).
_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}


def _gates(weight: Tracked | torch.Tensor, op: str) -> np.ndarray:
    """A weight or bias with its gates in ONNX's order (scripted code may hand over plain tensors)."""
    if isinstance(weight, Tracked):
        if weight.variable:
            raise Unmappable("a recurrent layer with weights computed from the input")
        weight = weight.tensor
    blocks = np.split(to_numpy(weight), len(_GATE_ORDER[op]), axis=0)
    return np.concatenate([blocks[i] for i in _GATE_ORDER[op]], axis=0)


def _state_rows(em: Emitter, state: Tracked | torch.Tensor | None, rows: slice, suffix: str) -> str:
    """Rows ``rows`` of an initial state (layers·directions, batch, hidden)."""
    if state is None:
        return ""
    if isinstance(state, torch.Tensor):
        return em.const(to_numpy(state)[rows], suffix)
    if not state.variable:
        return em.const(to_numpy(state.tensor)[rows], suffix)
    part = em.temp((rows.stop - rows.start,) + state.shape[1:], suffix)
    em.node(
        "Slice",
        [
            em.x(state),
            em.ints([rows.start], f"{suffix}_starts"),
            em.ints([rows.stop], f"{suffix}_ends"),
            em.ints([0], f"{suffix}_axes"),
        ],
        [part],
    )
    return part


@converts("lstm", "gru", "rnn_tanh", "rnn_relu")
def recurrent(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """nn.LSTM / nn.GRU / nn.RNN (aten::lstm.input, gru.input, rnn_tanh.input, rnn_relu.input) as one
    ONNX LSTM, GRU or RNN per layer, time-major (layout 0) as torch's ONNX export writes them, GRU
    with linear_before_reset = 1."""
    op, x = a["__op__"], a.get("input")
    if x is None:
        raise Unmappable(f"{op} on a packed sequence")
    layers, bidirectional = int(a["num_layers"]), bool(a["bidirectional"])
    if a["train"] and float(a["dropout"]) and layers > 1:
        raise Unmappable(f"{op} with dropout between layers in training mode is random")
    directions = 2 if bidirectional else 1
    per_direction = 4 if a["has_biases"] else 2
    params = list(a["params"])
    if len(params) != layers * directions * per_direction:
        raise Unmappable(f"{op} with projections (proj_size)")
    hidden = int(params[1].shape[1])
    gates = len(_GATE_ORDER[op])
    states = list(a["hx"]) if op == "lstm" else [a["hx"]]
    batch_first = bool(a["batch_first"])
    steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    current = em.x(x)
    if batch_first:
        current = em.temp((steps, batch, x.shape[2]), "time_major")
        em.node("Transpose", [em.x(x)], [current], perm=[1, 0, 2])
    finals: list[list[str]] = [[] for _ in states]
    for layer in range(layers):
        chunk = params[layer * directions * per_direction : (layer + 1) * directions * per_direction]
        weights = [chunk[d * per_direction : (d + 1) * per_direction] for d in range(directions)]
        w = np.stack([_gates(p[0], op) for p in weights])
        r = np.stack([_gates(p[1], op) for p in weights])
        if per_direction == 4:
            b = np.stack([np.concatenate([_gates(p[2], op), _gates(p[3], op)]) for p in weights])
        else:
            b = np.zeros((directions, 2 * gates * hidden), dtype=w.dtype)
        rows = slice(layer * directions, (layer + 1) * directions)
        initial = [_state_rows(em, state, rows, f"l{layer}_state{k}") for k, state in enumerate(states)]
        y = em.temp((steps, directions, batch, hidden), f"l{layer}_y")
        last = [em.temp((directions, batch, hidden), f"l{layer}_final{k}") for k in range(len(states))]
        inputs = [current, em.const(w, f"l{layer}_W"), em.const(r, f"l{layer}_R"), em.const(b, f"l{layer}_B"), ""]
        attrs: dict[str, Any] = dict(
            hidden_size=hidden, direction="bidirectional" if bidirectional else "forward", layout=0
        )
        if op == "gru":
            attrs["linear_before_reset"] = 1
        if op.startswith("rnn"):
            attrs["activations"] = [op.removeprefix("rnn_").capitalize()] * directions
        em.node("RNN" if op.startswith("rnn") else op.upper(), inputs + initial, [y] + last, **attrs)
        for k, name in enumerate(last):
            finals[k].append(name)
        moved = em.temp((steps, batch, directions, hidden), f"l{layer}_moved")
        em.node("Transpose", [y], [moved], perm=[0, 2, 1, 3])
        final_layer = layer == layers - 1
        current = (
            outs[0].name
            if final_layer and not batch_first
            else em.temp((steps, batch, directions * hidden), f"l{layer}_out")
        )
        em.node("Reshape", [moved, em.ints([steps, batch, directions * hidden], f"l{layer}_shape")], [current])
    if batch_first:
        em.node("Transpose", [current], outs[:1], perm=[1, 0, 2])
    for out, parts in zip(outs[1:], finals):
        em.node("Concat", parts, [out], axis=0)


@converts("embedding")
def embedding(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    em.node("Gather", [em.x(a["weight"]), em.x(a["indices"])], outs, axis=0)


def supported_ops() -> list[str]:
    return sorted(CONVERTERS)
