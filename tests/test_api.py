"""The Python API: lipaudit.audit on a file, an onnx.ModelProto and a torch.nn.Module, with the
command's options, defaults and errors; lipaudit.testing.assert_lipschitz; the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
import torch

import lipaudit
from lipaudit.errors import LipauditError, UsageError
from lipaudit.report import Report
from lipaudit.testing import assert_lipschitz

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def largest_jacobian_norm(net: torch.nn.Module, points: int = 64) -> float:
    """A lower bound on Lip(net): the largest spectral norm of its Jacobian at random points."""
    torch.manual_seed(1)
    best = 0.0
    for _ in range(points):
        jacobian = torch.autograd.functional.jacobian(net, torch.randn(1, 8, dtype=torch.float64))
        best = max(best, torch.linalg.matrix_norm(jacobian.reshape(4, 8), ord=2).item())
    return best


def test_an_nn_module_is_exported_and_bounded_soundly() -> None:
    net = small_net()
    net.train()
    report = lipaudit.audit(net, example_inputs=torch.randn(1, 8), max_lipschitz=100.0)
    assert isinstance(report, Report) and net.training  # its mode is given back
    assert report.model.path == "<torch.nn.Module Sequential>" and report.model.format == "torch.export"
    bound = report.network.upper_bound
    truth_below = largest_jacobian_norm(net.double())
    w1, w2 = net.float()[0].weight.detach().double(), net[2].weight.detach().double()
    product = (torch.linalg.matrix_norm(w1, ord=2) * torch.linalg.matrix_norm(w2, ord=2)).item()
    assert truth_below * (1 - 1e-6) <= bound <= product * (1 + 1e-6)
    assert report.network.certified and report.threshold.passed is True and report.exit_code() == 0


def test_a_module_of_two_inputs_takes_a_tuple() -> None:
    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = torch.nn.Linear(4, 3), torch.nn.Linear(5, 3)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.left(x) + self.right(y)

    net = TwoInputs()
    report = lipaudit.audit(net, example_inputs=(torch.randn(1, 4), torch.randn(1, 5)))
    # The map (x, y) ↦ Ax + By is linear: its constant is the norm of [A B].
    both = torch.cat([net.left.weight, net.right.weight], dim=1).detach().double()
    truth = torch.linalg.matrix_norm(both, ord=2).item()
    assert report.network.upper_bound >= truth * (1 - 1e-6)
    assert [tensor.name for tensor in report.model.inputs] and len(report.model.inputs) == 2


def test_a_module_that_torch_export_refuses_is_traced_instead() -> None:
    class DataDependent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # control flow on data: torch.export stops here, tracing follows one branch
                return self.linear(x)
            return self.linear(-x)

    with pytest.warns(torch.jit.TracerWarning):
        report = lipaudit.audit(DataDependent(), example_inputs=torch.ones(1, 8))
    assert report.model.format == "torchscript" and report.network.upper_bound is not None


def test_an_onnx_proto_gives_the_figure_of_its_file() -> None:
    from_file = lipaudit.audit(SAMPLES / "cnn.onnx", bound="product")
    from_proto = lipaudit.audit(onnx.load(str(SAMPLES / "cnn.onnx")), bound="product")
    assert from_proto.network.upper_bound == from_file.network.upper_bound
    assert from_proto.model.path.startswith("<onnx.ModelProto")


def test_options_gate_as_the_command_does() -> None:
    report = lipaudit.audit(SAMPLES / "mlp.onnx", input_shape="x=1x16", max_lipschitz=8.0)
    assert report.threshold.passed is False and report.exit_code() == 1
    tolerant = lipaudit.audit(
        SAMPLES / "mlp.onnx", input_shape=["x=1x16"], max_lipschitz=8.0, rtol=0.1, max_layer_factor={"fc2": 2.0}
    )
    assert [violation.name for violation in tolerant.threshold.layers or []] == ["fc2"]
    assert tolerant.threshold.rtol == 0.1 and tolerant.threshold.passed is False


def test_workers_run_the_layers_in_worker_processes() -> None:
    serial = lipaudit.audit(SAMPLES / "mlp.onnx", input_shape="x=1x16")
    parallel = lipaudit.audit(SAMPLES / "mlp.onnx", input_shape="x=1x16", workers=2)
    assert parallel.network.upper_bound == serial.network.upper_bound
    assert [layer.factor for layer in parallel.layers] == [layer.factor for layer in serial.layers]


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (SAMPLES / "cnn.onnx", {"method": "fastest"}, "unknown method"),
        (SAMPLES / "cnn.onnx", {"max_lipschitz": float("nan")}, "not nan"),
        (SAMPLES / "cnn.onnx", {"rtol": -1.0}, "rtol"),
        (SAMPLES / "cnn.onnx", {"workers": 0}, "workers"),
        (SAMPLES / "cnn.onnx", {"in_memory_limit": "lots"}, "not a size"),
        (SAMPLES / "cnn.onnx", {"example_inputs": torch.ones(1)}, "example_inputs is for"),
        (SAMPLES / "mlp.onnx", {}, "dynamic"),
        (SAMPLES / "missing.onnx", {}, "no such file"),
        ("not a model", {"bound": "sum"}, "bound"),
        (small_net(), {}, "needs example_inputs"),
        (42, {}, "cannot audit a int"),
    ],
)
def test_bad_arguments_raise_the_command_s_errors(model, options: dict, message: str) -> None:
    with pytest.raises(LipauditError, match=re.escape(message)):
        lipaudit.audit(model, **options)


def test_assert_lipschitz_passes_and_fails_with_the_verdict() -> None:
    net = small_net()
    report = assert_lipschitz(net, example_inputs=torch.randn(1, 8), max_lipschitz=100.0)
    assert report.threshold.passed is True
    with pytest.raises(AssertionError, match=r"FAILED  bound .* > 0\.0100"):
        assert_lipschitz(net, example_inputs=torch.randn(1, 8), max_lipschitz=0.01)
    with pytest.raises(AssertionError, match="UNBOUNDED"):
        assert_lipschitz(SAMPLES / "unbounded.onnx", max_lipschitz=10.0)


def test_the_readme_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})


def test_import_lipaudit_stays_light() -> None:
    assert lipaudit.__version__ and callable(lipaudit.audit) and lipaudit.Report is Report
    with pytest.raises(AttributeError):
        _ = lipaudit.no_such_name
    assert UsageError.__mro__[1] is LipauditError
