"""The op registry: one small class per operator, keyed by (domain, op type, since-version).

As in the ONNX reference evaluator, each class holds one op's semantics (how to read its node,
its geometry) with its Lipschitz rule (``bound``) and its torch implementation (``run``) side by
side; a class named ``Softmax_13`` is the version of ``Softmax`` since opset 13. As in onnx2torch,
``@register`` fills the registry and registering a key twice raises; a node is resolved to the
version in force at its opset through ``onnx.defs``. As in fvcore, every op is in one of three
states: it has a rule, it is explicitly an identity (moves entries, factor exactly 1), or it is
unknown and reported — never counted as 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..ir import Node, schema_since_version
from .factor import Factor

if TYPE_CHECKING:
    from ..intervals.interval import Interval
    from ..intervals.jacobian import Jac, JacobianContext
    from ..linear_maps import Barrier, Linear
    from .context import RuleContext
    from .runtime import Env


# The domain of the ops lipaudit fuses from exported pieces: no real model's op can be taken for one.
FUSED_DOMAIN = "lipaudit"


class DuplicateOpError(RuntimeError):
    pass


class Op:
    """One ONNX operator as lipaudit reads, bounds and runs it. Subclasses are stateless singletons."""

    op_type: ClassVar[str] = ""  # default: the class name up to "_<since>"
    domain: ClassVar[str] = ""
    since: ClassVar[int] = 1
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # what the rule says, for `lipaudit ops`
    certified: ClassVar[bool] = True  # False: the op is not Lipschitz and the rule says so
    identity: ClassVar[bool] = False  # moves or relabels entries: factor exactly 1
    # Inputs the factor applies to (None: every input). Another input computed from the network
    # input (a shape, an index, a bias) needs its own weight in Factor.input_weights, or the node
    # cannot be bounded.
    data_inputs: ClassVar[tuple[int, ...] | None] = (0,)
    # Each output entry depends on the matching entry of each input after numpy broadcasting: the
    # composer multiplies an input's weight by √(copies) when the output is larger than that input.
    elementwise: ClassVar[bool] = False
    # The rule's factor already covers an output larger than an input (a convolution, a padding, a
    # copy). Any other op whose output outgrows a variable input cannot be bounded: the composer
    # checks this, so a new rule cannot forget the copies.
    resizes: ClassVar[bool] = False
    # Moves, selects or compares entries: evaluating it in float32 adds no rounding, so its factor
    # needs no float32 safety margin.
    exact_in_float: ClassVar[bool] = False
    # Monotone in each data input, entry by entry (a selection, a copy, a max, an increasing
    # activation, a sum with non-negative weights): on a box its outputs lie between f(lo) and f(hi).
    # An op of one input may be increasing or decreasing; one of several lists the inputs it
    # decreases in.
    monotone: ClassVar[bool] = False
    decreasing: ClassVar[tuple[int, ...]] = ()
    # With ``monotone``: adds entries up, so the rounding margin of its ranges scales with the terms.
    sums: ClassVar[bool] = False

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        """Sound ranges of the outputs on the domain, from ``ctx.range_of`` of the inputs; one per
        output, None for an output the op says nothing about (it is then (−∞, ∞), never a guess)."""
        if self.monotone:
            from .interval_rules import monotone_interval

            return monotone_interval(
                self, node, ctx, decreasing=self.decreasing, sums=self.sums, positions=self.data_inputs
            )
        return [None] * len(node.outputs)

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        """The factor of output 0. Raise ValueError (or RuleInputError) when the node cannot be read."""
        if self.identity:
            return Factor.constant(1.0, "identity")
        raise NotImplementedError

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        """One factor per output. An output the op says nothing about is unknown: it never inherits
        the first output's factor."""
        factors = [self.bound(node, ctx)]
        for index, name in enumerate(node.outputs[1:], 1):
            factors.append(Factor.unknown(f"output {index} ('{name}') of {node.op_type} has no rule"))
        return factors

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        """The node's outputs on torch tensors (one tensor, or a list for several outputs)."""
        raise NotImplementedError

    def linear_part(self, node: Node, ctx: RuleContext) -> Linear | tuple[Linear | None, ...] | Barrier:
        """The op's action on its variable inputs (in graph order) as a typed linear map, offsets
        left out — one map per output where it has several (None: that output is no such map) — or
        a Barrier with the reason (docs/design.md, "Linear parts").  The recursion looks through
        the maps, after checking each against ``run``.  An op that moves entries (``identity``)
        describes itself by where its run sends each entry."""
        from ..linear_maps import Barrier
        from .linear_part import entry_map

        if self.identity:
            return entry_map(self, node, ctx)
        return Barrier(f"{node.op_type} is not a linear map the recursion looks through")

    def jacobian(self, node: Node, jctx: JacobianContext) -> list[Jac | None] | None:
        """Enclosures of the outputs' Jacobians over the box, from the inputs' (``jctx.jac``) and
        their ranges (lipaudit.intervals.jacobian); None when the op has no such rule.  By default
        through the op's ``linear_part``: C' = A C, R' = |A| R."""
        from ..intervals.jacobian_rules import through_linear

        return through_linear(self, node, jctx)

    def slope_range(self, node: Node, ctx: RuleContext | None = None) -> tuple[float, float] | None:
        """[α, β] containing every difference quotient of an elementwise op of one variable input
        (docs/design.md, "Slope split"), or None when the op is no such activation.  The one source
        of slopes: the factor and the recursion both read it."""
        return None

    @classmethod
    def executable(cls) -> bool:
        return cls.run is not Op.run

    @classmethod
    def label(cls) -> str:
        return f"{cls.domain}::{cls.op_type}" if cls.domain else cls.op_type


