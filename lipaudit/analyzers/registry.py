"""Rules keyed by op type, filled by decorators.

Every op is in one of three states (as in fvcore): it has a rule, it is explicitly an identity
(its factor is 1 by construction), or it is unknown and reported — never counted as 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .factor import Factor

if TYPE_CHECKING:
    from ..ir import Node
    from .context import AnalysisContext

RuleFn = Callable[["Node", "AnalysisContext"], Factor]


class DuplicateRuleError(RuntimeError):
    pass


@dataclass(frozen=True)
class RuleEntry:
    op_type: str
    domain: str
    since_opset: int
    family: str
    summary: str
    certified: bool
    fn: RuleFn
    # Inputs the factor applies to. Another input computed from the network input (a shape, an
    # index, a bias) needs its own weight in Factor.input_weights, or the node cannot be bounded.
    data_inputs: tuple[int, ...] | None = (0,)


_RULES: dict[tuple[str, str], list[RuleEntry]] = {}


def _register(entry: RuleEntry) -> None:
    entries = _RULES.setdefault((entry.domain, entry.op_type), [])
    if any(existing.since_opset == entry.since_opset for existing in entries):
        raise DuplicateRuleError(
            f"a rule for {entry.domain or 'ai.onnx'}::{entry.op_type} since opset {entry.since_opset} "
            "is already registered"
        )
    entries.append(entry)
    entries.sort(key=lambda e: e.since_opset)


def rule(*op_types: str, summary: str, family: str, certified: bool = True,
         since: int = 1, domain: str = "", data_inputs: tuple[int, ...] | None = (0,)) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn(node, ctx) -> Factor`` for each op type (``data_inputs=None``: every input)."""

    def decorate(fn: RuleFn) -> RuleFn:
        for op_type in op_types:
            _register(RuleEntry(op_type, domain, since, family, summary, certified, fn, data_inputs))
        return fn

    return decorate


def identity(*op_types: str, summary: str, family: str = "structural", domain: str = "") -> None:
    """Ops that only move, copy once or relabel entries: factor exactly 1."""

    def one(node: "Node", ctx: "AnalysisContext") -> Factor:
        return Factor.constant(1.0, "identity")

    for op_type in op_types:
        _register(RuleEntry(op_type, domain, 1, family, summary, True, one))


def lookup(op_type: str, domain: str = "", opset: int = 10**6) -> RuleEntry | None:
    if domain == "ai.onnx":
        domain = ""
    candidates = [e for e in _RULES.get((domain, op_type), []) if e.since_opset <= opset]
    return candidates[-1] if candidates else None


def all_rules() -> list[RuleEntry]:
    return sorted((e for entries in _RULES.values() for e in entries),
                  key=lambda e: (e.family, e.op_type, e.since_opset))
