"""Common backbones for the benchmarks, built in code with torch.nn (no torchvision, no downloads).

Random Kaiming weights and calibrated BatchNorm (``_models.initialise``), eval mode:

  resnet18       torchvision's layout (7×7/2 stem, max pool, four stages of basic blocks)
  mobilenet_v2   torchvision's layout (inverted residuals, depthwise 3×3, ReLU6)
  regnetx_200mf  RegNetX-200MF (widths 24/56/152/368, depths 1/1/4/7, grouped 3×3 of group width 8)
  convnext_atto  ConvNeXt-atto's layout (4×4/4 patchify stem, depthwise 7×7, 4× inverted MLP with
                 GELU) with BatchNorm in place of LayerNorm, so that it folds like the others
  yolov8n        a YOLOv8n-sized detector (width 0.25, depth 0.33): Conv-BN-SiLU, C2f, SPPF,
                 nearest upsampling and concatenation, three raw detection heads (80 classes)

``MODELS`` maps a name to its builder (each takes the input size it is calibrated at).
"""

from __future__ import annotations

import torch
from _models import initialise, resnet50
from torch import nn


class ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, s: int = 1, groups: int = 1, act: type | None = nn.ReLU):
        layers = [nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


# ------------------------------------------------------------------ ResNet-18


class Residual(nn.Module):
    """relu(branch(x) + shortcut(x)); the shortcut is a strided 1×1 ConvBN where the shape changes."""

    def __init__(self, branch: nn.Module, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.branch = branch
        self.shortcut = ConvBN(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        return torch.relu(self.branch(x) + self.shortcut(x))


def basic_block(c_in: int, c_out: int, stride: int) -> Residual:
    return Residual(
        nn.Sequential(ConvBN(c_in, c_out, 3, stride), ConvBN(c_out, c_out, 3, act=None)), c_in, c_out, stride
    )


class ResNet18(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(ConvBN(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [basic_block(c_in, c_out, stride), basic_block(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


# ------------------------------------------------------------------ MobileNetV2


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = [ConvBN(c_in, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [ConvBN(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), ConvBN(hidden, c_out, 1, act=None)]
        self.branch = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.branch(x) if self.residual else self.branch(x)


class MobileNetV2(nn.Module):
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers, c_in = [ConvBN(3, 32, 3, 2, act=nn.ReLU6)], 32
        for expand, c_out, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        layers.append(ConvBN(c_in, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes))

    def forward(self, x):
        return self.head(self.features(x))


# ------------------------------------------------------------------ RegNetX-200MF


def x_block(c_in: int, c_out: int, stride: int, group_width: int = 8) -> Residual:
    branch = nn.Sequential(
        ConvBN(c_in, c_out, 1),
        ConvBN(c_out, c_out, 3, stride, groups=c_out // group_width),
        ConvBN(c_out, c_out, 1, act=None),
    )
    return Residual(branch, c_in, c_out, stride)


class RegNetX200MF(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers, c_in = [ConvBN(3, 32, 3, 2)], 32
        for width, depth in ((24, 1), (56, 1), (152, 4), (368, 7)):
            for i in range(depth):
                layers.append(x_block(c_in, width, 2 if i == 0 else 1))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))

    def forward(self, x):
        return self.head(self.features(x))


# ------------------------------------------------------------------ ConvNeXt-atto (BatchNorm)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.branch = nn.Sequential(
            ConvBN(dim, dim, 7, groups=dim, act=None), nn.Conv2d(dim, 4 * dim, 1), nn.GELU(), nn.Conv2d(4 * dim, dim, 1)
        )

    def forward(self, x):
        return x + self.branch(x)


class ConvNeXtAtto(nn.Module):
    def __init__(self, classes: int = 1000, dims=(40, 80, 160, 320), depths=(2, 2, 6, 2)):
        super().__init__()
        layers = [nn.Conv2d(3, dims[0], 4, 4), nn.BatchNorm2d(dims[0])]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i:
                layers += [nn.BatchNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, 2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dims[-1], classes))

    def forward(self, x):
        return self.head(self.features(x))


# ------------------------------------------------------------------ YOLOv8n-sized detector


def silu_conv(c_in: int, c_out: int, k: int = 1, s: int = 1) -> ConvBN:
    return ConvBN(c_in, c_out, k, s, act=nn.SiLU)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.branch = nn.Sequential(silu_conv(c, c, 3), silu_conv(c, c, 3))
        self.shortcut = shortcut

    def forward(self, x):
        return x + self.branch(x) if self.shortcut else self.branch(x)


class C2f(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = silu_conv(c_in, 2 * self.c)
        self.cv2 = silu_conv((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))  # as ultralytics writes it (Split; chunk exports Shape)
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.cv1 = silu_conv(c_in, c_in // 2)
        self.cv2 = silu_conv(2 * c_in, c_out)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YOLOv8n(nn.Module):
    def __init__(self, classes: int = 80):
        super().__init__()
        self.b0, self.b1, self.b2 = silu_conv(3, 16, 3, 2), silu_conv(16, 32, 3, 2), C2f(32, 32, 1, True)
        self.b3, self.b4 = silu_conv(32, 64, 3, 2), C2f(64, 64, 2, True)
        self.b5, self.b6 = silu_conv(64, 128, 3, 2), C2f(128, 128, 2, True)
        self.b7, self.b8, self.b9 = silu_conv(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12, self.h15 = C2f(384, 128, 1, False), C2f(192, 64, 1, False)
        self.h16, self.h18 = silu_conv(64, 64, 3, 2), C2f(192, 128, 1, False)
        self.h19, self.h21 = silu_conv(128, 128, 3, 2), C2f(384, 256, 1, False)
        self.box = nn.ModuleList(
            nn.Sequential(silu_conv(c, 64, 3), silu_conv(64, 64, 3), nn.Conv2d(64, 64, 1)) for c in (64, 128, 256)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(silu_conv(c, 80, 3), silu_conv(80, 80, 3), nn.Conv2d(80, classes, 1)) for c in (64, 128, 256)
        )

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n4 = self.h12(torch.cat([self.up(p5), p4], 1))
        o3 = self.h15(torch.cat([self.up(n4), p3], 1))
        o4 = self.h18(torch.cat([self.h16(o3), n4], 1))
        o5 = self.h21(torch.cat([self.h19(o4), p5], 1))
        return tuple(torch.cat([box(o), cls(o)], 1) for o, box, cls in zip((o3, o4, o5), self.box, self.cls))


def _built(cls):
    def build(size: int, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        # at small inputs the last stages see a few pixels: a larger batch keeps their statistics sane
        return initialise(cls(), size, seed=seed, batch=16 if size <= 64 else 2)

    return build


MODELS = {
    "resnet18": _built(ResNet18),
    "mobilenet_v2": _built(MobileNetV2),
    "regnetx_200mf": _built(RegNetX200MF),
    "convnext_atto": _built(ConvNeXtAtto),
    "yolov8n": _built(YOLOv8n),
    "resnet50": lambda size, seed=0: resnet50(seed=seed, size=size),
}
