"""The usual model families, tiny, built in code: each is exported through every path a user takes.

Every family is small enough that all five exports and their audits take a second or two.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))

    def forward(self, x):
        return self.net(x)


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2), nn.BatchNorm2d(6)
        )
        self.head = nn.Linear(6 * 2 * 2, 4)

    def forward(self, x):
        return self.head(torch.flatten(torch.relu(self.features(x)), 1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h))))))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


class Depthwise(nn.Module):
    """A MobileNetV2 inverted residual: expand, depthwise 3×3 with ReLU6, project, add."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(4, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12), nn.ReLU6()
        )
        self.project = nn.Sequential(nn.Conv2d(12, 4, 1, bias=False), nn.BatchNorm2d(4))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(4, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


class CausalEncoder(nn.Module):
    """A causal (text-decoder style) layer: both ONNX exporters add −∞ above the scores' diagonal."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(5))

    def forward(self, x):
        return self.layer(x, src_mask=self.mask)


class MaskedAttention(nn.Module):
    """Multi-head attention with a boolean causal mask (True: not attended)."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("mask", torch.triu(torch.ones(5, 5, dtype=torch.bool), 1))

    def forward(self, x):
        return self.mha(x, x, x, attn_mask=self.mask, need_weights=False)[0]


class PaddedAttention(nn.Module):
    """Multi-head attention with a constant boolean mask and a constant key-padding mask: the legacy
    exporter expands and reshapes the padding mask's −∞ before adding it to the scores."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("padding", torch.tensor([[False, False, False, True, True]]))
        self.register_buffer("mask", torch.tensor([[False, True, False, False, False]] * 5))

    def forward(self, x):
        return self.mha(x, x, x, attn_mask=self.mask, key_padding_mask=self.padding, need_weights=False)[0]


class CrossAttention(nn.Module):
    """Attention to a fixed memory: constant keys and values, so globally Lipschitz."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("memory", torch.randn(1, 3, 8))

    def forward(self, x):
        return self.mha(x, self.memory, self.memory, need_weights=False)[0]


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class ViTBlock(nn.Module):
    """Pre-norm block with explicit per-head attention through scaled_dot_product_attention."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


class GroupSort(nn.Module):
    """Orthogonal linear layers with GroupSort-2: a 1-Lipschitz network. (torch's orthogonal
    parametrization exports to neither ONNX nor TorchScript; remove it before saving, as here.)"""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)
        for layer in (self.fc1, self.fc2):
            nn.init.orthogonal_(layer.weight)

    def forward(self, x):
        h = self.fc1(x)
        h = h.reshape(h.shape[0], -1, 2).sort(dim=-1).values.reshape(h.shape[0], -1)
        return self.fc2(h)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.reduce = nn.Conv2d(8, 2, 1)
        self.expand = nn.Conv2d(2, 8, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(F.adaptive_avg_pool2d(h, 1)))))
        return h * gate


class SoftplusMLP(nn.Module):
    """torch's softplus keeps its threshold cut: the dynamo exporter writes it as a Where."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Softplus(beta=2.0), nn.Linear(8, 3), nn.Softplus())

    def forward(self, x):
        return self.net(x)


class FlattenUnflatten(nn.Module):
    """nn.Flatten then nn.Unflatten between two convolutions: the dynamo exporter drops the pair."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Unflatten(1, (4, 5, 5)), nn.Conv2d(4, 2, 1), nn.Flatten()
        )

    def forward(self, x):
        return self.net(x)


class EinsumHeads(nn.Module):
    """Per-head projections written with einsum, then a batched matmul by a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.Parameter(torch.randn(2, 4, 3) * 0.5)
        self.out = nn.Parameter(torch.randn(2, 3, 4) * 0.5)

    def forward(self, x):  # (1, 2, 4): two heads of 4
        h = torch.relu(torch.einsum("bhi,hij->bhj", x, self.heads))
        return torch.bmm(h.transpose(0, 1), self.out).transpose(0, 1)


class ShiftedWindows(nn.Module):
    """Swin-style cyclic shift (torch.roll) and a channel shuffle by chunk and cat around a 1×1 conv:
    every exporter writes them as slices and concats, which are permutations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        shifted = torch.roll(x, shifts=(1, -2), dims=(2, 3))
        a, b = torch.chunk(self.conv(shifted), 2, dim=1)
        return torch.roll(torch.cat([b, a], dim=1), shifts=(-1, 2), dims=(2, 3))


class Unfolded(nn.Module):
    """F.unfold (im2col) into a linear layer, with a running sum over the patches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        patches = F.unfold(x, 2, stride=2).transpose(1, 2)
        return torch.cumsum(self.fc(patches), dim=1)


class AdaptiveUnequal(nn.Module):
    """Adaptive average pooling to sizes that do not divide the input's: windows of unequal
    lengths. The legacy ONNX exporter refuses it; the dynamo exporter writes index gathers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 3 * 2, 2)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), (3, 2)).flatten(1))


FAMILIES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (MLP, (1, 6)),
    "cnn_bn": (ConvBN, (1, 3, 6, 6)),
    "residual": (Residual, (1, 3, 6, 6)),
    "depthwise": (Depthwise, (1, 4, 6, 6)),
    "lstm": (lambda: Recurrent(nn.LSTM), (1, 3, 4)),
    "gru": (lambda: Recurrent(nn.GRU), (1, 3, 4)),
    "encoder": (Encoder, (1, 5, 8)),
    "causal_encoder": (CausalEncoder, (1, 5, 8)),
    "masked_mha": (MaskedAttention, (1, 5, 8)),
    "padded_mha": (PaddedAttention, (1, 5, 8)),
    "cross_attention": (CrossAttention, (1, 5, 8)),
    "mha": (Attention, (1, 5, 8)),
    "vit": (ViTBlock, (1, 5, 8)),
    "groupsort": (GroupSort, (1, 8)),
    "squeeze_excite": (SqueezeExcite, (1, 3, 6, 6)),
    "softplus": (SoftplusMLP, (1, 6)),
    "flatten_unflatten": (FlattenUnflatten, (1, 3, 5, 5)),
    "einsum_heads": (EinsumHeads, (1, 2, 4)),
    "shifted_windows": (ShiftedWindows, (1, 4, 4, 6)),
    "unfold": (Unfolded, (1, 2, 4, 4)),
}


class ShuffleUnit(nn.Module):
    """A ShuffleNet unit: grouped 1×1 convolutions around nn.ChannelShuffle and a depthwise 3×3
    (the legacy ONNX exporter refuses channel_shuffle)."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(8, 4, 1, groups=2)
        self.shuffle = nn.ChannelShuffle(2)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(4, 8, 1, groups=2)

    def forward(self, x):
        return torch.relu(x + self.expand(self.depthwise(self.shuffle(torch.relu(self.reduce(x))))))


# Families that not every ONNX exporter writes, or writes as the same graph: the torch paths agree
# with each other, and the dynamo export gets the same verdict (its figure is for its own graph).
TORCH_ONLY: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "adaptive_unequal": (AdaptiveUnequal, (1, 3, 5, 7)),
    "shuffle_unit": (ShuffleUnit, (1, 8, 4, 4)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The family's network in eval mode, BatchNorm statistics away from the identity."""
    factory, shape = FAMILIES[name] if name in FAMILIES else TORCH_ONLY[name]
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
