"""Each elementwise op's factor on a box: at least the steepest slope a dense scan of the box finds, and
not much more; its range contains every value of the scan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipaudit.compose import node_factors
from lipaudit.domain import value_ranges
from lipaudit.load import load_model
from lipaudit.ops import Env, RuleContext, resolve
from tests.builders import save, single_node_model

# op: (box, attributes, extra initializers)
CASES = {
    "Tanh": ((0.5, 2.0), {}, {}),
    "Sigmoid": ((-3.0, -1.0), {}, {}),
    "Erf": ((0.3, 1.5), {}, {}),
    "Atan": ((1.0, 4.0), {}, {}),
    "Softsign": ((-3.0, -0.5), {}, {}),
    "Softplus": ((-4.0, -1.0), {}, {}),
    "Elu": ((-3.0, -0.5), {"alpha": 1.5}, {}),
    "Selu": ((-2.0, -0.1), {}, {}),
    "Celu": ((-2.0, -0.2), {"alpha": 0.7}, {}),
    "LeakyRelu": ((-2.0, -0.5), {"alpha": 0.3}, {}),
    "HardSigmoid": ((3.0, 5.0), {}, {}),
    "Exp": ((-1.0, 0.7), {}, {}),
    "Log": ((0.5, 2.0), {}, {}),
    "Sqrt": ((0.2, 3.0), {}, {}),
    "Reciprocal": ((-2.0, -0.4), {}, {}),
    "Sinh": ((-1.2, 0.4), {}, {}),
    "Cosh": ((-0.5, 1.1), {}, {}),
    "Asin": ((-0.8, 0.5), {}, {}),
    "Acos": ((-0.3, 0.9), {}, {}),
    "Atanh": ((-0.7, 0.6), {}, {}),
    "Acosh": ((1.5, 3.0), {}, {}),
    "Tan": ((-1.0, 1.2), {}, {}),
    "Relu": ((-3.0, -1.0), {}, {}),
    "Gelu": ((-2.0, 0.3), {}, {}),
    "Mish": ((-4.0, -2.5), {}, {}),
    "HardSwish": ((-2.0, 1.0), {}, {}),
    "Abs": ((-1.0, 2.0), {}, {}),
    "Clip": ((2.0, 3.0), {}, {"lo": np.float32(-1.0), "hi": np.float32(1.0)}),
    "PRelu": ((-2.0, -1.0), {}, {"slope": np.array([0.5, -2.0, 0.25], np.float32)}),
    "ThresholdedRelu": ((1.5, 3.0), {"alpha": 1.0}, {}),
    "Floor": ((0.2, 0.8), {}, {}),
}
OPSETS = {"Gelu": 20, "Mish": 18}


@pytest.mark.parametrize("op", CASES)
def test_the_domain_factor_of_an_elementwise_op_is_its_steepest_slope_on_the_box(tmp_path, op):
    box, attrs, extra = CASES[op]
    model = single_node_model(op, (1, 3), extra, opset=OPSETS.get(op, 17), output_shape=(1, 3), **attrs)
    graph = load_model(save(model, tmp_path), probe=False).graph
    node = graph.nodes[0]
    ranges = value_ranges(graph, {"x": box})
    factor = node_factors(node, RuleContext(graph, ranges=ranges))[0]
    assert factor.status == "bounded", factor.reason
    # Scan the box entry by entry with the op's own run, in float64.
    implementation = resolve(node, graph.opset_of(node))
    env = Env(graph.opset_of(node), torch.float64, torch.device("cpu"))
    grid = torch.linspace(*box, 20001, dtype=torch.float64)
    x = grid[:, None].expand(-1, 3).clone().requires_grad_(True)
    args = [x] + [torch.as_tensor(np.asarray(graph.const(name), np.float64)) for name in node.inputs[1:]]
    y = implementation.run(env, node, args)
    (slope,) = torch.autograd.grad(y.sum(), x)
    steepest = float(slope.abs().max())
    assert factor.value >= steepest, (factor.value, steepest)
    assert factor.value <= steepest * (1 + 1e-3) + 1e-6, (factor.value, steepest)
    seen = y.detach().numpy()
    assert ranges[node.outputs[0]].contains(seen), op


def test_tanh_and_sigmoid_slopes_bracket_the_exact_ones_down_to_the_subnormals() -> None:
    """Upper ends never below the exact slope (mpmath), lower ends never above it, also where exp
    lands among the subnormals, whose absolute spacing a relative margin does not cover."""
    import mpmath
    import numpy as np

    from lipaudit.intervals.slopes import logistic_slope, sech_squared

    cases = [
        (sech_squared, lambda m: mpmath.sech(m) ** 2, np.linspace(0.0, 380.0, 2001)),
        (logistic_slope, lambda m: mpmath.exp(-m) / (1 + mpmath.exp(-m)) ** 2, np.linspace(0.0, 760.0, 2001)),
    ]
    for slope, exact, points in cases:
        upper, lower = slope(points, upper=True), slope(points, upper=False)
        for m, hi, lo in zip(points, upper, lower):
            truth = exact(mpmath.mpf(float(m)))
            assert hi > 0 and mpmath.mpf(float(hi)) >= truth, (slope.__name__, m)
            assert mpmath.mpf(float(lo)) <= truth, (slope.__name__, m)
