"""--around / --radius: local figures around an input, against autograd Jacobians (independent truth)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import lipaudit
from lipaudit.domain.around import centre_digest
from lipaudit.errors import UsageError


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 24), torch.nn.ReLU(), torch.nn.Linear(24, 5)
    )
    return net.eval()


def _cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 3 * 3, 5),
    )
    return net.eval()


def _jacobian_norm(net: torch.nn.Module, x: torch.Tensor) -> float:
    wide = copy.deepcopy(net).double()
    jac = torch.autograd.functional.jacobian(wide, x.double())
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), 2))


# The CNN case runs the switching branch and bound for 10 s: in the slow suite.
@pytest.mark.parametrize("build, shape", [(_mlp, (1, 16)), pytest.param(_cnn, (1, 1, 8, 8), marks=pytest.mark.slow)])
def test_tiny_radius_is_the_jacobian_norm(build, shape) -> None:
    net = build(0)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    local = lipaudit.audit(net, example_inputs=x, around=x.numpy(), radius=1e-6)
    exact = _jacobian_norm(net, x)
    assert local.network.scope == "domain"
    assert exact <= local.network.upper_bound <= 1.05 * exact


# The CNN case runs the switching branch and bound for 10 s: in the slow suite.
@pytest.mark.parametrize("build, shape", [(_mlp, (1, 16)), pytest.param(_cnn, (1, 1, 8, 8), marks=pytest.mark.slow)])
def test_local_bounds_jacobians_in_the_box_and_stays_below_the_global(build, shape) -> None:
    net = build(2)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    radius = 0.05
    local = lipaudit.audit(net, example_inputs=x, around=x.numpy(), radius=radius).network.upper_bound
    whole = lipaudit.audit(net, example_inputs=x).network.upper_bound
    generator = torch.Generator().manual_seed(4)
    inside = [x + radius * (2 * torch.rand(shape, generator=generator) - 1) for _ in range(40)]
    assert max(_jacobian_norm(net, point) for point in inside) <= local <= whole * (1 + 1e-9)


def _digits_trained(net: torch.nn.Module, shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.Tensor]:
    """``net`` after 30 full-batch Adam steps on sklearn's digits (well under a second, one thread)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, *shape[1:])
    labels = torch.tensor(digits.target)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimiser = torch.optim.Adam(net.parameters(), 1e-2)
        for _ in range(30):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval(), images


def _digits_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(64, 10))


def _digits_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )


@pytest.mark.parametrize("build, shape", [(_digits_mlp, (1, 64)), (_digits_cnn, (1, 1, 8, 8))])
def test_around_a_digit_the_figure_is_within_five_percent_of_the_jacobian(build, shape) -> None:
    net, images = _digits_trained(build(), shape)
    for index in (0, 17):
        x = images[index : index + 1]
        local = lipaudit.audit(net, example_inputs=x, around=x.numpy(), radius=1e-3).network.upper_bound
        exact = _jacobian_norm(net, x)
        assert exact <= local <= 1.05 * exact


def test_report_names_the_centre_by_its_hash(tmp_path) -> None:
    net = _mlp(0)
    x = torch.rand(1, 16, generator=torch.Generator().manual_seed(1))
    centre = tmp_path / "x.npy"
    np.save(centre, x.numpy())
    report = lipaudit.audit(net, example_inputs=x, around=str(centre), radius=1e-3)
    around = report.settings["around"]
    assert around["radius"] == 1e-3
    [(name, described)] = around["centres"].items()
    assert described["sha256"] == centre_digest(x.numpy())
    assert report.network.scope == "domain"
    json.dumps(report.settings)  # plain JSON


def test_around_errors_are_usage_errors(tmp_path) -> None:
    net = _mlp(0)
    x = torch.rand(1, 16)
    with pytest.raises(UsageError, match="does not exist"):
        lipaudit.audit(net, example_inputs=x, around=str(tmp_path / "missing.npy"), radius=1e-3)
    with pytest.raises(UsageError, match="shape"):
        lipaudit.audit(net, example_inputs=x, around=np.zeros((1, 15), np.float32), radius=1e-3)
    with pytest.raises(UsageError, match="--radius"):
        lipaudit.audit(net, example_inputs=x, around=x.numpy())
    with pytest.raises(UsageError, match="both --input-range and --around"):
        lipaudit.audit(net, example_inputs=x, around=x.numpy(), radius=1e-3, input_range="0:1")


class _Residual(torch.nn.Module):
    def __init__(self, activation: torch.nn.Module) -> None:
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(12, 12), activation, torch.nn.Linear(12, 12))
        self.head = torch.nn.Sequential(torch.nn.Linear(12, 12), activation, torch.nn.Linear(12, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.inner(x))


@pytest.mark.parametrize("activation", [torch.nn.Tanh(), torch.nn.GELU(), torch.nn.ReLU(), torch.nn.Sigmoid()])
@pytest.mark.parametrize("radius", [0.02, 0.5])
def test_local_figures_bound_sampled_jacobians_on_residual_nets(activation, radius: float) -> None:
    torch.manual_seed(5)
    net = _Residual(activation).eval()
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(6))
    local = lipaudit.audit(net, example_inputs=x, around=x.numpy(), radius=radius).network.upper_bound
    whole = lipaudit.audit(net, example_inputs=x).network.upper_bound
    generator = torch.Generator().manual_seed(7)
    corners = [x + radius * torch.sign(torch.randn(1, 12, generator=generator)) for _ in range(20)]
    inside = [x + radius * (2 * torch.rand(1, 12, generator=generator) - 1) for _ in range(20)]
    assert max(_jacobian_norm(net, point) for point in corners + inside) <= local <= whole * (1 + 1e-9)
