"""aten ops that are compositions of IR ops the other converters already write (lipaudit.load.aten_ops),
as the ONNX exporters spell them, so the torch paths reach the verdict the ONNX files get: moves
(movedim, rot90, take_along_dim, diag_embed), writes at constant indices (index_add, scatter_add),
pointwise compositions (addcmul, addcdiv, lerp), nn.Bilinear and RReLU at inference."""

from __future__ import annotations

from typing import Any

import numpy as np

from .aten_ops import CONVERTERS, INT64_MAX, _axis, _constants, _plus_scaled, _plus_scaled_product, converts
from .torch_graph import Converter, Emitter, Tracked, Unmappable, to_numpy


@converts("movedim", "moveaxis")
def movedim(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x = a["self"]
    rank = x.tensor.dim()
    sources = [_axis(d, rank) for d in np.atleast_1d(a["source"]).tolist()]
    targets = [_axis(d, rank) for d in np.atleast_1d(a["destination"]).tolist()]
    perm: list[int | None] = [None] * rank
    for source, target in zip(sources, targets):
        perm[target] = source
    rest = iter(d for d in range(rank) if d not in sources)
    em.node("Transpose", [em.x(x)], outs, perm=[d if d is not None else next(rest) for d in perm])


def _flip(em: Emitter, source: str, axis: int, out: str) -> None:
    starts, ends, axes, steps = ([-1], "starts"), ([-INT64_MAX - 1], "ends"), ([axis], "axes"), ([-1], "steps")
    em.node("Slice", [source, *(em.ints(values, name) for values, name in (starts, ends, axes, steps))], [out])


@converts("rot90")
def rot90(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """k = 1: flip the second axis, then swap the two; 2: flip both; 3: swap, then flip the second."""
    x = a["self"]
    rank, shape = x.tensor.dim(), x.shape
    first, second = (_axis(d, rank) for d in a.get("dims", [0, 1]))
    turns = int(a.get("k", 1)) % 4
    swap = list(range(rank))
    swap[first], swap[second] = second, first
    swapped = tuple(shape[d] for d in swap)
    out = outs[0].name
    if turns == 0:
        em.node("Identity", [em.x(x)], [out])
    elif turns == 1:
        flipped = em.temp(shape, "flipped")
        _flip(em, em.x(x), second, flipped)
        em.node("Transpose", [flipped], [out], perm=swap)
    elif turns == 2:
        flipped = em.temp(shape, "flipped")
        _flip(em, em.x(x), first, flipped)
        _flip(em, flipped, second, out)
    else:
        moved = em.temp(swapped, "swapped")
        em.node("Transpose", [em.x(x)], [moved], perm=swap)
        _flip(em, moved, second, out)


@converts("take_along_dim")
def take_along_dim(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, indices, dim = a["self"], a["indices"], a.get("dim")
    if dim is None or not isinstance(indices, Tracked) or indices.shape != outs[0].shape:
        raise Unmappable("take_along_dim over the flattened tensor, or with indices that broadcast")
    em.node("GatherElements", [em.x(x), em.x(indices)], outs, axis=_axis(dim, x.tensor.dim()))


@converts("diag_embed")
def diag_embed(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """out[…, i, j] = x[…, i]·δᵢⱼ: the input with a new last axis, times the identity."""
    x = a["self"]
    if int(a.get("offset", 0)) != 0 or _axis(a.get("dim1", -2), x.tensor.dim() + 1) != x.tensor.dim() - 1:
        raise Unmappable("diag_embed off the main diagonal or onto other axes")
    if _axis(a.get("dim2", -1), x.tensor.dim() + 1) != x.tensor.dim():
        raise Unmappable("diag_embed onto other axes")
    n = x.shape[-1]
    column = em.temp((*x.shape, 1), "column")
    em.node("Unsqueeze", [em.x(x), em.ints([-1], "axes")], [column])
    identity = em.const(np.eye(n, dtype=to_numpy(outs[0].tensor).dtype), "identity")
    em.node("Mul", [column, identity], outs)


@converts("diag")
def diag(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """torch.diag: a vector onto the main diagonal of a matrix (diag_embed), or a matrix's k-th diagonal."""
    x, offset = a["self"], int(a.get("diagonal", 0))
    if x.tensor.dim() == 1 and offset == 0:
        diag_embed(em, {"self": x}, outs)
    elif x.tensor.dim() == 2:
        CONVERTERS["diagonal"](em, {"self": x, "offset": offset, "dim1": 0, "dim2": 1, "__op__": "diagonal"}, outs)
    else:
        raise Unmappable("diag of a vector onto an off-main diagonal")


def _scatter_add(em: Emitter, data: Any, axis: int, index: np.ndarray, updates: str, outs: list[Tracked]) -> None:
    index_name = em.const(index.astype(np.int64), "index")
    em.node("ScatterElements", [em.x(data, outs[0]), index_name, updates], outs, axis=axis, reduction="add")


@converts("scatter_add")
def scatter_add(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    x, source = a["self"], a["src"]
    (index,) = _constants(a, ["index"], "scatter_add")
    if not isinstance(source, Tracked) or tuple(index.shape) != source.shape:
        raise Unmappable("scatter_add with an index smaller than its source")
    _scatter_add(em, x, _axis(a["dim"], x.tensor.dim()), index, em.x(source), outs)


@converts("index_add")
def index_add(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """self with alpha·source[i] added at position index[i] along dim: a ScatterElements with
    reduction add, the index spread over the source's shape."""
    x, source, alpha = a["self"], a["source"], a.get("alpha", 1)
    if not isinstance(source, Tracked):
        raise Unmappable("index_add of a number")
    rank = source.tensor.dim()
    axis = _axis(a["dim"], max(rank, 1))
    positions = _constants(a, ["index"], "index_add")[0].reshape(-1)
    shape = [1] * rank
    shape[axis] = -1
    index = np.broadcast_to(positions.reshape(shape), source.shape)
    updates = em.x(source)
    if float(alpha) != 1.0:
        updates = em.temp(source.shape, "scaled")
        em.node("Mul", [em.x(source), em.x(float(alpha), outs[0])], [updates])
    _scatter_add(em, x, axis, index, updates, outs)


def _product_added(em: Emitter, a: dict[str, Any], outs: list[Tracked], op_type: str) -> None:
    """self + value·(tensor1 ∘ tensor2)."""
    out = outs[0]
    combined = em.temp(out.shape, "combined")
    em.node(op_type, [em.x(a["tensor1"], out), em.x(a["tensor2"], out)], [combined])
    value = float(a.get("value", 1))
    if value != 1.0:
        scaled = em.temp(out.shape, "scaled")
        em.node("Mul", [combined, em.x(value, out)], [scaled])
        combined = scaled
    em.node("Add", [em.x(a["self"], out), combined], outs)


@converts("addcmul")
def addcmul(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    _product_added(em, a, outs, "Mul")


@converts("addcdiv")
def addcdiv(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    _product_added(em, a, outs, "Div")


@converts("lerp")
def lerp(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """self + weight·(end − self)."""
    out = outs[0]
    step, moved = em.temp(out.shape, "step"), em.temp(out.shape, "moved")
    em.node("Sub", [em.x(a["end"], out), em.x(a["self"], out)], [step])
    em.node("Mul", [step, em.x(a["weight"], out)], [moved])
    em.node("Add", [em.x(a["self"], out), moved], outs)


@converts("bilinear")
def bilinear(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """y_k = x₁ᵀ W_k x₂ + b_k as the dynamo exporter writes it: x₁ times W reshaped to (n₁, K·n₂), then
    a batched product with x₂."""
    first, second, bias = a["input1"], a["input2"], a.get("bias")
    if not (isinstance(first, Tracked) and isinstance(second, Tracked)) or first.tensor.dim() != 2:
        raise Unmappable("bilinear of inputs other than two (batch, features) tensors")
    (kernel,) = _constants(a, ["weight"], "bilinear")
    outputs, n1, n2 = kernel.shape
    batch = first.shape[0]
    mixed = em.const(np.ascontiguousarray(kernel.transpose(1, 0, 2).reshape(n1, outputs * n2)), "weight")
    flat, grid, column, product = (
        em.temp((batch, outputs * n2), "mixed"),
        em.temp((batch, outputs, n2), "grid"),
        em.temp((batch, n2, 1), "column"),
        em.temp((batch, outputs, 1), "product"),
    )
    em.node("MatMul", [em.x(first), mixed], [flat])
    em.node("Reshape", [flat, em.ints([batch, outputs, n2], "grid_shape")], [grid])
    em.node("Unsqueeze", [em.x(second), em.ints([2], "axes")], [column])
    em.node("MatMul", [grid, column], [product])
    if bias is None:
        em.node("Squeeze", [product, em.ints([2], "squeeze_axes")], outs)
        return
    squeezed = em.temp((batch, outputs), "squeezed")
    em.node("Squeeze", [product, em.ints([2], "squeeze_axes")], [squeezed])
    em.node("Add", [squeezed, em.x(bias, outs[0])], outs)


@converts("rrelu")
def rrelu(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """At inference RReLU is a LeakyReLU of slope (lower + upper)/2; in training its slopes are random."""
    if a.get("training"):
        raise Unmappable("RReLU in training mode draws random slopes")
    slope = (float(a.get("lower", 1 / 8)) + float(a.get("upper", 1 / 3))) / 2
    em.node("LeakyRelu", [em.x(a["self"])], outs, alpha=slope)


@converts("mT", "mH", "adjoint")
def matrix_transpose(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """The last two axes swapped (real tensors: mH and adjoint are mT)."""
    x = a["self"]
    rank = x.tensor.dim()
    if rank < 2 or x.tensor.is_complex():
        raise Unmappable("a matrix transpose of fewer than two axes, or of complex values")
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    em.node("Transpose", [em.x(x)], outs, perm=perm)


@converts("outer", "ger")
def outer(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """u vᵀ as the column u times the row v (a product of two variables where both are)."""
    out = outs[0]
    first, second = a["self"], a.get("vec2", a.get("other"))
    column, row = em.temp((out.shape[0], 1), "column"), em.temp((1, out.shape[1]), "row")
    em.node("Unsqueeze", [em.x(first, out), em.ints([1], "column_axis")], [column])
    em.node("Unsqueeze", [em.x(second, out), em.ints([0], "row_axis")], [row])
    em.node("Mul", [column, row], outs)


@converts("addmv")
def addmv(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """beta·self + alpha·(mat @ vec)."""
    _plus_scaled_product(em, a["mat"], a["vec"], a, outs)


@converts("addbmm")
def addbmm(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """beta·self + alpha·Σ_b batch1[b] @ batch2[b]: the batched product summed over the batch."""
    out, first = outs[0], a["batch1"]
    products, total = em.temp((first.shape[0], *out.shape), "products"), em.temp(out.shape, "total")
    em.node("MatMul", [em.x(first), em.x(a["batch2"])], [products])
    em.node("ReduceSum", [products, em.ints([0], "batch")], [total], keepdims=0)
    alpha = float(a.get("alpha", 1))
    if float(a.get("beta", 1)) != 0.0:
        _plus_scaled(em, total, a, outs)
    elif alpha == 1.0:  # beta 0: torch reads no self at all
        em.node("Identity", [total], outs)
    else:
        em.node("Mul", [total, em.x(alpha, out)], outs)


@converts("trace")
def trace(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """The sum of a matrix's diagonal: its entries i·(columns + 1), gathered, then summed."""
    x = a["self"]
    rows, columns = x.shape
    flat, picked = em.temp((rows * columns,), "flat"), em.temp((min(rows, columns),), "diagonal")
    em.node("Reshape", [em.x(x), em.ints([rows * columns], "shape")], [flat])
    em.node("Gather", [flat, em.ints([i * (columns + 1) for i in range(min(rows, columns))], "positions")], [picked])
    em.node("ReduceSum", [picked, em.ints([0], "axes")], outs, keepdims=0)


@converts("var_mean", "std_mean")
def var_mean(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """(var or std, mean) over ``dim``: the variance as var/std write it, and the mean beside it."""
    x = a["self"]
    CONVERTERS["var"](em, {**a, "__op__": "var" if a["__op__"] == "var_mean" else "std"}, outs[:1])
    keep = int(bool(a.get("keepdim", False)))
    axes = sorted(_axis(d, x.tensor.dim()) for d in (a.get("dim") or range(x.tensor.dim())))
    em.node("ReduceMean", [em.x(x)], outs[1:2], axes=axes, keepdims=keep)


@converts("unfold")
def sliding_windows(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
    """Tensor.unfold(dim, size, step): windows along ``dim`` as a new last axis; a Gather of the
    windows' positions (windows, size) on that axis, then the size axis moved last."""
    x = a["self"]
    rank = x.tensor.dim()
    axis = _axis(a["dimension"], rank)
    size, step = int(a["size"]), int(a["step"])
    count = (x.shape[axis] - size) // step + 1
    positions = np.arange(count)[:, None] * step + np.arange(size)[None, :]
    gathered_shape = (*x.shape[:axis], count, size, *x.shape[axis + 1 :])
    gathered = em.temp(gathered_shape, "windows")
    em.node("Gather", [em.x(x), em.const(positions.astype(np.int64), "positions")], [gathered], axis=axis)
    perm = [d for d in range(rank + 1) if d != axis + 1] + [axis + 1]
    em.node("Transpose", [gathered], outs, perm=perm)


# Names torch.export keeps where TorchScript writes the canonical op (torch.swapaxes is
# aten::swapaxes in a .pt2, aten::transpose in a .pt): the canonical op's converter, its arguments
# renamed where the alias names them otherwise.
_ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    "multiply": ("mul", {}),
    "subtract": ("sub", {}),
    "divide": ("div", {}),
    "true_divide": ("div", {}),
    "absolute": ("abs", {}),
    "negative": ("neg", {}),
    "special_expit": ("sigmoid", {}),
    "arctan": ("atan", {}),
    "arcsin": ("asin", {}),
    "arccos": ("acos", {}),
    "arcsinh": ("asinh", {}),
    "arccosh": ("acosh", {}),
    "arctanh": ("atanh", {}),
    "special_erf": ("erf", {}),
    "special_softmax": ("softmax", {}),
    "special_log_softmax": ("log_softmax", {}),
    "swapdims": ("transpose", {}),
    "swapaxes": ("transpose", {"axis0": "dim0", "axis1": "dim1"}),
    "narrow_copy": ("narrow", {}),
}


def _alias(canonical: str, renames: dict[str, str]) -> Converter:
    target = CONVERTERS[canonical]

    def convert(em: Emitter, a: dict[str, Any], outs: list[Tracked]) -> None:
        target(em, {**{renames.get(k, k): v for k, v in a.items()}, "__op__": canonical}, outs)

    return convert


for _name, (_canonical, _renames) in _ALIASES.items():
    converts(_name)(_alias(_canonical, _renames))
