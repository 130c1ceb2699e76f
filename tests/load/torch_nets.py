"""Small torch networks, and every way of saving them that lipaudit reads, for the loader tests."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(16, 16)
        self.act2 = nn.LeakyReLU(0.2)
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        h = self.act1(self.fc1(x))
        h = h + torch.tanh(self.fc2(h))
        return self.fc3(self.act2(h))


class BasicBlock(nn.Module):
    """A ResNet block: conv-bn-relu-conv-bn plus the input, with an in-place ReLU at the end."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, groups=groups)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class CNN(nn.Module):
    """BatchNorm, a residual block, a grouped conv, max and average pooling, a strided conv, SiLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(8, groups=2))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.act = nn.SiLU()
        self.avg = nn.AvgPool2d(2)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        h = self.pool(self.layer1(self.stem(x)))
        h = self.avg(self.act(self.bn(self.down(h))))
        return self.head(torch.flatten(h, 1))


class Decoder(nn.Module):
    """ConvTranspose, concatenation, sigmoid/hardswish/ELU, adaptive pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(2, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.skip = nn.Conv2d(2, 4, 1)
        self.mix = nn.Conv2d(8, 4, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = F.elu(self.enc(x))
        h = torch.cat([torch.sigmoid(self.up(h)), F.hardswish(self.skip(x))], dim=1)
        h = self.gap(torch.relu(self.mix(h)))
        return self.fc(h.view(h.shape[0], -1))


class Tokens(nn.Module):
    """A per-token MLP on a (batch, tokens, features) input: LayerNorm, split/cat, Mish, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.norm(self.embed(x))
        a, b = torch.split(h, 4, dim=-1)
        h = torch.cat([F.mish(a), F.hardtanh(self.mix(b), -2.0, 2.0)], dim=-1)
        h = h.transpose(1, 2).mean(dim=-1)
        return torch.softmax(self.head(h), dim=-1)


class Zoo(nn.Module):
    """Ops the ONNX exporter handles poorly: reflect padding, 'same' conv1d, upsampling, pixel shuffle,
    shrinks, ELU/SELU/hardsigmoid, adaptive pooling to 2×2, a scripted-only loop over a ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.line = nn.Conv1d(2, 4, 3, padding=1, padding_mode="reflect")
        self.same = nn.Conv1d(4, 4, 3, padding="same", dilation=2)
        self.up = nn.Conv2d(4, 16, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.blocks = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate") for _ in range(2)])
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = F.selu(self.same(self.line(x)))  # (1, 4, 16)
        h = h.reshape(1, 4, 4, 4)
        h = self.shuffle(self.up(h)) + F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = F.softshrink(h, 0.1) + F.interpolate(F.hardsigmoid(h), size=(8, 8), mode="bilinear")
        for block in self.blocks:
            h = F.elu(block(h), 0.5)
        return self.head(self.pool(h).flatten(1))


NETWORKS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (MLP, (1, 6)),
    "cnn": (CNN, (1, 3, 8, 8)),
    "decoder": (Decoder, (1, 2, 8, 8)),
    "tokens": (Tokens, (1, 5, 8)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The network in eval mode, with BatchNorm statistics that differ from the identity."""
    factory, shape = NETWORKS[name]
    torch.manual_seed(seed)
    model = factory().eval()
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.3, generator=generator)
            module.running_var.uniform_(0.3, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 2.0, generator=generator)
            module.bias.data.normal_(0, 0.1, generator=generator)
    return model, shape


def save_as(kind: str, model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """Write ``model`` in one format: onnx, onnx-nofold, onnx-dynamo, traced, scripted or export."""
    example = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "onnx":
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17)
        elif kind == "onnx-nofold":
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, do_constant_folding=False)
        elif kind == "onnx-dynamo":
            torch.onnx.export(model, (example,), str(path), dynamo=True)
        elif kind == "traced":
            torch.jit.save(torch.jit.trace(model, example), str(path))
        elif kind == "scripted":
            torch.jit.save(torch.jit.script(model), str(path))
        elif kind == "export":
            torch.export.save(torch.export.export(model, (example,)), str(path))
        else:
            raise ValueError(kind)
    return path
