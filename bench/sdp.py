"""The certified semidefinite bound (lipaudit.sdp, issue 21) against the product, cvxpy and a lower bound.

Not a test.  Trains nets for a few seconds each on scikit-learn's bundled digits (8×8, 10 classes).

MLPs, on lipaudit.sdp directly: 64-32-32-10, 64-64-64-10, 64-128-128-10, 64-300-300-300-10 (203k
parameters) and two residual MLPs (stem 64→w, 3 blocks w→h→w with ReLU, ReLU, head; (w, h) = (32, 64)
and (16, 16)).  For each: the product of spectral norms (lipaudit.sdp's product figure: for an MLP,
∏‖W_k‖); the certified LipSDP-Neuron figure and its CPU seconds (process time, one torch thread, so
other load on the machine does not count); cvxpy's optimum of the same program with an open solver
(the `bench` extra; SCS at tolerance 1e-5 by default, only on nets up to --cvxpy-neurons neurons: on
trained nets SCS needs over a minute at 64 neurons and over ten at 128, Clarabel's dense KKT system
far longer); and an empirical lower bound (the largest ‖J(x)‖₂ over the test set, uniform noise and
mixtures, then gradient ascent on ‖J(x)‖₂ from the best points — for ReLU nets the ascent moves
little, J being piecewise constant).

CNNs and residual nets, through ``lipaudit.audit`` on an exported ONNX model (--audit-nets): a plain
CNN (1→8→8 channels of 3×3 convolutions, 2×2 average pooling, dense head), residual CNNs of 4 and 6
blocks h + conv(ReLU(conv h)) on an 8×8×8 stream, and a 6-block GELU residual MLP.  For each: the
product (``bound='product'``), the recursion alone (the semidefinite budget set to 0), the default
run, and a run with --sdp-scale times the semidefinite budget (figure, method, CPU seconds), beside
the same lower bound.

Usage:  python bench/sdp.py [--budget 1e11] [--cvxpy-neurons 64] [--solver SCS] [--eps 1e-5] [--skip-large]
                            [--skip-mlps] [--skip-audit] [--sdp-scale 30] [--continuity [--twins 5]]

--continuity: twins whose weights are scaled by 1 + 1e-7·noise, and the largest relative change of
their certified figure (lipaudit.sdp on three MLPs at two budgets, lipaudit.audit on two residual CNNs).
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


def cnn(channels: int = 8) -> nn.Module:
    """Digits CNN: 1→c→c channels of 3×3 convolutions at 8×8, average pooling, a dense head."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * 16, 10),
    )


class ResidualCNN(nn.Module):
    """A stem convolution, then blocks h + conv(σ(conv(h))) on an 8×8 stream of c channels, then
    σ, average pooling and a dense head."""

    def __init__(self, channels: int = 8, blocks: int = 4, act=nn.ReLU):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1), act(), nn.Conv2d(channels, channels, 3, padding=1)
            )
            for _ in range(blocks)
        )
        self.head = nn.Sequential(act(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(channels * 16, 10))

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


class GeluResidualMLP(nn.Module):
    """A stem 64→w, blocks h + W₂·GELU(W₁h) (w→h→w), then GELU and a dense head."""

    def __init__(self, width: int = 32, hidden: int = 64, blocks: int = 6):
        super().__init__()
        self.stem = nn.Linear(64, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)) for _ in range(blocks)
        )
        self.head = nn.Sequential(nn.GELU(), nn.Linear(width, 10))

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


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
    parser.add_argument("--skip-mlps", action="store_true", help="only the nets run through lipaudit.audit")
    parser.add_argument("--skip-audit", action="store_true", help="only the MLPs on lipaudit.sdp")
    parser.add_argument("--sdp-scale", type=float, default=30.0, help="the larger run's semidefinite budget")
    parser.add_argument("--continuity", action="store_true", help="only the 1e-7 weight-perturbation table")
    parser.add_argument("--twins", type=int, default=5, help="perturbed twins per net in the continuity table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = digits()
    if args.continuity:
        continuity_rows(args, x_train, y_train, x_test)
        return
    if not args.skip_mlps:
        mlp_rows(args, x_train, y_train, x_test, y_test)
    if not args.skip_audit:
        audit_rows(args, x_train, y_train, x_test, y_test)


def perturbed(model: nn.Module, seed: int, size: float = 1e-7) -> nn.Module:
    """A copy of ``model`` with every parameter scaled by 1 + size·N(0, 1) (float32, so a few ulps)."""
    import copy

    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1 + size * torch.randn(p.shape, generator=generator))
    return twin


CONTINUITY_NETS = ("MLP 64-64-64-10", "residual MLP (3 blocks, width 16)", "residual MLP (3 blocks)")


