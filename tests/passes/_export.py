"""Save a torch function as lipaudit users do (ONNX opset 17 without dynamo, or a traced TorchScript),
and measure its Lipschitz constant from below with torch itself."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch


class Wrapper(torch.nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def export(fn: Callable, shape: tuple[int, ...], directory: Path, kind: str = "onnx") -> tuple[Path, list[str]]:
    """(path, the input_shape argument audit needs for it)."""
    module = fn if isinstance(fn, torch.nn.Module) else Wrapper(fn)
    example = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "torchscript":
            path = Path(directory) / "model.pt"
            torch.jit.save(torch.jit.trace(module.eval(), example, check_trace=False), str(path))
            return path, ["x".join(map(str, shape))]
        path = Path(directory) / "model.onnx"
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17, input_names=["x"])
        return path, []


def jacobian_norms(fn: Callable, points: Iterable[torch.Tensor]) -> float:
    """max over ``points`` of ‖J_fn(x)‖₂ in float64: each is a lower bound on the Lipschitz constant
    (at a point where fn is differentiable, which random points are almost surely)."""
    best = 0.0
    for x in points:
        x = x.to(torch.float64)
        jacobian = torch.autograd.functional.jacobian(fn, x).reshape(-1, x.numel())
        best = max(best, float(torch.linalg.matrix_norm(jacobian, ord=2)))
    return best


def random_points(shape: tuple[int, ...], count: int = 6, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(count)]
