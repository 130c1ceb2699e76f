"""Transformers on a box around real inputs: interval arithmetic vs the attention and normalisation
rules vs the interval-Jacobian bound vs an empirical lower bound, in one run (issue 22).

Not a test.  Trains a tiny ViT (8 row-tokens of scikit-learn's bundled 8×8 digits, 2 pre-norm
blocks, 2 heads) for 300 Adam steps (a few seconds), then, for a box of half-width ``--radius`` around one real
input, audits:

* the legacy ONNX export, where scaled_dot_product_attention becomes MatMul/Softmax/MatMul and the
  local bound comes from interval arithmetic through them ("interval");
* the ``torch.export`` archive, where it stays one Attention op bounded per head by the
  covariance form, with LayerNorm from the smallest standard deviation on the box ("per-head");
* the interval-Jacobian bound on the same ``.pt2`` graph (lipaudit.domain.jacobian): sup of ‖J‖₂ over
  the box from enclosures of every value's Jacobian, ranges tightened by the centred form; then
  with ranges tightened by affine forms (lipaudit.domain.affine), then the lowest of that, the
  best product over segments cut at the residual stream (lipaudit.domain.segments) and the chain of
  the segments' Jacobian centres (lipaudit.domain.telescope), with its CPU seconds (one torch thread);
* what ``lipaudit check`` reports now: the lower of the two ``.pt2`` figures;
* the empirical lower bound: the largest Jacobian norm found inside the box (``--lower-bound``).

The first two columns are the figures without the interval-Jacobian bound (it is switched off for
them), as they were before it.

The box is centred by baking the real input into the exported module (x ↦ f(x₀ + x), x in
[−r, r]): the same function of x, so the same Lipschitz constant. Each block is audited alone on
the box around the activations that reach it, then the whole network.

With ``--quick`` only the interval-Jacobian columns are computed (the audits, with their recursion
and their search for a lower bound, take many minutes on the network): "reported now" is then the
last of them, and the lower bound is ‖J(x0)‖₂ at the box's centre (autograd, float64).

Below the table, where a figure is the chain of segment centres, each link's ‖C‖₂ and δ: which
segment holds the chain back.

Usage:  python bench/transformers.py [--radius 0.002] [--steps 300] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lipaudit.domain.jacobian as interval_jacobian  # noqa: E402
import lipaudit.domain.local as local_bound  # noqa: E402
from lipaudit import audit  # noqa: E402
from lipaudit.domain import prepare_domain  # noqa: E402
from lipaudit.load import load_model  # noqa: E402
from lipaudit.passes import run_passes  # noqa: E402


class Block(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2) -> None:
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
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.position = nn.Parameter(torch.randn(1, 8, dim) * 0.1)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def tokens(self, x):
        return self.embed(x) + self.position

    def forward(self, x):
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


class Centred(nn.Module):
    """x ↦ inner(centre + x): the box [−r, r] around ``centre``."""

    def __init__(self, inner: nn.Module, centre: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("centre", centre.detach().clone())

    def forward(self, x):
        return self.inner(self.centre + x)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)  # (N, 8, 8): 8 row-tokens of 8 pixels
    return images, torch.tensor(data.target)


def train(model: nn.Module, images, labels, steps: int) -> float:
    """A fixed number of Adam steps (not seconds), so that every run trains the same network."""
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(images), (128,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def figures(
    module: nn.Module, centre: torch.Tensor, radius: float, folder: Path, name: str, quick: bool = False
) -> dict[str, Any]:
    wrapped = Centred(module, centre).eval()
    example = torch.zeros_like(centre)
    onnx_path, pt2_path = folder / f"{name}.onnx", folder / f"{name}.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), str(onnx_path), dynamo=False, opset_version=17)
        torch.export.save(torch.export.export(wrapped, (example,)), str(pt2_path))
    box = [f"{-radius}:{radius}"]
    if quick:  # the interval-Jacobian figures only (no audit: no recursion, no search)
        graph = run_passes(load_model(str(pt2_path)).graph)
        domain = prepare_domain(graph, box)
        found = jacobian_figures(graph, domain)
        # ‖J‖₂ at the box's centre (an interior point): a lower bound on the constant on the box
        jacobian = torch.autograd.functional.jacobian(copy.deepcopy(wrapped).double(), example.double())
        lower = float(torch.linalg.matrix_norm(jacobian.reshape(-1, example.numel()), ord=2))
        nan = math.nan
        return {
            "interval": nan,
            "per_head": nan,
            **found,
            "now": found["segments"],
            "method": "-",
            "lower": lower,
        }
    with without_interval_jacobian():
        interval = audit(str(onnx_path), input_range=box)
        per_head = audit(str(pt2_path), input_range=box)
    now = audit(str(pt2_path), input_range=box, lower_bound=True, samples=64, steps=40)
    graph = run_passes(load_model(str(pt2_path)).graph)
    domain = prepare_domain(graph, box)
    return {
        "interval": _figure(interval.upper_bound),
        "per_head": _figure(per_head.upper_bound),
        **jacobian_figures(graph, domain),
        "now": _figure(now.upper_bound),
        "method": now.network.method,
        "lower": now.lower_bound or 0.0,
    }


def jacobian_figures(graph, domain) -> dict[str, Any]:
    """The interval-Jacobian bound three ways: on interval arithmetic's ranges (as it was), on ranges
    tightened by affine forms, and the lowest of that, the best product over segments and the chain
    of their centres (what the audit uses); with the CPU seconds of the last (one torch thread)."""
    figures: dict[str, Any] = {}
    for key, run in (
        ("jacobian", lambda: interval_jacobian.interval_jacobian_bound(graph, domain.bounds, domain.ranges)),
        (
            "affine",
            lambda: local_bound.tightest_jacobian_bound(graph, domain.bounds, domain.ranges, segments=False),
        ),
        ("segments", lambda: local_bound.tightest_jacobian_bound(graph, domain.bounds, domain.ranges)),
    ):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.process_time()
        try:
            found = run()
            figures[key] = found.upper_bound
            figures[f"{key}_chain"] = found.chain
        except interval_jacobian.JacobianUnavailable:
            figures[key] = math.inf
        finally:
            figures[f"{key}_s"] = time.process_time() - start
            torch.set_num_threads(threads)
    return figures


def _figure(value: float | None) -> float:
    return value if value is not None else math.inf


@contextlib.contextmanager
def without_interval_jacobian():
    """The audit as it was before the interval-Jacobian bound: the pipeline finds none."""
    original = local_bound.local_jacobian_bound
    local_bound.local_jacobian_bound = lambda *args: (None, "switched off for the comparison")
    try:
        yield
    finally:
        local_bound.local_jacobian_bound = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radius", type=float, default=0.002)
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of training (a few seconds)")
    parser.add_argument("--sample", type=int, default=0, help="which digit image is the box's centre")
    parser.add_argument(
        "--quick", action="store_true", help="only the interval-Jacobian figures and the lower bound (no audits)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = digits()
    model = TinyViT()
    accuracy = train(model, images, labels, args.steps)
    print(f"tiny ViT on digits: train accuracy {accuracy:.3f}, box ±{args.radius} around image {args.sample}")
    x0 = images[args.sample : args.sample + 1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        h = model.tokens(x0).detach()
        for k, block in enumerate(model.blocks):
            rows.append((f"block {k + 1}", figures(block, h, args.radius, folder, f"block{k}", args.quick)))
            h = block(h).detach()
        rows.append(("network", figures(model, x0, args.radius, folder, "network", args.quick)))
    print()
    print(
        "| part | interval (ONNX, decomposed) | per-head + LayerNorm (.pt2) | interval-Jacobian (.pt2) "
        "| + affine-form ranges | + segments / chain (CPU s) | reported now (method) | lower bound | now / lower |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, f in rows:
        ratio = f["now"] / f["lower"] if f["lower"] > 0 else math.inf
        print(
            f"| {name} | {f['interval']:.4g} | {f['per_head']:.4g} | {f['jacobian']:.4g} | {f['affine']:.4g} "
            f"| {f['segments']:.4g} ({f['segments_s']:.2g}) | {f['now']:.4g} ({f['method']}) | {f['lower']:.4g} "
            f"| {ratio:.3g} |"
        )
    print()
    print("Where the figure is the chain of segment centres: each link's ‖C‖₂ and δ ≥ ‖J − C‖₂ on its box")
    for name, f in rows:
        for first, last, norm, deviation in f.get("segments_chain") or []:
            print(f"  {name}: {first} → {last}  ‖C‖ {norm:.4g}  δ {deviation:.4g}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
