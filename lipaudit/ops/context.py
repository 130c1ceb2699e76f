"""What a rule may read besides its node: the graph, the user's settings, and shape helpers.

``ranges`` switches the rules to the bounded domain: sound value ranges of every IR value on the
box of inputs the user gave (``lipaudit.domain.value_ranges``). Without it (None) every rule gives
its global constant, as before; with it a rule may bound its op on those ranges instead, and then
labels its factor as a domain factor (method "domain"): a local figure, not a global constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..ir import Graph, Node
from ..spectral.scaling import scale_of
from .factor import Factor

if TYPE_CHECKING:
    from ..intervals.interval import Interval


DOMAIN_METHOD = "domain"
# Appended to the reason of an op that is not globally Lipschitz but is on a bounded domain.
DOMAIN_HINT = "pass an input range (--input-range LO:HI) for a bound on that domain"


def domain_factor(value: float, note: str, **kwargs) -> Factor:
    """A factor that holds on the input domain only (from the value ranges there): labelled so."""
    return Factor.constant(value, DOMAIN_METHOD, note=f"on the input domain: {note}", **kwargs)


# A domain factor replaces a global one only when it is smaller by more than this fraction: a figure
# that is global in all but the last digits stays labelled global.
DOMAIN_GAIN = 1e-3


def tighter_on_domain(global_factor: Factor, value: float, note: str, **kwargs) -> Factor:
    """The domain factor when it beats the global one (or the op has no global constant); else the
    global factor unchanged, so that a domain run labels only what the domain changed."""
    if (
        global_factor.status == "bounded"
        and global_factor.value is not None
        and value >= global_factor.value * (1 - DOMAIN_GAIN)
    ):
        return global_factor
    return domain_factor(value, note, **kwargs)


class RuleInputError(ValueError):
    """The node is malformed or lacks what the rule needs (a shape, a constant)."""


@dataclass
class RuleContext:
    graph: Graph
    method: str = "auto"
    device: torch.device = torch.device("cpu")
    ranges: dict[str, Interval] | None = None

    @property
    def on_domain(self) -> bool:
        return self.ranges is not None

    def range_of(self, name: str) -> Interval:
        """The value's range on the domain: a point for a constant, the full line when unknown."""
        from ..intervals.interval import Interval

        const = self.graph.const(name)
        if const is not None:
            return Interval.exact(const)
        found = self.ranges.get(name) if self.ranges is not None else None
        return found if found is not None else Interval.full()

    def opset(self, node: Node) -> int:
        return self.graph.opset_of(node)

    def input_shape(self, node: Node, index: int = 0) -> tuple[int, ...]:
        return self.known_shape(node, node.inputs[index], "input")

    def output_shape(self, node: Node, index: int = 0) -> tuple[int, ...]:
        return self.known_shape(node, node.outputs[index], "output")

    def known_shape(self, node: Node, name: str, role: str = "input") -> tuple[int, ...]:
        const = self.graph.const(name)
        shape = tuple(const.shape) if const is not None else self.graph.shape(name)
        if shape is None or any(d is None or d < 0 for d in shape):
            raise RuleInputError(f"the shape of {role} '{name}' of {node.op_type} '{node.name}' is unknown")
        return tuple(int(d) for d in shape)

    def const_input(self, node: Node, index: int) -> np.ndarray | None:
        if index >= len(node.inputs):
            return None
        return self.graph.const(node.inputs[index])

    def is_variable(self, node: Node, index: int) -> bool:
        return index < len(node.inputs) and bool(node.inputs[index]) and not self.graph.is_const(node.inputs[index])


def broadcast_copies(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """How many output entries each entry of a tensor of ``shape`` feeds after numpy broadcasting."""
    copies = 1
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    for dim, out_dim in zip(padded, out_shape):
        if dim == 1 and out_dim != 1:
            copies *= out_dim
    return copies


def broadcast_gain(coefficients: np.ndarray, var_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> float:
    """Operator norm of x -> c ⊙ broadcast(x): sqrt(max over entries of x of Σ c² over its copies)."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    scale = scale_of(coefficients)  # squares of 1e-170 or 1e200 leave float64's range
    if scale != 1.0:
        return scale * broadcast_gain(coefficients / scale, var_shape, out_shape)
    squared = np.broadcast_to(coefficients**2, out_shape)
    padded = (1,) * (len(out_shape) - len(var_shape)) + tuple(var_shape)
    axes = tuple(i for i, (dim, out_dim) in enumerate(zip(padded, out_shape)) if dim == 1 and out_dim != 1)
    summed = squared.sum(axis=axes) if axes else squared
    return float(np.sqrt(summed.max())) if summed.size else 0.0
