"""The op registry: one class per op, resolved by opset; a toy op shows up everywhere at once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lipaudit.cli.app import app
from lipaudit.compose import node_factors
from lipaudit.execute import GraphInterpreter, can_execute, supported_ops
from lipaudit.ir import Graph, Node, Value
from lipaudit.ops import DuplicateOpError, Factor, Op, RuleContext, all_ops, lookup, register, unregister

runner = CliRunner()


def test_registering_an_op_twice_raises() -> None:
    before = len(all_ops())
    with pytest.raises(DuplicateOpError, match="Relu"):

        @register
        class Relu(Op):  # noqa: F811 - the point is the clash
            family = "activation"

    with pytest.raises(DuplicateOpError, match="com.microsoft::Attention"):

        @register
        class MsAttentionAgain(Op):
            op_type = "Attention"
            domain = "com.microsoft"
            family = "attention"

    assert len(all_ops()) == before


def test_versions_resolve_as_onnx_does() -> None:
    # Softmax changed meaning at opset 13; opset 12 still has the version introduced in 11.
    assert lookup("Softmax", "", 12).since == 1
    assert lookup("Softmax", "", 13).since == 13
    assert lookup("Softmax", "", 18).since == 13
    assert lookup("Pad", "", 10).since == 1 and lookup("Pad", "", 11).since == 11
    assert lookup("NoSuchOp", "", 17) is None


class Triple(Op):
    """A toy op registered in one place: y = 3·x."""

    family = "toy"
    summary = "3 (the toy op of a test)"
    domain = "lipaudit.test"

    def bound(self, node: Node, ctx: RuleContext) -> Factor:
        return Factor.constant(3.0, "closed-form")

    def run(self, env: Any, node: Node, args: list[Any]) -> Any:
        return 3 * args[0]


@pytest.fixture
def toy_op():
    register(Triple)
    yield Triple
    unregister(Triple)


def test_a_toy_op_is_seen_by_the_rules_the_executor_and_the_ops_listing(toy_op) -> None:
    graph = Graph(
        [Node("t", "Triple", ("x",), ("y",), domain="lipaudit.test")],
        {"x": Value("x", (1, 4))},
        ["x"],
        ["y"],
        opset=17,
        opset_imports={"": 17, "lipaudit.test": 1},
    )
    assert node_factors(graph.nodes[0], RuleContext(graph))[0].value == pytest.approx(3.0, rel=1e-5)
    assert can_execute(graph.nodes[0]) and ("lipaudit.test", "Triple") in supported_ops()
    (y,) = GraphInterpreter(graph)(torch.ones(1, 4))
    np.testing.assert_array_equal(y.numpy(), np.full((1, 4), 3.0, np.float32))
    listing = runner.invoke(app, ["ops", "--format", "markdown"])
    assert "| Triple | lipaudit.test |" in listing.stdout and "3 (the toy op of a test)" in listing.stdout


def test_every_op_is_a_rule_an_identity_or_not_lipschitz() -> None:
    for op in all_ops():
        assert op.family and op.summary, op.label()
        has_rule = type(op).bound is not Op.bound or type(op).bound_outputs is not Op.bound_outputs
        assert op.identity or has_rule, f"{op.label()} has neither a rule nor identity"
