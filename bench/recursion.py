"""Product bound vs the slope-restricted recursion (issue 11), side by side, on trained nets.

Not a test.  Trains small nets for a few seconds each on scikit-learn's bundled digits (8×8,
10 classes): MLPs of depth 3 and 8, tanh and GELU MLPs, a residual MLP (4 blocks), a CNN (padding
and a stride), a residual CNN (4 blocks, BatchNorm); plus ResNet-50 at 224 with random weights
(bench/_models.py, BatchNorm folded).  For each: the product of certified node norms, the
recursion at windows 1..4, an empirical lower bound (the largest Jacobian norm found: at every
test input, then gradient ascent for smooth activations; power iteration on J for ResNet-50), the
ratios product/recursion and recursion/lower, the CPU seconds of each method (process time, so
other load on the machine does not count), and the largest residual-branch bound.

Usage:  python bench/recursion.py [--skip-resnet] [--windows 1 2 3 4] [--default 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from from_torch import jacobian_lower_bound, network_from_module  # noqa: E402

from lipaudit.tight import network_bound, residual_branches  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Nets


def mlp(depth: int, width: int, act) -> nn.Module:
    layers, fan_in = [nn.Flatten()], 64
    for _ in range(depth - 1):
        layers += [nn.Linear(fan_in, width), act()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, 10))


class ResidualMLP(nn.Module):
    def __init__(self, width: int = 64, blocks: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(64, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(blocks)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(torch.relu(x))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


class ConvBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    def __init__(self, c: int = 16, blocks: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(*(ConvBlock(c) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


NETS = {  # name: (builder, training epochs)
    "MLP depth 3": (lambda: mlp(3, 128, nn.ReLU), 30),
    "MLP depth 8": (lambda: mlp(8, 64, nn.ReLU), 30),
    "tanh MLP depth 4": (lambda: mlp(4, 96, nn.Tanh), 30),
    "GELU MLP depth 4": (lambda: mlp(4, 96, nn.GELU), 30),
    "residual MLP (4 blocks)": (ResidualMLP, 30),
    "CNN": (cnn, 10),
    "residual CNN (4 blocks)": (ResidualCNN, 8),
}
SMOOTH = ("tanh", "GELU")


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=generator)
    train, test = order[:1400], order[1400:]
    return x[train], y[train], x[test], y[test]


def train(model: nn.Module, x, y, epochs: int = 30) -> nn.Module:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Measurements


def cpu_seconds(fn):
    start = time.process_time()
    value = fn()
    return value, time.process_time() - start


def power_lower_bound(model: nn.Module, x: torch.Tensor, iterations: int = 12) -> float:
    """‖J(x)v‖ after power iteration on JᵀJ (float32 jvp/vjp): a lower estimate of ‖J(x)‖."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape, generator=generator)
    v /= v.norm()
    value = 0.0
    for _ in range(iterations):
        _, jv = torch.func.jvp(model, (x,), (v,))
        value = float(jv.norm())
        _, pull = torch.func.vjp(model, x)
        (w,) = pull(jv)
        v = w / w.norm()
    return value


def measure(name: str, model: nn.Module, example: torch.Tensor, lower: float, windows, default: int) -> dict:
    net = network_from_module(model, example)
    _, t_product = cpu_seconds(lambda: [node.norm() for node in net.nodes])
    row = {"net": name, "lower": lower, "t_product": t_product, "rec": {}, "t_rec": {}}
    for w in windows:
        found, seconds = cpu_seconds(lambda: network_bound(net, window=w))
        row["rec"][w], row["t_rec"][w] = found.bound, seconds + t_product
        row["product"] = found.product
        print(
            f"  {name}: w={w} bound {found.bound:.4g} ({found.method}), {found.chain_norms} chain norms, "
            f"{found.collapses} collapses, {seconds + t_product:.1f} s cpu",
            flush=True,
        )
    branches = residual_branches(net, window=default)
    row["branch"] = max((b.bound for b in branches), default=None)
    row["branches"] = len(branches)
    return row


def lower_bound_digits(model: nn.Module, inputs: torch.Tensor, smooth: bool) -> float:
    generator = torch.Generator().manual_seed(2)
    noise = torch.rand(inputs[:200].shape, generator=generator)
    candidates = torch.cat([inputs, noise, (inputs[:200] + noise) / 2])
    return jacobian_lower_bound(model, candidates, ascent_steps=40 if smooth else 0, step_size=0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--default", type=int, default=2, help="the window reported in the ratio columns")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits()
    rows = []
    for name, (build, epochs) in NETS.items():
        torch.manual_seed(0)
        model, t_train = cpu_seconds(lambda: train(build(), x_train, y_train, epochs))
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        lower = lower_bound_digits(model, x_test, any(s in name for s in SMOOTH))
        print(
            f"{name}: trained in {t_train:.1f} s cpu, test accuracy {accuracy:.3f}, lower bound {lower:.4g}", flush=True
        )
        row = measure(name, model, x_test[:1], lower, args.windows, args.default)
        row["accuracy"] = accuracy
        rows.append(row)
    if not args.skip_resnet:
        from _models import resnet50

        model = resnet50()
        example = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
        lower = max(power_lower_bound(model, example), power_lower_bound(model, example * 0.5 + 0.5))
        print(f"ResNet-50 at 224: lower bound {lower:.4g}", flush=True)
        row = measure(
            "ResNet-50 at 224 (random)", model, example, lower, [w for w in args.windows if w <= 3], args.default
        )
        row["accuracy"] = None
        rows.append(row)
    report(rows, args.windows, args.default)


def report(rows, windows, default: int) -> None:
    print()
    head = (
        "| net | product | "
        + " | ".join(f"w={w}" for w in windows)
        + f" | lower | product / rec (w={default}) | rec / lower | cpu product | cpu rec (w={default}) | "
        "max branch |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        rec = r["rec"].get(default)
        cells = [r["net"], f"{r['product']:.4g}"] + [f"{r['rec'][w]:.4g}" if w in r["rec"] else "–" for w in windows]
        cells += [
            f"{r['lower']:.4g}",
            f"{r['product'] / rec:.3g}×" if rec else "–",
            f"{rec / r['lower']:.3g}×" if rec else "–",
            f"{r['t_product']:.1f} s",
            f"{r['t_rec'][default]:.1f} s ({r['t_rec'][default] / max(r['t_product'], 1e-9):.1f}×)"
            if default in r["t_rec"]
            else "–",
            f"{r['branch']:.3g} ({r['branches']})" if r["branch"] is not None else "–",
        ]
        print("| " + " | ".join(cells) + " |")
    trained = [r for r in rows if r["accuracy"] is not None and default in r["rec"]]
    gains = [r["product"] / r["rec"][default] for r in trained]
    residual = [r["product"] / r["rec"][default] for r in trained if "residual" in r["net"]]
    if gains:
        print(
            f"\nmedian product / recursion (w={default}) on trained nets: {statistics.median(gains):.3g}× "
            f"(target ≥ 2×); residual nets: {', '.join(f'{g:.3g}×' for g in residual)} (target ≥ 5×)"
        )
    sound = all(r["lower"] <= min(r["rec"].values()) and max(r["rec"].values()) <= r["product"] for r in rows)
    print(f"every bound between the lower bound and the product: {sound}")
    for w in windows:
        ratios = [r["product"] / r["rec"][w] for r in trained if w in r["rec"]]
        if ratios:
            print(
                f"  w={w}: median gain {statistics.median(ratios):.3g}×, geometric mean "
                f"{math.exp(statistics.mean(math.log(g) for g in ratios)):.3g}×"
            )


if __name__ == "__main__":
    main()
