"""The torch.nn converter is faithful (same function without biases), and on trained small nets the
bound lies between the Jacobian lower bound and the product."""

import pytest
import torch
from torch import nn

from bench.from_torch import jacobian_lower_bound, network_from_module
from lipaudit.tight import network_bound, residual_branches
from tests.tight._tight_helpers import module_lower_bound


class Block(nn.Module):
    def __init__(self, c, act):
        super().__init__()
        self.conv1, self.bn, self.conv2, self.act = (
            nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.Conv2d(c, c, 1),
            act,
        )

    def forward(self, x):
        return x + self.conv2(self.act(self.bn(self.conv1(x))))


class SmallResNet(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(Block(4, act), Block(4, act))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(torch.relu(self.blocks(self.stem(x)))), 1))


def _unbiased(model):
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), nn.LeakyReLU(0.1), nn.Tanh()])
def test_converted_network_computes_the_module(act):
    torch.manual_seed(0)
    model = _unbiased(SmallResNet(act)).double()
    x = torch.randn(3, 1, 1, 8, 8, dtype=torch.float64)
    net = network_from_module(model, x[0])
    [out] = net.evaluate(x)
    assert torch.allclose(out, torch.stack([model(v) for v in x]), atol=1e-12)
    assert len(residual_branches(net)) == 2


def _train(model, inputs, labels, steps=60):
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_trained_nets_between_lower_bound_and_product(kind):
    torch.manual_seed(1)
    inputs = torch.randn(128, 1, 8, 8)
    labels = (inputs[:, 0, :4].sum((1, 2)) > 0).long() + (inputs[:, 0, 4:].sum((1, 2)) > 0).long()
    if kind == "mlp":
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)
        )
    else:
        model = SmallResNet(nn.ReLU())
        model.train()
    model = _train(model, inputs, labels)
    net = network_from_module(model, inputs[:1])
    found = network_bound(net, window=2)
    lower = max(
        module_lower_bound(model, (1, 1, 8, 8), samples=16),
        jacobian_lower_bound(model.float(), inputs[:32], ascent_steps=0),
    )
    assert lower <= found.bound <= found.product
