"""Slope ranges of elementwise activations, for the split φ = a·Id + b·ψ (DESIGN.md §6).

An activation whose derivative lies in [α, β] everywhere (for a piecewise-smooth one: whose
difference quotients (φ(s) − φ(t))/(s − t) all lie in [α, β]) is φ = a·Id + b·ψ with
a = (α + β)/2, b = (β − α)/2 and ψ = (φ − a·Id)/b 1-Lipschitz, since ψ's quotients lie in [−1, 1].

The smooth ones' extremes are computed, not guessed, and rounded *outward* in the 5th decimal:
  GELU (erf)    GELU′ = Φ(x) + x·φ(x), GELU″ = φ(x)·(2 − x²): extremes at ±√2,
                β = Φ(√2) + e⁻¹/√π = 1.1289041452, and GELU(x) − GELU(−x) = x gives α = 1 − β;
  GELU (tanh)   odd-symmetric the same way, extremes ≈ ±1.4185: [−0.1289931, 1.1289931];
  SiLU          x·σ(x) − (−x)·σ(−x) = x, extremes ≈ ±2.39936: [−0.0998393, 1.0998393];
  Mish          [−0.1125261 at ≈ −2.2564, 1.0884982 at ≈ 1.4906];
  HardSwish     slopes (2x + 3)/6 on [−3, 3], 0 and 1 outside: [−½, 3/2].
tests/tight/test_activations.py checks every range against a fine grid of autograd derivatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

GELU_SLOPES = (-0.12891, 1.12891)
GELU_TANH_SLOPES = (-0.12900, 1.12900)
SILU_SLOPES = (-0.09985, 1.09985)
MISH_SLOPES = (-0.11253, 1.08850)
SELU_ALPHA = 1.6732632423543772
SELU_GAMMA = 1.0507009873554805


def slope_range(kind: str, alpha: float | None = None) -> tuple[float, float]:
    """[α, β] for an activation by name; ``alpha`` is its parameter where it has one.

    leaky_relu(alpha=s): [min(s, 1), max(s, 1)];  elu(alpha): [0, max(1, alpha)] (alpha ≥ 0);
    hardsigmoid(alpha): [0, alpha];  selu: [0, γ·max(1, α)] with the standard constants.
    """
    fixed = {
        "relu": (0.0, 1.0),
        "tanh": (0.0, 1.0),
        "sigmoid": (0.0, 0.25),
        "softplus": (0.0, 1.0),
        "softsign": (0.0, 1.0),
        "hardtanh": (0.0, 1.0),
        "relu6": (0.0, 1.0),
        "gelu": GELU_SLOPES,
        "gelu_tanh": GELU_TANH_SLOPES,
        "silu": SILU_SLOPES,
        "mish": MISH_SLOPES,
        "hardswish": (-0.5, 1.5),
        "identity": (1.0, 1.0),
        "abs": (-1.0, 1.0),
        "selu": (0.0, SELU_GAMMA * max(1.0, SELU_ALPHA) * (1 + 1e-12)),
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "leaky_relu":
        s = 0.01 if alpha is None else float(alpha)
        return (min(s, 1.0), max(s, 1.0))
    if kind == "elu":
        s = 1.0 if alpha is None else float(alpha)
        if s < 0:
            raise ValueError(f"elu with a negative alpha ({s}) is not monotone; give its slopes explicitly")
        return (0.0, max(1.0, s))
    if kind == "hardsigmoid":
        s = 0.2 if alpha is None else float(alpha)
        return (min(0.0, s), max(0.0, s))
    raise ValueError(f"unknown activation {kind!r}; give its slope range with slopes=(alpha, beta)")


def evaluator(kind: str, alpha: float | None = None) -> Callable[[Tensor], Tensor] | None:
    """The activation as a torch function (for evaluating the network in tests), or None."""
    table: dict[str, Callable[[Tensor], Tensor]] = {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "hardtanh": F.hardtanh,
        "relu6": F.relu6,
        "gelu": F.gelu,
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "silu": F.silu,
        "mish": F.mish,
        "hardswish": F.hardswish,
        "identity": lambda x: x,
        "abs": torch.abs,
        "selu": F.selu,
    }
    if kind in table:
        return table[kind]
    if kind == "leaky_relu":
        return lambda x: F.leaky_relu(x, 0.01 if alpha is None else float(alpha))
    if kind == "elu":
        return lambda x: F.elu(x, 1.0 if alpha is None else float(alpha))
    if kind == "hardsigmoid":
        s = 0.2 if alpha is None else float(alpha)
        return lambda x: torch.clamp(s * x + 0.5, 0.0, 1.0)
    return None


def split(slopes: tuple[float, float]) -> tuple[float, float, float]:
    """(a, b, lipschitz) of φ = a·Id + b·ψ for slopes [α, β]: a = (α+β)/2, b = (β−α)/2 ≥ 0 and
    Lip(φ) = max(|α|, |β|) = |a| + b."""
    low, high = float(slopes[0]), float(slopes[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"slope range must be finite with alpha <= beta, got {slopes}")
    a = (low + high) / 2.0
    # |slope − a| ≤ b must hold for every slope in [α, β] despite the rounding of a: widen b by far
    # more than an ulp.  The binary fractions of ReLU, Sigmoid, … stay exact without it.
    b = max(high - a, a - low)
    if Fraction(a) != (Fraction(low) + Fraction(high)) / 2 or Fraction(b) != (Fraction(high) - Fraction(low)) / 2:
        b *= 1.0 + 1e-12
    return a, b, max(abs(low), abs(high))