_OPS: dict[tuple[str, str], list[Op]] = {}

OpClass = TypeVar("OpClass", bound=type[Op])


def register(cls: OpClass) -> OpClass:
    """Class decorator: add one op version to the registry (its op type from the class name)."""
    base, _, version = cls.__name__.partition("_")
    if not cls.__dict__.get("op_type"):
        cls.op_type = base
    if "since" not in cls.__dict__:
        cls.since = int(version) if version.isdigit() else 1
    if not cls.family:
        raise TypeError(f"{cls.__name__} has no family")
    entries = _OPS.setdefault((cls.domain, cls.op_type), [])
    if any(existing.since == cls.since for existing in entries):
        raise DuplicateOpError(f"{cls.label()} since opset {cls.since} is already registered")
    entries.append(cls())
    entries.sort(key=lambda op: op.since)
    return cls


def unregister(cls: type[Op]) -> None:
    """Remove an op version (for tests that register a toy op)."""
    entries = _OPS.get((cls.domain, cls.op_type), [])
    entries[:] = [op for op in entries if type(op) is not cls]
    if not entries:
        _OPS.pop((cls.domain, cls.op_type), None)


def lookup(op_type: str, domain: str = "", opset: int = 10**6) -> Op | None:
    """The version of the op in force at ``opset`` (as ONNX resolves it), or None when there is none."""
    domain = "" if domain == "ai.onnx" else domain
    entries = _OPS.get((domain, op_type))
    if not entries:
        return None
    version = schema_since_version(op_type, domain, opset) if opset < 10**6 else None
    ceiling = version if version is not None else opset
    candidates = [op for op in entries if op.since <= ceiling]
    return candidates[-1] if candidates else None


def resolve(node: Node, opset: int) -> Op | None:
    return lookup(node.op_type, node.domain, opset)


def all_ops(*, latest_only: bool = False) -> list[Op]:
    """Every registered op version (or only the newest version of each op), by family and op type."""
    chosen = (entries[-1:] if latest_only else entries for entries in _OPS.values())
    return sorted(
        (op for entries in chosen for op in entries), key=lambda op: (op.family, op.op_type, op.domain, op.since)
    )
