"""Local bounds around real inputs (issue 21: ≤ 1.05 × ‖J(x0)‖ at radius 1e-3 for ReLU MLPs and CNNs).

Not a test.  Trains small ReLU nets on scikit-learn's bundled digits (8×8): an MLP 64-128-128-10, a CNN
with BatchNorm and max pooling, and a residual CNN (two blocks h + conv(ReLU(conv h)), average
pooling).  Around a few test digits, on the ℓ∞ box of each radius, side by side:

* ‖J(x0)‖₂ by autograd at the centre, and the largest ‖J(x)‖₂ found at corners and random points of
  the box (lower bounds of the local constant);
* the interval-Jacobian bound (lipaudit.domain.local, as the previous round reported it);
* the switching-vertices bound (lipaudit.domain.switching) and its CPU seconds;
* what ``lipaudit.audit(..., around=x0, radius=R)`` reports (figure and method) and its CPU seconds.

CPU seconds are process time with one torch thread.

Usage:  python bench/local_bounds.py [--digits 3] [--radii 1e-3 1e-2] [--samples 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lipaudit import audit  # noqa: E402
from lipaudit.domain import prepare_domain  # noqa: E402
from lipaudit.domain.local import tightest_jacobian_bound  # noqa: E402
from lipaudit.domain.switching import switching_bound  # noqa: E402
from lipaudit.load import load_model  # noqa: E402
from lipaudit.passes import run_passes  # noqa: E402


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "MLP 64-128-128-10": nn.Sequential(
            nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
        ),
        "CNN, BatchNorm, max pooling": nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 16, 10),
        ),
        "residual CNN, 2 blocks": nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            Residual(8),
            nn.ReLU(),
            Residual(8),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 16, 10),
        ),
    }


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.tensor(data.target)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> nn.Module:
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (128,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def jacobian_norm(model: nn.Module, x: np.ndarray) -> float:
    point = torch.as_tensor(x, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: model(z).flatten(), point).reshape(-1, point.numel())
    return float(torch.linalg.matrix_norm(jac, ord=2))


def sampled_sup(model: nn.Module, centre: np.ndarray, radius: float, samples: int) -> float:
    rng = np.random.default_rng(0)
    best = jacobian_norm(model, centre)
    for k in range(samples):
        step = rng.choice([-1.0, 1.0], size=centre.shape) if k % 2 else rng.uniform(-1, 1, size=centre.shape)
        best = max(best, jacobian_norm(model, centre + radius * step))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--radii", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = digits()
    folder = Path(tempfile.mkdtemp())
    print("| net | digit | radius | ‖J(x0)‖ | sampled sup | interval-Jacobian | switching (CPU) | audit |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ratios: dict[float, list[float]] = {r: [] for r in args.radii}
    for name, model in nets().items():
        model = train(model, x, y)
        path = folder / f"{len(list(folder.iterdir()))}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x[:1],), str(path), dynamo=False, input_names=["x"])
        graph = run_passes(load_model(path).graph)
        double = model.double()
        for index in range(args.digits):
            centre = x[index : index + 1].numpy()
            for radius in args.radii:
                at_centre = jacobian_norm(double, centre.astype(np.float64))
                sampled = sampled_sup(double, centre.astype(np.float64), radius, args.samples)
                domain = prepare_domain(graph, None, around=[centre], radius=radius)
                interval = tightest_jacobian_bound(graph, domain.bounds, domain.ranges)
                start = time.process_time()
                found = switching_bound(graph, domain.bounds, interval.ranges)
                switching_s = time.process_time() - start
                start = time.process_time()
                report = audit(path, around=centre, radius=radius)
                audit_s = time.process_time() - start
                figure = report.network.upper_bound
                ratios[radius].append(figure / at_centre)
                switched = "–" if found is None else f"{found.figure:.4g} ({switching_s:.1f} s)"
                reported = f"{figure:.4g} = {figure / at_centre:.3f}× ({report.network.method}, {audit_s:.1f} s)"
                print(
                    f"| {name} | {index} | {radius:g} | {at_centre:.4g} | {sampled:.4g} | {interval.upper_bound:.4g} "
                    f"| {switched} | {reported} |",
                    flush=True,
                )
    for radius, found in ratios.items():
        print(f"radius {radius:g}: audit / ‖J(x0)‖ median {np.median(found):.3f}, max {np.max(found):.3f}")


if __name__ == "__main__":
    main()
