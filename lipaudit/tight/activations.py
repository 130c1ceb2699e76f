"""Activations for the recursion: the split φ = a·Id + b·ψ (docs/design.md, "Slope split"), and
the preset names a hand-built Network may use.

An activation whose difference quotients (φ(s) − φ(t))/(s − t) all lie in [α, β] is
φ = a·Id + b·ψ with a = (α + β)/2, b = (β − α)/2 and ψ = (φ − a·Id)/b 1-Lipschitz, since ψ's
quotients lie in [−1, 1].

The slopes themselves come from one place only: the op's ``slope_range`` (lipaudit.ops).  A preset
name is nothing but the op (and attributes) it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from torch import Tensor

from ..ir import Node
from ..ir.attributes import schema_defaults
from ..ops import activation as smooth
from ..ops import activation_piecewise as piecewise
from ..ops.activation import Activation as ActivationOp
from ..ops.runtime import Env

# name -> (op class, attributes given the preset's alpha)
_PRESETS: dict[str, tuple[type[ActivationOp], Callable[[float | None], dict[str, Any]]]] = {
    "relu": (smooth.Relu, lambda alpha: {}),
    "tanh": (smooth.Tanh, lambda alpha: {}),
    "sigmoid": (smooth.Sigmoid, lambda alpha: {}),
    "softplus": (smooth.Softplus, lambda alpha: {}),
    "softsign": (smooth.Softsign, lambda alpha: {}),
    "abs": (smooth.Abs, lambda alpha: {}),
    "gelu": (smooth.Gelu, lambda alpha: {"approximate": "none"}),
    "gelu_tanh": (smooth.Gelu, lambda alpha: {"approximate": "tanh"}),
    "silu": (smooth.Silu, lambda alpha: {}),
    "mish": (smooth.Mish, lambda alpha: {}),
    "hardswish": (smooth.HardSwish, lambda alpha: {}),
    "selu": (piecewise.Selu, lambda alpha: {}),
    "leaky_relu": (piecewise.LeakyRelu, lambda alpha: {"alpha": 0.01 if alpha is None else float(alpha)}),
    "elu": (piecewise.Elu, lambda alpha: {"alpha": 1.0 if alpha is None else float(alpha)}),
    "hardsigmoid": (piecewise.HardSigmoid, lambda alpha: {"alpha": 0.2 if alpha is None else float(alpha)}),
}
_OPSET = 21


def preset_node(name: str, alpha: float | None = None) -> tuple[ActivationOp, Node]:
    """The op a preset name stands for and a node of it (schema defaults filled in)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown activation {name!r}; give its slope range with slopes=(alpha, beta)")
    op_class, attributes = _PRESETS[name]
    op = op_class()
    attrs = dict(schema_defaults(op.op_type, op.domain, _OPSET))
    attrs.update(attributes(alpha))
    return op, Node(name, op.op_type, ("x",), ("y",), attrs, op.domain)


def preset(name: str, alpha: float | None = None) -> tuple[tuple[float, float], Callable[[Tensor], Tensor]]:
    """([α, β] from the op's slope_range, the op's run as a torch function) for a preset name."""
    op, node = preset_node(name, alpha)
    lo, hi = op.slope_range(node)

    def run(x: Tensor) -> Tensor:
        return op.run(Env(_OPSET, x.dtype, x.device), node, [x])

    return (float(lo), float(hi)), run


def slope_range(name: str, alpha: float | None = None) -> tuple[float, float]:
    return preset(name, alpha)[0]


def evaluator(name: str, alpha: float | None = None) -> Callable[[Tensor], Tensor]:
    return preset(name, alpha)[1]


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
