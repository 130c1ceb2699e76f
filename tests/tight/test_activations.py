"""Slope ranges: every derivative on a fine grid lies inside [α, β], and the range is tight."""

import pytest
import torch

from lipaudit.tight.activations import evaluator, slope_range, split

GRID = torch.linspace(-12, 12, 2_400_001, dtype=torch.float64)


@pytest.mark.parametrize(
    "kind, alpha",
    [
        ("relu", None),
        ("leaky_relu", 0.1),
        ("leaky_relu", -0.3),
        ("tanh", None),
        ("sigmoid", None),
        ("softplus", None),
        ("gelu", None),
        ("gelu_tanh", None),
        ("silu", None),
        ("mish", None),
        ("elu", 1.0),
        ("elu", 2.5),
        ("hardswish", None),
        ("hardsigmoid", 0.2),
        ("selu", None),
        ("softsign", None),
        ("abs", None),
    ],
)
def test_slopes_contain_every_derivative_and_are_tight(kind, alpha):
    low, high = slope_range(kind, alpha)
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(evaluator(kind, alpha)(x).sum(), x)
    assert float(grad.min()) >= low and float(grad.max()) <= high
    assert (
        float(grad.min()) <= low + 1e-4
        and float(grad.max()) >= high - 1e-4
        or kind in ("softplus", "sigmoid", "elu", "selu", "softsign")
    )


def test_split():
    assert split((0.0, 1.0)) == (0.5, 0.5, 1.0)
    a, b, lip = split((-0.12891, 1.12891))
    assert a - b <= -0.12891 and a + b >= 1.12891 and lip == 1.12891
    assert split((0.25, 0.25))[1] == 0.0
