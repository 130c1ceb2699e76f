"""aten ops the ONNX exporters write as compositions (movedim, rot90, take_along_dim, diag_embed,
index_add, scatter_add, addcmul, addcdiv, lerp, nn.Bilinear, RReLU at inference) and a scripted index
by a Python list: the .pt and .pt2 paths reach the ONNX files' verdict, at the figure an independent
truth gives (the Jacobian of these maps, exact for the linear ones)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lipaudit import audit

INDEX = torch.tensor([0, 0, 1, 3])
C = torch.tensor([[1.0, 2.0, -1.0, 0.5]])


class Linearly(nn.Module):
    """x (1, 4) ↦ one linear composition of the op under test."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("index", INDEX)
        self.register_buffer("c", C)

    def forward(self, x):
        kind = self.kind
        if kind == "movedim":
            return torch.movedim(x.reshape(1, 2, 2), 1, 2) * 3.0
        if kind.startswith("rot90"):
            return torch.rot90(x.reshape(1, 1, 2, 2), int(kind[-1]), (2, 3)) * 2.0
        if kind == "take_along_dim":
            return torch.take_along_dim(x, self.index.unsqueeze(0), dim=1)
        if kind == "diag_embed":
            return torch.diag_embed(x) * 2.0
        if kind == "index_add":
            return torch.zeros(1, 4).index_add(1, self.index, x, alpha=1.5)
        if kind == "scatter_add":
            return torch.zeros(1, 2).scatter_add(1, torch.tensor([[0, 0, 0, 1]]), x)
        if kind == "addcdiv":
            return torch.addcdiv(x, self.c, self.c + 3.0, value=2.0) * 3.0
        if kind == "addcmul":
            return torch.addcmul(x, self.c, x, value=0.5)
        if kind == "aliases":  # names torch.export keeps: swapaxes, mT, multiply, subtract, negative, divide
            moved = torch.swapaxes(x.reshape(1, 2, 2), 1, 2).mT.reshape(1, 4)
            return torch.divide(torch.negative(torch.subtract(torch.multiply(moved, self.c), self.c, alpha=2.0)), 3.0)
        if kind == "outer":
            return torch.outer(x[0], self.c[0]) * 2.0
        if kind == "addmv":
            return torch.addmv(self.c[0], torch.outer(self.c[0], self.c[0]) + 1.0, x[0], beta=0.5, alpha=2.0)
        if kind == "addbmm":
            return torch.addbmm(self.c[:, :1], x.reshape(2, 1, 2), self.c.reshape(2, 2, 1), alpha=1.5)
        if kind == "trace":
            return torch.trace(x.reshape(2, 2) * self.c.reshape(2, 2)).reshape(1)
        if kind == "narrow_copy":
            return x.narrow_copy(1, 1, 2) * 2.0
        if kind == "unfold":
            return x.unfold(1, 2, 1) * 2.0
        if kind == "diag":
            return torch.diag(x[0]) * 2.0
        if kind == "diag_of_matrix":
            return torch.diag(x.reshape(2, 2), -1) * 3.0
        return torch.lerp(x, self.c, 0.3)


LINEAR = ["movedim", "rot901", "rot902", "rot903", "take_along_dim", "diag_embed", "index_add", "scatter_add"]
LINEAR += ["addcdiv", "addcmul", "lerp", "aliases", "outer", "addmv", "addbmm", "trace", "narrow_copy", "unfold"]
LINEAR += ["diag", "diag_of_matrix"]


