"""The certified semidefinite bound (lipaudit.sdp, issue 21) against the product, cvxpy and a lower bound.

Not a test.  Trains MLPs for a few seconds each on scikit-learn's bundled digits (8×8, 10 classes):
64-32-32-10, 64-64-64-10, 64-128-128-10, 64-300-300-300-10 (203k parameters) and two residual MLPs
(stem 64→w, 3 blocks w→h→w with ReLU, ReLU, head; (w, h) = (32, 64) and (16, 16)).  For each: the product of
spectral norms (lipaudit.sdp's product figure: for an MLP, ∏‖W_k‖); the certified LipSDP-Neuron
figure and its CPU seconds (process time, one torch thread, so other load on the machine does not
count); cvxpy's optimum of the same program with an open solver (the `bench` extra; SCS at
tolerance 1e-5 by default, only on nets up to --cvxpy-neurons neurons: on trained nets SCS needs
over a minute at 64 neurons and over ten at 128, Clarabel's dense KKT system far longer); and an
empirical lower bound (the largest ‖J(x)‖₂ over the test set, uniform noise and mixtures, then
gradient ascent on ‖J(x)‖₂ from the best points — for ReLU nets the ascent moves little, J being
piecewise constant).

Usage:  python bench/sdp.py [--budget 1e11] [--cvxpy-neurons 64] [--solver SCS] [--eps 1e-5] [--skip-large]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lipaudit.sdp import DEFAULT_BUDGET, from_mlp, from_residual_mlp, product_figure, sdp_bound  # noqa: E402


def mlp(dims) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualMLP(nn.Module):
    def __init__(self, width: int = 32, hidden: int = 64, blocks: int = 3):
        super().__init__()
        self.stem = nn.Linear(64, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width)) for _ in range(blocks)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(torch.relu(h))


def to_sdp(model: nn.Module):
    if isinstance(model, ResidualMLP):
        blocks = [(b[0].weight, b[2].weight) for b in model.blocks]
        return from_residual_mlp(
            blocks,
            [(0.0, 1.0)] * len(blocks),
            stem=model.stem.weight,
            head=model.head.weight,
            head_slopes=(0.0, 1.0),
        )
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    return from_mlp(weights, [(0.0, 1.0)] * (len(weights) - 1))


NETS = {  # name: (builder, epochs)
    "MLP 64-32-32-10": (lambda: mlp([64, 32, 32, 10]), 20),
    "MLP 64-64-64-10": (lambda: mlp([64, 64, 64, 10]), 20),
    "MLP 64-128-128-10": (lambda: mlp([64, 128, 128, 10]), 20),
    "MLP 64-300-300-300-10": (lambda: mlp([64, 300, 300, 300, 10]), 10),
    "residual MLP (3 blocks)": (ResidualMLP, 20),
    "residual MLP (3 blocks, width 16)": (lambda: ResidualMLP(16, 16), 20),
}
LARGE = ("MLP 64-300-300-300-10",)


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1400]], y[order[:1400]], x[order[1400:]], y[order[1400:]]


def train(model: nn.Module, x, y, epochs: int) -> nn.Module:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()


def lower_bound(model: nn.Module, inputs: torch.Tensor, steps: int = 30) -> float:
    """The largest ‖J(x)‖₂ found (float64): candidates, then gradient ascent from the best 16."""
    model = model.double()
    generator = torch.Generator().manual_seed(2)
    noise = torch.rand(inputs[:200].shape, generator=generator, dtype=torch.float64)
    candidates = torch.cat([inputs.double(), noise, (inputs[:200].double() + noise) / 2])

    def norms(xs):
        jac = torch.func.vmap(torch.func.jacrev(model))(xs)
        return torch.linalg.matrix_norm(jac, ord=2)

    with torch.no_grad():
        values = norms(candidates)
    best = float(values.max())
    points = candidates[values.argsort(descending=True)[:16]].clone().requires_grad_(True)
    optimiser = torch.optim.Adam([points], lr=0.01)
    for _ in range(steps):
        optimiser.zero_grad()
        values = norms(points)
        best = max(best, float(values.detach().max()))
        (-values.sum()).backward()
        optimiser.step()
    model.float()
    return best


def seconds(fn):
    start = time.process_time()
    value = fn()
    return value, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET)
    parser.add_argument("--cvxpy-neurons", type=int, default=64, help="run cvxpy on nets up to this many neurons")
    parser.add_argument("--solver", default="SCS")
    parser.add_argument("--eps", type=float, default=1e-5, help="SCS's tolerance")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="run only the nets whose names contain one of these")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = digits()
    rows = []
    for name, (build, epochs) in NETS.items():
        if (args.skip_large and name in LARGE) or (args.only and not any(o in name for o in args.only)):
            continue
        torch.manual_seed(0)
        model, t_train = seconds(lambda: train(build(), x_train, y_train, epochs))
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        params = sum(p.numel() for p in model.parameters())
        network = to_sdp(model)
        product, t_product = seconds(lambda: product_figure(network))
        found, t_sdp = seconds(lambda: sdp_bound(network, warm_start=product, budget=int(args.budget)))
        lower = lower_bound(model, x_test)
        reference, t_ref = None, None
        if network.neurons <= args.cvxpy_neurons:
            try:
                from bench._sdp_reference import cvxpy_lipsdp

                start = time.time()  # the solvers run threads of their own: wall clock here
                reference = cvxpy_lipsdp(network, args.solver, args.eps)
                t_ref = time.time() - start
            except ImportError:
                pass
        row = dict(
            net=name,
            params=params,
            neurons=network.neurons,
            accuracy=accuracy,
            product=product,
            sdp=found.figure,
            t_sdp=t_sdp + t_product,
            iterations=found.iterations,
            reference=reference,
            t_ref=t_ref,
            lower=lower,
        )
        rows.append(row)
        print(f"{name}: trained in {t_train:.1f} s, accuracy {accuracy:.3f}, {row}", flush=True)
    report(rows, args.solver)


def report(rows, solver: str) -> None:
    print()
    head = (
        f"| net | params | neurons | product | SDP certified | cpu SDP | {solver} (cvxpy) | wall {solver} | "
        "SDP / cvxpy − 1 | lower | product / SDP | SDP / lower |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        sdp, ref = r["sdp"], r["reference"]
        cells = [
            r["net"],
            f"{r['params']:,}",
            str(r["neurons"]),
            f"{r['product']:.4g}",
            f"{sdp:.5g}" if sdp is not None else "– (no proof)",
            f"{r['t_sdp']:.1f} s",
            f"{ref:.5g}" if ref is not None else "–",
            f"{r['t_ref']:.0f} s" if r["t_ref"] is not None else "–",
            f"{sdp / ref - 1:+.2%}" if sdp is not None and ref is not None else "–",
            f"{r['lower']:.4g}",
            f"{r['product'] / sdp:.3g}×" if sdp is not None else "–",
            f"{sdp / r['lower']:.3g}×" if sdp is not None else "–",
        ]
        print("| " + " | ".join(cells) + " |")
    sound = all(r["sdp"] is None or r["lower"] <= r["sdp"] <= r["product"] for r in rows)
    print(f"\nevery certified figure between the lower bound and the product: {sound}")


if __name__ == "__main__":
    main()