def continuity_rows(args, x_train, y_train, x_test) -> None:
    """The certified figure of twins whose weights differ by 1 + 1e-7·noise: lipaudit.sdp on three MLPs at
    the recursion's default semidefinite budget (3e10) and at this script's (--budget), then
    ``lipaudit.audit`` (default run) on the zoo's residual CNN and the digits residual CNN (4 blocks)."""
    import tempfile

    import lipaudit.tight.graph_bound as graph_bound
    from lipaudit import audit

    print("| net | budget | figure | max relative change over twins | cpu s per run |")
    print("|---|---|---|---|---|")
    for name in CONTINUITY_NETS:
        build, epochs = NETS[name]
        torch.manual_seed(0)
        model = train(build(), x_train, y_train, epochs)
        for budget in (graph_bound.SDP_BUDGET, args.budget):
            figures, spent = [], 0.0
            for seed in range(args.twins + 1):
                twin = model if seed == 0 else perturbed(model, seed)
                found, t = seconds(lambda: sdp_bound(to_sdp(twin), budget=int(budget)).figure)
                figures.append(found)
                spent += t
            change = max(abs(f / figures[0] - 1) for f in figures[1:])
            cells = f"{figures[0]:.6g} | {change:.2e} | {spent / len(figures):.2f}"
            print(f"| {name} | {budget:.0e} | {cells} |", flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "zoo"))
    from models import build as zoo_build

    zoo, shape = zoo_build("residual")
    torch.manual_seed(0)
    digits_cnn = train(ResidualCNN(8, 4), x_train.reshape(-1, 1, 8, 8), y_train, 15)
    for name, model, example in (
        ("zoo residual CNN (audit)", zoo, torch.randn(shape)),
        ("residual CNN, 4 blocks of 8 channels (audit)", digits_cnn, x_test[:1].reshape(1, 1, 8, 8)),
    ):
        figures, spent = [], 0.0
        with tempfile.TemporaryDirectory() as folder:
            for seed in range(args.twins + 1):
                twin = model if seed == 0 else perturbed(model, seed)
                path = str(Path(folder) / f"net{seed}.onnx")
                torch.onnx.export(twin, (example,), path, dynamo=False)
                found, t = seconds(lambda: audit(path).network)
                figures.append(found.upper_bound)
                spent += t
        change = max(abs(f / figures[0] - 1) for f in figures[1:])
        print(f"| {name} | default | {figures[0]:.6g} ({found.method}) | {change:.2e} | {spent / len(figures):.2f} |")


def mlp_rows(args, x_train, y_train, x_test, y_test) -> None:
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


AUDIT_NETS = {  # name: (builder, takes images, epochs)
    "CNN 1→8→8, pool, dense": (cnn, True, 15),
    "residual CNN, 4 blocks of 8 channels": (lambda: ResidualCNN(8, 4), True, 15),
    "residual CNN, 6 blocks of 8 channels": (lambda: ResidualCNN(8, 6), True, 15),
    "GELU residual MLP, 6 blocks 32→64→32": (GeluResidualMLP, False, 30),
}


def audit_rows(args, x_train, y_train, x_test, y_test) -> None:
    """The conv and residual nets through lipaudit.audit on their ONNX export."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from from_torch import jacobian_lower_bound

    import lipaudit.tight.graph_bound as graph_bound
    from lipaudit import audit

    default_budget = graph_bound.SDP_BUDGET
    rows = []
    for name, (build, images, epochs) in AUDIT_NETS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        shaped = (lambda x: x.reshape(-1, 1, 8, 8)) if images else (lambda x: x)
        torch.manual_seed(0)
        model = train(build(), shaped(x_train), y_train, epochs)
        accuracy = float((model(shaped(x_test)).argmax(1) == y_test).float().mean())
        noise = torch.rand(shaped(x_test[:200]).shape, generator=torch.Generator().manual_seed(2))
        candidates = torch.cat([shaped(x_test), noise, (shaped(x_test[:200]) + noise) / 2]).double()
        lower = jacobian_lower_bound(model.double(), candidates, ascent_steps=30, step_size=0.02)
        model.float()
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "net.onnx")
            torch.onnx.export(model, (shaped(x_test[:1]),), path, dynamo=False)
            row = dict(net=name, accuracy=accuracy, lower=lower)
            runs = (("product", "product", 1.0), ("recursion", "recursion", 0.0), ("default", "recursion", 1.0))
            runs += (("larger", "recursion", args.sdp_scale),)
            for label, bound, scale in runs:
                graph_bound.SDP_BUDGET = default_budget * scale
                try:
                    found, spent = seconds(lambda: audit(path, bound=bound).network)
                finally:
                    graph_bound.SDP_BUDGET = default_budget
                row[label] = (found.upper_bound, found.method, spent)
        rows.append(row)
        print(f"{name}: accuracy {accuracy:.3f}, {row}", flush=True)
    audit_report(rows, args.sdp_scale)


def audit_report(rows, scale: float) -> None:
    print()
    head = (
        "| net | product | recursion | default (method) | cpu product / recursion / default | "
        f"SDP budget ×{scale:g} (method) | cpu | lower | gap recursion | gap default | gap ×{scale:g} |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        lower = r["lower"]
        cells = [
            r["net"],
            f"{r['product'][0]:.4g}",
            f"{r['recursion'][0]:.4g}",
            f"{r['default'][0]:.4g} ({r['default'][1]})",
            f"{r['product'][2]:.1f} / {r['recursion'][2]:.1f} / {r['default'][2]:.1f} s",
            f"{r['larger'][0]:.4g} ({r['larger'][1]})",
            f"{r['larger'][2]:.0f} s",
            f"{lower:.4g}",
            f"{r['recursion'][0] / lower:.3g}×",
            f"{r['default'][0] / lower:.3g}×",
            f"{r['larger'][0] / lower:.3g}×",
        ]
        print("| " + " | ".join(cells) + " |")
    sound = all(r["lower"] <= r[k][0] <= r["product"][0] * (1 + 1e-9) for r in rows for k in ("recursion", "default"))
    print(f"\nevery figure between the lower bound and the product: {sound}")


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
