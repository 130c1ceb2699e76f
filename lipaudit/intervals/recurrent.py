"""LSTM, GRU and RNN cells unrolled over a fixed sequence: ranges of their states, and a Lipschitz bound
from those ranges by the product rule, step by step.

Per step t the gates are elementwise functions of z = W·x_t + R·h_{t−1} + b, and the states are
products of gates. With ‖·‖ the ℓ2 norm over a batch item, a_t = ‖Δh_t‖ and b_t = ‖Δc_t‖ obey

    LSTM  ‖Δz_q‖ ≤ ‖W_q‖‖Δx_t‖ + ‖R_q‖a_{t−1} (+ max|P_q|·b),   ‖Δq‖ ≤ s_q‖Δz_q‖   (q = i, f, g, o)
          b_t ≤ max|c_{t−1}|‖Δf‖ + max|f|b_{t−1} + max|g|‖Δi‖ + max|i|‖Δg‖
          a_t ≤ max|tanh c_t|‖Δo‖ + max|o|·s_tanh(c_t)·b_t
    GRU   a_t ≤ max|h_{t−1} − h̃|‖Δz‖ + max|1 − z|‖Δh̃‖ + max|z|a_{t−1}
    RNN   a_t ≤ ‖diag(s)W‖‖Δx_t‖ + ‖diag(s)R‖a_{t−1},   s the slope sup of tanh (or ReLU) per unit

with every max and every slope sup s over the ranges at step t (the whole batch). Unrolled, a_t
and b_t are bounded by non-negative combinations Σ_s K_ts‖Δx_s‖ (+ terms in the initial states),
so ‖ΔY‖ ≤ ‖K‖₂‖ΔX‖ with ‖K‖₂ certified by Collatz–Wielandt. Without a box the gates still lie in
[0, 1] and [−1, 1]: the same recursion gives a finite global bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cells import IntervalAlgebra, gru_step, lstm_step, rnn_step
from .interval import Interval, add
from .norms import nonnegative_norm_bound
from .slopes import logistic_slope, sech_squared


def sigmoid_slope(z: Interval) -> np.ndarray:
    """sup σ' over each hidden unit's range (max over the batch), per unit."""
    return _per_unit(logistic_slope(z.mignitude, upper=True)) * (1 + 1e-9)


def tanh_slope(z: Interval) -> np.ndarray:
    return _per_unit(sech_squared(z.mignitude, upper=True)) * (1 + 1e-9)


def _per_unit(values: np.ndarray) -> np.ndarray:
    """(batch, H) → (H,): the largest over the batch."""
    values = np.asarray(values, np.float64)
    return values.reshape(-1, values.shape[-1]).max(axis=0) if values.ndim > 1 else values


def _unit_size(interval: Interval) -> np.ndarray:
    return _per_unit(interval.magnitude)


def _stacked(*coefficients: np.ndarray) -> float:
    """‖[diag(c_1) … diag(c_k)]‖₂ = √(max_j Σ_q c_qj²) (its rows are orthogonal)."""
    return float(np.sqrt(np.max(sum(c**2 for c in coefficients), initial=0.0)))


@dataclass
class _Stack:
    """Matrices M_1 … M_k read as one: the norms of each and of [M_1; …; M_k]."""

    each: list[float]
    whole: float

    @classmethod
    def of(cls, *matrices: np.ndarray) -> _Stack:
        return cls([_spectral(m) for m in matrices], _spectral(np.concatenate(matrices, axis=0)))

    def weighed(self, *coefficients: np.ndarray) -> float:
        """A bound on ‖Σ_q D_q M_q‖ for diagonals |D_q| ≤ c_q entrywise: the smaller of ‖[D_1 … D_k]‖·‖[M_q]‖
        and Σ_q max c_q·‖M_q‖ (two bounds on the same norm)."""
        separate = sum(float(np.max(c, initial=0.0)) * n for c, n in zip(coefficients, self.each))
        return min(_stacked(*coefficients) * self.whole, separate)


@dataclass
class Unrolled:
    """One direction: the states' ranges per processed step, and the sensitivity coefficients of
    a_t (and b_t) over the sources: the T input steps in processing order, then h0, then c0."""

    hidden: list[Interval] = field(default_factory=list)
    cell: list[Interval] = field(default_factory=list)
    a: list[np.ndarray] = field(default_factory=list)
    b: list[np.ndarray] = field(default_factory=list)

    def weights(self, rows: list[np.ndarray]) -> tuple[float, float, float]:
        """(input, h0, c0) weights of the outputs whose coefficient rows are ``rows``."""
        k = np.stack(rows)
        steps = k.shape[1] - 2
        return (
            float(nonnegative_norm_bound(k[:, :steps])),
            float(np.linalg.norm(k[:, steps]) * (1 + 1e-12)),
            float(np.linalg.norm(k[:, steps + 1]) * (1 + 1e-12)),
        )


_RANGES = IntervalAlgebra()


def _unit(size: int, index: int) -> np.ndarray:
    e = np.zeros(size)
    e[index] = 1.0
    return e


def lstm_direction(
    xs: list[Interval], w: np.ndarray, r: np.ndarray, bias: np.ndarray, peephole: np.ndarray, h0: Interval, c0: Interval
) -> Unrolled:
    """``xs`` in processing order, each (batch, input); w (4H, I), r (4H, H) in ONNX's i, o, f, c order;
    ``bias`` Wb + Rb (4H); ``peephole`` (3H: i, o, f).

    Per unit j, Δc_t = c_{t−1}Δf + fΔc_{t−1} + gΔi + iΔg, and each gate change is its slope times
    W_qΔx + R_qΔh (+ P_q⊙Δc): the input and recurrent paths of the three gates are one stacked
    matrix [W_i; W_f; W_c] weighed by the per-unit diagonals (|g|s_i, |c|s_f, |i|s_g)."""
    hidden = r.shape[1]
    gates = {name: slice(k * hidden, (k + 1) * hidden) for k, name in enumerate("iofc")}
    w_cell = _Stack.of(w[gates["i"]], w[gates["f"]], w[gates["c"]])
    r_cell = _Stack.of(r[gates["i"]], r[gates["f"]], r[gates["c"]])
    w_out, r_out = _spectral(w[gates["o"]]), _spectral(r[gates["o"]])
    p = {q: np.abs(peephole[k * hidden : (k + 1) * hidden]) for k, q in enumerate("iof")}
    sources = len(xs) + 2
    out = Unrolled()
    h, c = h0, c0
    a_prev, b_prev = _unit(sources, len(xs)), _unit(sources, len(xs) + 1)
    for t, x in enumerate(xs):
        step = lstm_step(_RANGES, x, h, c, w, r, bias, peephole, hidden)
        z, i, f, g, o, c_next, squashed, h_next = (
            step.pre,
            step.i,
            step.f,
            step.g,
            step.o,
            step.cell,
            step.squashed,
            step.hidden,
        )
        ex = _unit(sources, t)
        alpha_i = _unit_size(g) * sigmoid_slope(z["i"])
        alpha_f = _unit_size(c) * sigmoid_slope(z["f"])
        alpha_g = _unit_size(i) * tanh_slope(z["c"])
        carry = float(np.max(_unit_size(f) + alpha_i * p["i"] + alpha_f * p["f"], initial=0.0))
        b_next = (
            w_cell.weighed(alpha_i, alpha_f, alpha_g) * ex
            + r_cell.weighed(alpha_i, alpha_f, alpha_g) * a_prev
            + carry * b_prev
        )
        beta_o = _unit_size(squashed) * sigmoid_slope(z["o"])
        through_cell = float(np.max(beta_o * p["o"] + _unit_size(o) * tanh_slope(c_next), initial=0.0))
        a_next = float(np.max(beta_o, initial=0.0)) * (w_out * ex + r_out * a_prev) + through_cell * b_next
        out.hidden.append(h_next)
        out.cell.append(c_next)
        out.a.append(a_next)
        out.b.append(b_next)
        h, c, a_prev, b_prev = h_next, c_next, a_next, b_next
    return out


def gru_direction(
    xs: list[Interval],
    w: np.ndarray,
    r: np.ndarray,
    w_bias: np.ndarray,
    r_bias: np.ndarray,
    h0: Interval,
    linear_before_reset: bool,
) -> Unrolled:
    """``xs`` in processing order; w (3H, I), r (3H, H) in ONNX's z, r, h order.

    Δh_t = (h_{t−1} − h̃)Δz + (1 − z)Δh̃ + zΔh_{t−1}; per unit the update, candidate and reset paths
    are weighed by β_z = |h_{t−1} − h̃|s_z and β_h = |1 − z|s_h."""
    hidden = r.shape[1]
    gz, gr, gh = (slice(k * hidden, (k + 1) * hidden) for k in range(3))
    sources = len(xs) + 2
    out = Unrolled()
    h = h0
    a_prev = _unit(sources, len(xs))
    if linear_before_reset:
        w_all, r_all = _Stack.of(w[gz], w[gh], w[gr]), _Stack.of(r[gz], r[gh], r[gr])
    else:
        w_zh = _Stack.of(w[gz], w[gh])
        w_r, r_z, r_r, r_h = _spectral(w[gr]), _spectral(r[gz]), _spectral(r[gr]), _spectral(r[gh])
    for t, x in enumerate(xs):
        step = gru_step(_RANGES, x, h, w, r, w_bias, r_bias, hidden, linear_before_reset)
        z_pre, r_pre, z, reset = step.update_pre, step.reset_pre, step.update, step.reset
        h_pre, candidate, recurrent = step.candidate_pre, step.candidate, step.recurrent
        beta_z = _unit_size(add(h, candidate, -1.0)) * sigmoid_slope(z_pre)
        beta_h = _per_unit(1.0 - z.lo) * tanh_slope(h_pre)  # |1 − z| ≤ 1 − z_lo, z ≥ 0
        keep = float(np.max(_unit_size(z), initial=0.0))
        s_r = sigmoid_slope(r_pre)
        ex = _unit(sources, t)
        if recurrent is not None:
            through_reset = beta_h * _unit_size(recurrent) * s_r
            a_next = (
                w_all.weighed(beta_z, beta_h, through_reset) * ex
                + (r_all.weighed(beta_z, beta_h * _unit_size(reset), through_reset) + keep) * a_prev
            )
        else:
            # Δh̃'s pre-activation: W_hΔx + R_h(h_{t−1}⊙Δr + r⊙Δh_{t−1}), with R_h on the left of the product.
            reset_size = float(np.max(_unit_size(h) * s_r, initial=0.0))
            top_h = float(np.max(beta_h, initial=0.0))
            top_z = float(np.max(beta_z, initial=0.0))
            a_next = (w_zh.weighed(beta_z, beta_h) + top_h * r_h * reset_size * w_r) * ex + (
                top_z * r_z + top_h * r_h * (reset_size * r_r + float(np.max(_unit_size(reset), initial=0.0))) + keep
            ) * a_prev
        h_next = step.hidden
        out.hidden.append(h_next)
        out.a.append(a_next)
        h, a_prev = h_next, a_next
    return out


def relu_slope(z: Interval) -> np.ndarray:
    """1 for a unit whose pre-activation can be positive on its range (anywhere in the batch), else 0."""
    return _per_unit((np.asarray(z.hi) > 0).astype(np.float64))


def rnn_direction(
    xs: list[Interval], w: np.ndarray, r: np.ndarray, bias: np.ndarray, h0: Interval, relu: bool
) -> Unrolled:
    """``xs`` in processing order; w (H, I), r (H, H), ``bias`` Wb + Rb (H).

    Δh_t = D_t(WΔx_t + RΔh_{t−1}) with |D_t| ≤ diag(s_t) entrywise (the activation's slope on each
    unit's range), so ‖D_tWv‖ ≤ ‖diag(s_t)Wv‖ ≤ ‖diag(s_t)W‖‖v‖."""
    sources = len(xs) + 2
    out = Unrolled()
    h = h0
    a_prev = _unit(sources, len(xs))
    for t, x in enumerate(xs):
        step = rnn_step(_RANGES, x, h, w, r, bias, relu)
        slope = relu_slope(step.pre) if relu else tanh_slope(step.pre)
        a_next = _spectral(slope[:, None] * w) * _unit(sources, t) + _spectral(slope[:, None] * r) * a_prev
        out.hidden.append(step.hidden)
        out.a.append(a_next)
        h, a_prev = step.hidden, a_next
    return out


def _spectral(matrix: np.ndarray) -> float:
    from ..spectral.dense import dense_norm

    return dense_norm(np.asarray(matrix, np.float64), "exact").value * (1 + 1e-12)
