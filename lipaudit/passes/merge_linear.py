"""Merge chains of linear layers with nothing in between into one layer (docs/design.md, "Product bound").

The norm of a product is never larger than the product of the norms, and often well below it, so
a chain measured as one operator gives a tighter bound.  Only rewrites that keep the function
exactly are done:

* Gemm/MatMul → Gemm/MatMul with constant 2-D weights, the first one's output read only by the
  second: y = α₂(α₁·x·B₁' + β₁C₁)·B₂' + β₂C₂ = x·(α₁α₂·B₁'B₂') + (α₂β₁·C₁B₂' + β₂C₂).  MatMul →
  MatMul also for a batched (N-d) variable: x·W₁·W₂ = x·(W₁W₂).  Skipped when the merged matrix
  would be much larger than the two factors (a low-rank bottleneck): measuring it would cost more
  than it gains.
* Conv → Conv where the second has stride 1, no padding and a single group, and the first a single
  group: the second then reads only real outputs of the first, and
      y₂[o, j] = Σ_{c', τ} W[o, c', τ]·x_pad[c', j·s₁ + τ],
      W[o, c', τ] = Σ_{t₂·d₂·s₁ + t₁·d₁ = τ} Σ_c W₂[o, c, t₂]·W₁[c, c', t₁],
  a convolution with the first one's stride and padding, dilation 1 and kernel span
  (k₂ − 1)·d₂·s₁ + (k₁ − 1)·d₁ + 1; the first bias passes through as Σ_{c,t₂} W₂[o, c, t₂]·b₁[c].
  When the second convolution pads its input (the usual 'same' case), the padding zeros are not
  outputs of the first convolution, so the pair is *not* one convolution and is left alone.

A merge is also left alone when float64 cannot hold the product: a term a·b below the normal range
loses its digits (1e-170·1e-170 is 0), one above it is inf, and either would be measured as a
wrong map (a certified 0 for a nonzero chain, or "unbounded" for a finite one).  Two separate maps
are always sound: the bound is then the product of their norms.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .manager import Pass

# Merge two dense layers only while the product has at most this many times the entries of the
# two factors together (beyond that its norm costs more than the product of the two norms).
DENSE_GROWTH_LIMIT = 4


class MergeLinear(Pass):
    """Merge every eligible pair; a merged node is tried again at once, so chains collapse in one pass."""

    name = "merge-linear"

    def __init__(self) -> None:
        self.merged = 0

    def run(self, graph: Graph) -> bool:
        before = self.merged
        for node in graph.nodes:
            survivor: Node | None = node
            while survivor is not None and survivor in graph:
                survivor = _merge_dense(graph, survivor) or _merge_conv(graph, survivor)
                self.merged += survivor is not None
        return self.merged > before


def merge_linear(graph: Graph) -> int:
    """Merge every eligible pair of ``graph``; how many merges were made."""
    merging = MergeLinear()
    merging.run(graph)
    return merging.merged


# ---------------------------------------------------------------------------------------------
# Range


def _representable(a: np.ndarray, b: np.ndarray, fan: int = 1) -> bool:
    """Whether every nonzero term a[i, k]·b[k, j] of a @ b is a normal float64 and every sum of
    ``fan`` such products stays finite: the product then keeps all its digits up to rounding.

    Bounds per inner index k (smallest nonzero, largest), so nothing is formed that could itself
    overflow unnoticed; a sum of normal terms that cancels below the normal range is exact.
    """
    tiny, huge = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    mag_a, mag_b = np.abs(a), np.abs(b.T)
    if not (np.isfinite(mag_a).all() and np.isfinite(mag_b).all()):
        return False
    with np.errstate(all="ignore"):
        small_a = np.where(mag_a > 0, mag_a, np.inf).min(axis=0, initial=np.inf)
        small_b = np.where(mag_b > 0, mag_b, np.inf).min(axis=0, initial=np.inf)
        both = np.isfinite(small_a) & np.isfinite(small_b)  # k with a nonzero term
        if (small_a[both] * small_b[both] < tiny).any():
            return False
        largest = fan * float(np.sum(mag_a.max(axis=0, initial=0.0) * mag_b.max(axis=0, initial=0.0)))
    return bool(largest <= huge)


def _scaled(factor: float, array: np.ndarray) -> np.ndarray | None:
    """factor·array, or None where that loses a term to underflow or overflow."""
    array = np.asarray(array, np.float64)
    if not _representable(np.array([[factor]]), array.reshape(1, -1)):
        return None
    return factor * array


# ---------------------------------------------------------------------------------------------
# Dense


def _dense_dims(graph: Graph, node: Node | None) -> tuple[int, int] | None:
    """(rows, columns) of W in x·W for a Gemm/MatMul with a constant 2-D weight; reads no weight."""
    if node is None or node.domain or node.op_type not in ("Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    weight = graph.const(node.inputs[1])
    if graph.is_const(node.inputs[0]) or weight is None or weight.ndim != 2:
        return None
    if node.op_type == "MatMul":
        return int(weight.shape[0]), int(weight.shape[1])
    if node.attr_int("transA") or (len(node.inputs) > 2 and node.inputs[2] and not graph.is_const(node.inputs[2])):
        return None
    rows, columns = weight.shape
    return (int(columns), int(rows)) if node.attr_int("transB") else (int(rows), int(columns))


def _dense_parts(graph: Graph, node: Node):
    """(weight as x·W, bias or None, variable input) of a node _dense_dims accepts, in float64;
    None where alpha or beta cannot be folded in without underflow or overflow."""
    x, weight = node.inputs[0], np.asarray(graph.const(node.inputs[1]), np.float64)
    if node.op_type == "MatMul":
        return weight, None, x
    scaled = _scaled(node.attr_float("alpha"), weight.T if node.attr_int("transB") else weight)
    bias = None
    if len(node.inputs) > 2 and node.inputs[2]:
        bias = _scaled(node.attr_float("beta"), np.asarray(graph.const(node.inputs[2]), np.float64))
        if bias is None:
            return None
    return None if scaled is None else (scaled, bias, x)


def _merge_dense(graph: Graph, first: Node) -> Node | None:
    """Merge ``first`` into the dense layer reading it; the merged node, or None.

    Everything is decided from shapes first: a weight is read (and converted) only for a merge that
    happens, so a model whose weights stay on disk is not pulled into memory by this pass.
    """
    head_dims = _dense_dims(graph, first)
    second = graph.sole_consumer(first.outputs[0]) if head_dims is not None else None
    tail_dims = _dense_dims(graph, second)
    if head_dims is None or second is None or tail_dims is None or second.inputs[0] != first.outputs[0]:
        return None
    (r1, c1), (r2, c2) = head_dims, tail_dims
    if c1 != r2 or r1 * c2 > DENSE_GROWTH_LIMIT * (r1 * c1 + r2 * c2):
        return None
    both_matmul = first.op_type == second.op_type == "MatMul"
    shape = graph.shape(first.inputs[0])
    if not both_matmul and (shape is None or len(shape) != 2):
        return None  # Gemm is 2-D only
    head, tail = _dense_parts(graph, first), _dense_parts(graph, second)
    if head is None or tail is None:
        return None
    (w1, b1, x), (w2, b2, _) = head, tail
    if b1 is not None:  # Gemm's C broadcasts to (rows, c1): spell the columns out before the product
        b1 = np.broadcast_to(b1, (*np.shape(b1)[:-1], c1) if np.ndim(b1) else (c1,))
    if not _representable(w1, w2) or (b1 is not None and not _representable(b1.reshape(-1, c1), w2)):
        return None
    weight = w1 @ w2
    bias = None if b1 is None else b1 @ w2
    if b2 is not None:
        with np.errstate(all="ignore"):  # a sum that overflows is caught below
            bias = b2 if bias is None else bias + b2
    if bias is not None and not np.isfinite(bias).all():
        return None
    inputs = [x, graph.new_value(f"{second.name}::weight_merged", const=weight).name]
    if bias is not None:
        inputs.append(graph.new_value(f"{second.name}::bias_merged", const=bias).name)
    second.op_type = "MatMul" if both_matmul else "Gemm"
    second.attrs = {} if both_matmul else {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
    graph.remove_node(first)
    graph.set_inputs(second, inputs)
    second.notes.append(f"merged with '{first.name}' ({first.op_type}): measured as one linear map")
    return second


# ---------------------------------------------------------------------------------------------
# Convolution


def _conv_ok(graph: Graph, node: Node) -> bool:
    if node.domain or node.op_type != "Conv" or len(node.inputs) < 2 or graph.is_const(node.inputs[0]):
        return False
    weight = graph.const(node.inputs[1])
    auto_pad = node.attr_str("auto_pad")
    if weight is None or weight.ndim < 3 or node.attr_int("group") != 1 or auto_pad not in ("NOTSET", "VALID"):
        return False
    if len(node.inputs) > 2 and node.inputs[2] and not graph.is_const(node.inputs[2]):
        return False
    return True


def _attr(node: Node, name: str, n: int, default: int) -> tuple[int, ...]:
    """An ints attribute that ONNX lets default to ``default`` per axis when absent (VALID: no pads)."""
    if name == "pads" and node.attr_str("auto_pad") == "VALID":
        return (0,) * n
    return node.attr_ints(name, ()) or (default,) * n


def _merge_conv(graph: Graph, first: Node) -> Node | None:
    """Merge ``first`` into the convolution reading it; the merged node, or None."""
    if not _conv_ok(graph, first):
        return None
    second = graph.sole_consumer(first.outputs[0])
    if second is None or not _conv_ok(graph, second) or second.inputs[0] != first.outputs[0]:
        return None
    w1 = np.asarray(graph.const(first.inputs[1]), np.float64)
    w2 = np.asarray(graph.const(second.inputs[1]), np.float64)
    n = w1.ndim - 2
    if w2.ndim != w1.ndim or w2.shape[1] != w1.shape[0]:
        return None
    if _attr(second, "strides", n, 1) != (1,) * n or _attr(second, "pads", 2 * n, 0) != (0,) * (2 * n):
        return None
    s1, d1, d2 = _attr(first, "strides", n, 1), _attr(first, "dilations", n, 1), _attr(second, "dilations", n, 1)
    k1, k2 = w1.shape[2:], w2.shape[2:]
    # Each merged tap sums at most one (t₁, t₂) pair per t₂ for every channel c.
    taps2 = np.moveaxis(w2, 1, -1).reshape(-1, w1.shape[0])
    if not _representable(taps2, w1.reshape(w1.shape[0], -1), int(np.prod(k2))):
        return None
    span = tuple((a - 1) * dd * s + (b - 1) * d + 1 for a, b, s, d, dd in zip(k2, k1, s1, d1, d2))
    weight = np.zeros((w2.shape[0], w1.shape[1], *span))
    for t2 in np.ndindex(*k2):
        for t1 in np.ndindex(*k1):
            tau = tuple(a * dd * s + b * d for a, b, s, d, dd in zip(t2, t1, s1, d1, d2))
            weight[(slice(None), slice(None), *tau)] += (
                w2[(slice(None), slice(None), *t2)] @ w1[(slice(None), slice(None), *t1)]
            )
    bias = np.zeros(w2.shape[0])
    with np.errstate(all="ignore"):  # a sum that overflows is caught below
        if len(first.inputs) > 2 and first.inputs[2]:
            b1 = np.asarray(graph.const(first.inputs[2]), np.float64)
            if not _representable(taps2, b1.reshape(-1, 1), int(np.prod(k2))):
                return None
            bias += w2.sum(axis=tuple(range(2, 2 + n))) @ b1
        if len(second.inputs) > 2 and second.inputs[2]:
            bias += np.asarray(graph.const(second.inputs[2]), np.float64)
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        return None
    weight_value = graph.new_value(f"{second.name}::weight_merged", const=weight)
    bias_value = graph.new_value(f"{second.name}::bias_merged", const=bias)
    second.attrs = {
        "strides": list(s1),
        "dilations": [1] * n,
        "kernel_shape": list(span),
        "group": 1,
        "auto_pad": "NOTSET",
        "pads": list(_attr(first, "pads", 2 * n, 0)),
    }
    graph.remove_node(first)
    graph.set_inputs(second, [first.inputs[0], weight_value.name, bias_value.name])
    second.notes.append(f"merged with '{first.name}' (Conv): measured as one convolution")
    return second