def _save(kind: str, net: nn.Module, example, folder: Path) -> Path:
    path = folder / ("m.pt2" if kind == "export" else "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "export":
            torch.export.save(torch.export.export(net, example), str(path))
        elif kind == "scripted":
            torch.jit.save(torch.jit.script(net), str(path))
        else:
            torch.jit.save(torch.jit.trace(net, example), str(path))
    return path


def _exact_norm(net: nn.Module, x: torch.Tensor) -> float:
    jacobian = torch.autograd.functional.jacobian(lambda z: net(z.reshape(x.shape)).reshape(-1), x.reshape(-1))
    return float(torch.linalg.matrix_norm(jacobian.double().reshape(-1, x.numel()), 2))


@pytest.mark.parametrize("op", LINEAR)
@pytest.mark.parametrize("kind", ["traced", "export"])
def test_a_composite_aten_op_gets_its_exact_norm(tmp_path: Path, op: str, kind: str) -> None:
    net = Linearly(op).eval()
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    report = audit(str(_save(kind, net, (x,), tmp_path)), verify=False)
    truth = _exact_norm(net, x)
    assert report.exit_code() == 0, report.network.unsupported
    # addbmm's batched product then sum over the batch is bounded as two maps: sound, not exact
    slack = 1.3 if op == "addbmm" else 1 + 1e-5
    assert truth * (1 - 1e-6) <= report.upper_bound <= truth * slack


class Bilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = nn.Bilinear(3, 2, 2)

    def forward(self, x):
        return self.mix(x[:, :3], x[:, 3:])


class RReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 6), nn.RReLU(0.1, 0.3), nn.Linear(6, 2))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("build, box", [(Bilinear, "-1:1"), (RReLU, None)])
def test_bilinear_and_rrelu_agree_on_the_torch_paths_and_bound_their_jacobians(tmp_path, build, box) -> None:
    net = build().eval()
    x = torch.rand(1, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    figures = []
    for kind in ("traced", "export"):
        folder = tmp_path / kind
        folder.mkdir()
        report = audit(str(_save(kind, net, (x,), folder)), input_range=box, verify=False)
        assert report.exit_code() == 0, report.network.unsupported
        figures.append(report.upper_bound)
    assert figures[0] == pytest.approx(figures[1], rel=1e-9)
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):  # points of the box [−1, 1]: the Jacobian's norm is a lower bound there
        point = torch.rand(1, 5, generator=generator) * 2 - 1
        assert _exact_norm(net, point) <= figures[0] * (1 + 1e-6)


def test_a_scripted_index_by_a_python_list_is_a_constant_gather(tmp_path: Path) -> None:
    class Pick(nn.Module):
        def forward(self, x):
            return x[:, [0, 0, 0, 1, 2]]

    net = Pick().eval()
    x = torch.randn(1, 4)
    report = audit(str(_save("scripted", net, (x,), tmp_path)), input_shape="1x4", bound="product", verify=False)
    assert report.exit_code() == 0
    assert report.upper_bound == pytest.approx(3**0.5, rel=1e-6)


class Norms(nn.Module):
    def __init__(self, order) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.order = order
        self.linear = nn.Linear(4, 10)

    def forward(self, x):
        return torch.linalg.vector_norm(self.linear(x).reshape(2, 5), ord=self.order, dim=1)


class TorchNorm(Norms):
    def forward(self, x):
        return torch.norm(self.linear(x).reshape(2, 5), dim=1)  # scripted, it asks prim::layout


@pytest.mark.parametrize("order", [1.0, 2.0, float("inf"), float("-inf"), "torch.norm"])
def test_vector_norms_of_orders_one_two_and_infinity(tmp_path: Path, order) -> None:
    """The 1- and ∞-norms had been 'no rule' on the torch paths (the ONNX exporters write ReduceL1 and
    a max of |x|); each is Lipschitz in ℓ2 with √n (n entries per norm) and 1."""
    net = (TorchNorm(2.0) if order == "torch.norm" else Norms(order)).eval()
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    figures = []
    for kind in ("traced", "export", "scripted"):
        folder = tmp_path / kind
        folder.mkdir()
        flag = "1x4" if kind == "scripted" else None
        report = audit(str(_save(kind, net, (x,), folder)), input_shape=flag, verify=False)
        assert report.exit_code() == 0, report.network.unsupported
        figures.append(report.upper_bound)
    assert figures[0] == pytest.approx(figures[1], rel=1e-9) == pytest.approx(figures[2], rel=1e-9)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        assert _exact_norm(net, torch.randn(1, 4, generator=generator)) <= figures[0] * (1 + 1e-6)
