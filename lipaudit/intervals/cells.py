"""The LSTM, GRU and RNN cell equations, written once over an algebra: torch tensors for the op's run,
intervals for its ranges on a box (the same equations, so the ranges cover what ``run`` computes).

ONNX gate orders: LSTM i, o, f, c (peepholes i, o, f); GRU z, r, h; RNN one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from .interval import Interval, add, from_center_radius, hull, product

V = TypeVar("V")


class Algebra(Protocol[V]):
    def affine(self, x: V, weight: Any, bias: Any) -> V: ...  # x·Wᵀ + b on rows of x
    def add(self, a: V, b: V) -> V: ...
    def mul(self, a: V, b: V) -> V: ...
    def scale(self, a: V, constant: Any) -> V: ...  # entrywise by a constant vector
    def sigmoid(self, a: V) -> V: ...
    def tanh(self, a: V) -> V: ...
    def relu(self, a: V) -> V: ...
    def blend(self, z: V, a: V, b: V) -> V: ...  # (1 − z)·a + z·b with z in [0, 1]


class TorchAlgebra:
    def affine(self, x, weight, bias):
        return x @ weight.T + bias

    def add(self, a, b):
        return a + b

    def mul(self, a, b):
        return a * b

    def scale(self, a, constant):
        return a * constant

    def sigmoid(self, a):
        return torch.sigmoid(a)

    def tanh(self, a):
        return torch.tanh(a)

    def relu(self, a):
        return torch.relu(a)

    def blend(self, z, a, b):
        return (1 - z) * a + z * b


class IntervalAlgebra:
    """Sound ranges: every operation rounds outwards."""

    def affine(self, x: Interval, weight, bias) -> Interval:
        wt = np.asarray(weight, np.float64).T
        bias = np.asarray(bias, np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            center = x.center @ wt + bias
            return from_center_radius(center, x.radius @ np.abs(wt), x.magnitude @ np.abs(wt) + np.abs(bias))

    def add(self, a: Interval, b: Interval) -> Interval:
        return add(a, b)

    def mul(self, a: Interval, b: Interval) -> Interval:
        return product(a, b)

    def scale(self, a: Interval, constant) -> Interval:
        return product(a, Interval.exact(np.asarray(constant, np.float64)))

    def sigmoid(self, a: Interval) -> Interval:
        return Interval(_sigmoid(a.lo), _sigmoid(a.hi)).widened()

    def tanh(self, a: Interval) -> Interval:
        return Interval(np.tanh(a.lo), np.tanh(a.hi)).widened()

    def relu(self, a: Interval) -> Interval:
        return Interval(np.maximum(a.lo, 0.0), np.maximum(a.hi, 0.0))

    def blend(self, z: Interval, a: Interval, b: Interval) -> Interval:
        return hull(a, b).widened()  # a convex combination lies between its ends, entry by entry


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        small = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


@dataclass
class LstmStep(Generic[V]):
    pre: dict[str, V]  # the gates' pre-activations, i, o, f, c
    i: V
    f: V
    g: V
    o: V
    cell: V
    squashed: V  # tanh(cell)
    hidden: V


def lstm_step(alg: Algebra[V], x: V, h: V, c: V, w, r, bias, peephole, hidden: int) -> LstmStep[V]:
    """i = σ(z_i + p_i⊙c), f = σ(z_f + p_f⊙c), c' = f⊙c + i⊙tanh(z_c), o = σ(z_o + p_o⊙c'),
    h' = o⊙tanh(c'), with z = W·x + R·h + (Wb + Rb); ``bias`` is Wb + Rb (4H)."""
    rows = {q: slice(k * hidden, (k + 1) * hidden) for k, q in enumerate("iofc")}
    pre = {q: alg.add(alg.affine(x, w[s], bias[s]), alg.affine(h, r[s], 0.0)) for q, s in rows.items()}
    pre["i"] = alg.add(pre["i"], alg.scale(c, peephole[:hidden]))
    pre["f"] = alg.add(pre["f"], alg.scale(c, peephole[2 * hidden :]))
    i, f, g = alg.sigmoid(pre["i"]), alg.sigmoid(pre["f"]), alg.tanh(pre["c"])
    cell = alg.add(alg.mul(f, c), alg.mul(i, g))
    pre["o"] = alg.add(pre["o"], alg.scale(cell, peephole[hidden : 2 * hidden]))
    o = alg.sigmoid(pre["o"])
    squashed = alg.tanh(cell)
    return LstmStep(pre, i, f, g, o, cell, squashed, alg.mul(o, squashed))


@dataclass
class GruStep(Generic[V]):
    update_pre: V
    reset_pre: V
    update: V
    reset: V
    recurrent: V | None  # R_h·h + Rb_h, with linear_before_reset
    candidate_pre: V
    candidate: V
    hidden: V


def gru_step(alg: Algebra[V], x: V, h: V, w, r, w_bias, r_bias, hidden: int, linear_before_reset: bool) -> GruStep[V]:
    """z = σ(W_z·x + R_z·h + b_z), r = σ(W_r·x + R_r·h + b_r), h̃ = tanh(W_h·x + R_h·(r⊙h) + b_h)
    (or W_h·x + r⊙(R_h·h + Rb_h) + Wb_h with linear_before_reset), h' = (1 − z)⊙h̃ + z⊙h."""
    gz, gr, gh = (slice(k * hidden, (k + 1) * hidden) for k in range(3))
    update_pre = alg.add(alg.affine(x, w[gz], w_bias[gz]), alg.affine(h, r[gz], r_bias[gz]))
    reset_pre = alg.add(alg.affine(x, w[gr], w_bias[gr]), alg.affine(h, r[gr], r_bias[gr]))
    update, reset = alg.sigmoid(update_pre), alg.sigmoid(reset_pre)
    recurrent = None
    if linear_before_reset:
        recurrent = alg.affine(h, r[gh], r_bias[gh])
        candidate_pre = alg.add(alg.affine(x, w[gh], w_bias[gh]), alg.mul(reset, recurrent))
    else:
        candidate_pre = alg.add(
            alg.affine(x, w[gh], w_bias[gh] + r_bias[gh]), alg.affine(alg.mul(reset, h), r[gh], 0.0)
        )
    candidate = alg.tanh(candidate_pre)
    return GruStep(
        update_pre, reset_pre, update, reset, recurrent, candidate_pre, candidate, alg.blend(update, candidate, h)
    )


@dataclass
class RnnStep(Generic[V]):
    pre: V
    hidden: V


def rnn_step(alg: Algebra[V], x: V, h: V, w, r, bias, relu: bool) -> RnnStep[V]:
    """h' = f(W·x + R·h + (Wb + Rb)), f = tanh or ReLU; ``bias`` is Wb + Rb (H)."""
    pre = alg.add(alg.affine(x, w, bias), alg.affine(h, r, 0.0))
    return RnnStep(pre, alg.relu(pre) if relu else alg.tanh(pre))
