"""Models for the benchmarks, built in code with torch.nn (no torchvision, no downloads).

ResNet-50 (v1.5: the stride sits in the 3×3 convolution of each bottleneck) with Kaiming-normal
weights and BatchNorm statistics calibrated on random images (train-mode forward passes with a
cumulative average), then random affine parameters around 1, as a trained network has them
(``initialise``, shared with bench/_zoo.py); the folded convolutions (W·γ/√(var+ε)) are what
lipaudit measures after its fold pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, inplanes = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = []
            for i in range(blocks):
                stage.append(Bottleneck(inplanes, planes, stride if i == 0 else 1))
                inplanes = planes * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(seed: int = 0, calibration_batches: int = 2, batch: int = 2, size: int = 224) -> ResNet50:
    """A ResNet-50 in eval mode with Kaiming weights and realistic BatchNorm statistics."""
    torch.manual_seed(seed)
    # the last BN of a residual branch is small in trained ResNets
    return initialise(
        ResNet50(),
        size,
        seed=seed,
        calibration_batches=calibration_batches,
        batch=batch,
        shrink=lambda name: name.endswith("bn3"),
    )


def initialise(
    model: nn.Module,
    size: int,
    *,
    seed: int = 0,
    calibration_batches: int = 2,
    batch: int = 2,
    shrink=lambda name: False,
) -> nn.Module:
    """Kaiming-normal convolutions, BatchNorm statistics calibrated on random images (train-mode
    passes with a cumulative average), then random affine parameters around 1 (× 0.3 where
    ``shrink(name)``), as a trained network has them.  Returns the model in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(calibration_batches):
            model(torch.randn(batch, 3, size, size))
    generator = torch.Generator().manual_seed(seed + 1)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            gamma = 1.0 + 0.25 * torch.randn(n, generator=generator)
            if shrink(name):
                gamma = gamma * 0.3
            module.weight.data = gamma
            module.bias.data = 0.1 * torch.randn(n, generator=generator)
    return model.eval()


@dataclass
class ConvLayer:
    name: str
    weight: torch.Tensor  # BatchNorm folded in, float32
    spatial: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[int, ...]  # ONNX order: begins then ends
    dilation: tuple[int, ...]
    groups: int


def folded_convs(model: nn.Module, size: int = 224) -> list[ConvLayer]:
    """Every Conv2d, with the BatchNorm that reads its output folded in (as lipaudit's fold pass
    does), and its input size.  The pairs are found by tracing one forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    produced: dict[int, str] = {}  # id of a conv's output tensor -> the conv's name
    folded: dict[str, nn.BatchNorm2d] = {}

    def conv_hook(name):
        def hook(module, inputs, output):
            shapes[name] = tuple(inputs[0].shape[2:])
            produced[id(output)] = name

        return hook

    def bn_hook(module, inputs, output):
        name = produced.get(id(inputs[0]))
        if name is not None:
            folded[name] = module

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(bn_hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    layers = []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d) or name not in shapes:
            continue
        weight = conv.weight.detach().clone()
        bn = folded.get(name)
        if bn is not None:
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            weight = weight * scale.reshape(-1, 1, 1, 1)
        pad = conv.padding
        layers.append(ConvLayer(name, weight, shapes[name], conv.stride, (*pad, *pad), conv.dilation, conv.groups))
    return layers


def wide_mlp(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """The dense layers of a classifier with 4096-wide layers (VGG-style head on 2048 features)."""
    torch.manual_seed(seed)
    dims = [(2048, 4096), (4096, 4096), (4096, 4096), (4096, 1000)]
    layers = []
    for i, (fan_in, fan_out) in enumerate(dims):
        linear = nn.Linear(fan_in, fan_out)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        layers.append((f"fc{i + 1}", linear.weight.detach().clone()))
    return layers
