"""The interval-Jacobian (centred form) bound against independent truth: it is at least ‖J(x)‖₂
(autograd, float64) at corners and random points of the box, its output enclosure holds the
finite-difference Jacobians there (a check that catches a deliberately narrowed enclosure), it
tends to ‖J(x0)‖ on a tiny box around a ReLU network's centre, and the audit never reports a
figure above the one it had without it."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lipaudit import audit
from lipaudit.domain import prepare_domain
from lipaudit.domain.jacobian import JacobianUnavailable, interval_jacobian_bound
from lipaudit.execute.executor import GraphInterpreter
from lipaudit.intervals.jacobian import Jac

from ._models import TinyViT, analysed, export


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, stride=2),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(12, 4),
    )


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


def _centre(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def _bound(graph, centre: np.ndarray, radius: float):
    domain = prepare_domain(graph, None, around=[centre], radius=radius)
    assert domain is not None
    return domain, interval_jacobian_bound(graph, domain.bounds, domain.ranges)


def _points(centre: np.ndarray, radius: float, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for k in range(count):
        if k < 3:  # corners
            yield centre + radius * rng.choice([-1.0, 1.0], size=centre.shape)
        else:
            yield centre + rng.uniform(-radius, radius, size=centre.shape)


def _jacobian_norm(module: nn.Module, x: np.ndarray) -> float:
    model = module.double().eval()
    point = torch.as_tensor(x, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(model, point).reshape(-1, point.numel())
    return float(torch.linalg.matrix_norm(jacobian, ord=2))


def _pt2(module: nn.Module, shape: tuple[int, ...], folder: Path) -> Path:
    path = folder / "model.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module.eval(), (torch.zeros(shape),)), str(path))
    return path


CASES = {
    "mlp": (_mlp, (1, 6), 0.05, "onnx"),
    "cnn": (_cnn, (1, 2, 5, 5), 0.05, "onnx"),
    "encoder_layer": (_Encoder, (1, 4, 8), 0.01, "pt2"),
    "vit_block": (lambda: TinyViT(dim=8, heads=2, patch=3), (1, 3, 6, 6), 0.01, "onnx"),
    "rms_vit_block": (lambda: TinyViT(dim=8, heads=2, patch=3, rms=True), (1, 3, 6, 6), 0.01, "onnx"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_figure_is_at_least_the_jacobian_norm_inside_the_box(case: str, tmp_path: Path) -> None:
    build, shape, radius, kind = CASES[case]
    torch.manual_seed(1)
    module = build().eval()
    path = _pt2(module, shape, tmp_path) if kind == "pt2" else export(module, shape, tmp_path)
    graph = analysed(path)
    centre = _centre(shape, 2)
    _, found = _bound(graph, centre, radius)
    seen = max(_jacobian_norm(module, x) for x in _points(centre, radius, 12, 3))
    assert math.isfinite(found.upper_bound)
    assert found.upper_bound >= seen


def _finite_differences(graph, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """(n0, n_out) central differences of the graph run in float64."""
    run = GraphInterpreter(graph, dtype=torch.float64)
    name = graph.inputs[0]
    rows = []
    for i in range(x.size):
        shift = np.zeros(x.size)
        shift[i] = step
        up = run.run({name: torch.as_tensor(x + shift.reshape(x.shape))})[graph.outputs[0]]
        down = run.run({name: torch.as_tensor(x - shift.reshape(x.shape))})[graph.outputs[0]]
        rows.append(((up - down) / (2 * step)).reshape(-1).numpy())
    return np.stack(rows)


def _enclosure_misses(enclosure: Jac, graph, centre: np.ndarray, radius: float) -> int:
    """How many sampled finite-difference Jacobians leave [C − R, C + R] (beyond their own error)."""
    n0 = centre.size
    low = (enclosure.centre - enclosure.radius).reshape(n0, -1).numpy()
    high = (enclosure.centre + enclosure.radius).reshape(n0, -1).numpy()
    misses = 0
    for x in _points(centre, radius * 0.99, 8, 5):
        found = _finite_differences(graph, x)
        slack = 1e-6 * (1 + np.abs(found))
        misses += int(np.any(found < low - slack) or np.any(found > high + slack))
    return misses


def test_enclosure_holds_finite_differences_and_a_narrowed_one_is_caught(tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = TinyViT(dim=8, heads=2, patch=3).eval()
    graph = analysed(export(module, (1, 3, 6, 6), tmp_path))
    centre, radius = _centre((1, 3, 6, 6), 4), 0.02
    _, found = _bound(graph, centre, radius)
    enclosure = found.enclosures[graph.outputs[0]]
    assert _enclosure_misses(enclosure, graph, centre, radius) == 0
    narrowed = Jac(enclosure.centre, torch.zeros_like(enclosure.radius))  # only the centre: too narrow
    assert _enclosure_misses(narrowed, graph, centre, radius) > 0


def test_tiny_box_around_a_relu_network_gives_the_jacobian_at_the_centre(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    graph = analysed(export(module, (1, 5), tmp_path))
    centre = _centre((1, 5), 7)
    _, found = _bound(graph, centre, 1e-7)
    at_centre = _jacobian_norm(module, centre)
    assert at_centre <= found.upper_bound <= 1.05 * at_centre


def test_audit_takes_the_lower_figure_and_names_the_method(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(1)
    path = export(TinyViT(dim=8, heads=2, patch=3).eval(), (1, 3, 6, 6), tmp_path)
    centre = tmp_path / "x.npy"
    np.save(centre, _centre((1, 3, 6, 6), 2).astype(np.float32))
    report = audit(str(path), around=[str(centre)], radius=0.001, verify=False)
    import lipaudit.domain.local as engine

    monkeypatch.setattr(engine, "local_jacobian_bound", lambda *args, **kwargs: (None, "turned off"))
    before = audit(str(path), around=[str(centre)], radius=0.001, verify=False)
    assert report.network.upper_bound <= before.network.upper_bound
    assert report.network.method == "interval-jacobian"
    assert report.network.scope == "domain"
    assert any("interval-Jacobian" in notice for notice in report.notices)
    assert before.network.method != "interval-jacobian"


def test_an_op_without_a_rule_gives_no_figure(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.Hardswish()).eval()  # HardSwish has a rule: swap to Sign
    graph = analysed(export(module, (1, 4), tmp_path))
    for node in graph.nodes:
        if node.op_type == "HardSwish":
            node.op_type = "Sign"
    domain = prepare_domain(graph, ["-1:1"])
    assert domain is not None
    with pytest.raises(JacobianUnavailable, match="Sign"):
        interval_jacobian_bound(graph, domain.bounds, domain.ranges)


def test_a_value_past_the_memory_cap_gives_no_figure(tmp_path: Path) -> None:
    graph = analysed(export(_mlp(), (1, 6), tmp_path))
    domain = prepare_domain(graph, ["-1:1"])
    assert domain is not None
    with pytest.raises(JacobianUnavailable, match="memory cap"):
        interval_jacobian_bound(graph, domain.bounds, domain.ranges, entry_limit=10)
