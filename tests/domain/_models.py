"""Small torch models for the bounded-domain tests, exported to ONNX, and the audit steps on them."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lipaudit.compose import NetworkBound, compose
from lipaudit.domain import value_ranges
from lipaudit.ir import Graph
from lipaudit.load import load_model
from lipaudit.ops import RuleContext
from lipaudit.passes import run_passes

UNIT = (0.0, 1.0)


class SqueezeExcitation(nn.Module):
    """conv → ReLU → squeeze-excitation (x·sigmoid(g(x))) → a hard-sigmoid gate x·hardsigmoid(h(x)) → head."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.reduce = nn.Conv2d(channels, 2, 1)
        self.expand = nn.Conv2d(2, channels, 1)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        squeezed = h.mean((2, 3), keepdim=True)
        h = h * torch.sigmoid(self.expand(torch.relu(self.reduce(squeezed))))
        h = h * F.hardsigmoid(self.gate(h))
        return self.head(h.mean((2, 3)))


class TinyViT(nn.Module):
    """Patch embedding, LayerNorm, one multi-head attention block spelled out, an MLP, a head."""

    def __init__(self, dim: int = 8, heads: int = 2, patch: int = 3, rms: bool = False) -> None:
        super().__init__()
        self.heads, self.rms = heads, rms
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 2)
        self.rms_weight = nn.Parameter(1 + 0.1 * torch.randn(dim))

    def attention(self, t):
        b, n, d = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def norm(self, t, layer):
        if self.rms:
            return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * self.rms_weight
        return layer(t)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = t + self.attention(self.norm(t, self.norm1))
        t = t + self.mlp(self.norm(t, self.norm2))
        return self.head(t.mean(1))


def export(
    module: nn.Module, shape: tuple[int, ...], directory: Path, name: str = "model.onnx", opset: int = 17
) -> Path:
    path = Path(directory) / name
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.rand(shape),), str(path), dynamo=False, opset_version=opset, input_names=["x"]
        )
    return path


def analysed(path: Path) -> Graph:
    """The graph as the pipeline analyses it: loaded (probed, folded) and rewritten."""
    return run_passes(load_model(path).graph)


def domain_bound(graph: Graph, box: tuple[float, float] = UNIT) -> NetworkBound:
    ranges = value_ranges(graph, {name: box for name in graph.inputs})
    return compose(graph, RuleContext(graph, method="gram", ranges=ranges))


def global_bound(graph: Graph) -> NetworkBound:
    return compose(graph, RuleContext(graph, method="gram"))
