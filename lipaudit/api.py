"""The Python API: ``lipaudit.audit(model, ...) -> Report``, the same audit as ``lipaudit check``.

``model`` is a model file (ONNX, TorchScript ``.pt``, torch.export ``.pt2``), an ``onnx.ModelProto``,
or a ``torch.nn.Module`` with ``example_inputs``: the module is exported through ``torch.export``
(TorchScript tracing where export fails) into a temporary file that the usual loader reads, in eval
mode (its training flag is restored after). Every option of ``lipaudit check`` is a keyword with the
same default, checked the same way: a bad value raises the ``LipauditError`` the command would
print (``UsageError``, ``ModelLoadError``, ``InputShapeError``, ``VerificationError``…).

The gate is applied as the command applies it: ``report.threshold.passed`` says whether the bound
is within ``max_lipschitz``·(1 + ``rtol``) and every layer within its ``max_layer_factor``, and
``report.exit_code(allow_incomplete)`` is the code the command would exit with. Unlike the command,
no ``pyproject.toml`` is read unless ``config`` names one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings, _normalise, branch_violations, layer_violations, load_settings
from .errors import LipauditError, ModelLoadError, UsageError
from .options import DEFAULT_SAMPLES, DEFAULT_STEPS
from .report import Report, within

if TYPE_CHECKING:
    import onnx
    import torch


def apply_gate(report: Report, settings: Settings) -> None:
    """Fill ``report.threshold`` from ``settings``: the network bound against max_lipschitz·(1 + rtol),
    each layer against its max_layer_factor, each residual branch against max_branch_lipschitz."""
    threshold = report.threshold
    threshold.rtol = settings.rtol
    threshold.max_lipschitz = settings.max_lipschitz
    if settings.max_lipschitz is not None and report.upper_bound is not None:
        threshold.passed = within(report.upper_bound, settings.max_lipschitz, settings.rtol)
    violations = layer_violations(report.layers, settings)
    if violations:
        threshold.layers = violations
        threshold.passed = False
    if settings.max_branch_lipschitz is not None:
        threshold.max_branch_lipschitz = settings.max_branch_lipschitz
        branches = branch_violations(report.network.branches, settings)
        if branches:
            threshold.branches = branches
            threshold.passed = False
        elif threshold.passed is None and report.upper_bound is not None:
            threshold.passed = True


def audit(
    model: str | os.PathLike[str] | onnx.ModelProto | torch.nn.Module,
    *,
    example_inputs: Any = None,
    input_shape: str | Sequence[str] | None = None,
    max_lipschitz: float | None = None,
    rtol: float | None = None,
    max_layer_factor: float | Mapping[str, float] | None = None,
    max_branch_lipschitz: float | None = None,
    bound: str | None = None,
    method: str | None = None,
    device: str | None = None,
    verify: bool | None = None,
    lower_bound: bool = False,
    lower_bound_time: float | str | None = None,
    recursion_budget: float | str | None = None,
    recursion_time: float | str | None = None,
    input_range: str | Sequence[str] | Mapping[str, Any] | None = None,
    around: Any = None,
    radius: float | None = None,
    seed: int = 0,
    samples: int = DEFAULT_SAMPLES,
    steps: int = DEFAULT_STEPS,
    workers: int | None = None,
    ray: bool | str | None = None,
    in_memory_limit: int | str | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Report:
    """Audit ``model`` and return its typed report; ``report.network.upper_bound`` is the figure.

    ``example_inputs``: for an ``nn.Module``, a tensor or a tuple of tensors it is exported with.
    ``input_shape``: ``"x=1x3x32x32"`` or a list of them, for inputs with dynamic dimensions.
    ``max_lipschitz``, ``rtol``, ``max_layer_factor``, ``max_branch_lipschitz``: the gate (see
    ``report.threshold``). ``bound``: "recursion" (default) or "product". ``method``: auto, exact, gram,
    power or frobenius. ``device``: auto, cpu or cuda. ``verify``: compare with the model's runtime
    first (None: under 50M parameters). ``lower_bound``: also search an empirical lower bound
    (``samples``, ``steps``, ``seed``, ``lower_bound_time``). ``recursion_budget``: the recursion's
    work in multiples of the layers' norms' work ("inf": no limit). ``recursion_time``: an opt-in time
    limit for the recursion (the report then says the figure is not reproducible).
    ``input_range``: a local bound on that box ("0:1"). ``around`` and ``radius``: a local bound on the
    ℓ∞ box of that radius around an input (a .npy path, "NAME=FILE.npy", an array, or a dict of them by
    input name). ``workers``/``ray``: measure the layers in N
    worker processes or on Ray. ``in_memory_limit``: external data above it stays on disk ("2GiB").
    ``config``: a pyproject.toml whose [tool.lipaudit] table gives defaults that these keywords
    override. The command's ``--allow-incomplete`` is ``report.exit_code(allow_incomplete=True)``.
    """
    given = {
        "input_shape": [input_shape] if isinstance(input_shape, str) else input_shape,
        "max_lipschitz": max_lipschitz,
        "rtol": rtol,
        "max_layer_factor": max_layer_factor,
        "max_branch_lipschitz": max_branch_lipschitz,
        "bound": bound,
        "method": method,
        "device": device,
        "lower_bound_time": lower_bound_time,
        "recursion_budget": recursion_budget,
        "recursion_time": recursion_time,
        "input_range": input_range,
        "around": around,
        "radius": radius,
        "workers": workers,
        "ray": ray,
        "in_memory_limit": in_memory_limit,
    }
    if isinstance(given["input_shape"], tuple):
        given["input_shape"] = list(given["input_shape"])
    flags = _normalise({key: value for key, value in given.items() if value is not None}, "lipaudit.audit()")
    with _model_file(model, example_inputs) as (path, shown_as):
        settings = replace(load_settings(Path(config) if config is not None else None, Path(path)), **flags)
        report = _run(path, settings, verify=verify, lower_bound=lower_bound, seed=seed, samples=samples, steps=steps)
    if shown_as:
        report.model.path = shown_as
    apply_gate(report, settings)
    return report


def _run(path: str, settings: Settings, **given_only_by_keywords: Any) -> Report:
    from .parallel import open_executor
    from .pipeline import audit as run_audit

    options = settings.audit_options(**given_only_by_keywords)
    executor = open_executor(settings.workers, settings.ray)
    if executor is None:
        return run_audit(path, options)
    from .parallel.jobs import KERNEL_THREADS, torch_threads

    # Single-threaded torch here too, as in the workers (and as `check --workers` runs).
    with executor, torch_threads(KERNEL_THREADS):
        return run_audit(path, options, executor=executor)


@contextlib.contextmanager
def _model_file(model: Any, example_inputs: Any) -> Iterator[tuple[str, str]]:
    """(a file the loader reads, the name the report shows: '' for a file given by path)."""
    if isinstance(model, (str, os.PathLike)):
        if example_inputs is not None:
            raise UsageError(
                "example_inputs is for a torch.nn.Module; a model file has its own inputs",
                hint="give input_shape for a file whose inputs have dynamic dimensions",
            )
        yield os.fspath(model), ""
        return
    with tempfile.TemporaryDirectory(prefix="lipaudit-") as folder:
        kind = type(model).__module__.split(".")[0]
        if kind == "onnx":
            yield _save_onnx(model, Path(folder)), f"<onnx.ModelProto {model.graph.name or 'graph'}>"
        elif kind == "torch" or _is_module(model):
            yield _save_module(model, example_inputs, Path(folder)), f"<torch.nn.Module {type(model).__name__}>"
        else:
            raise UsageError(
                f"cannot audit a {type(model).__name__}",
                hint="pass a model file path, an onnx.ModelProto or a torch.nn.Module with example_inputs",
            )


def _is_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def _save_onnx(model: Any, folder: Path) -> str:
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise UsageError(f"cannot audit a {type(model).__name__}", hint="pass an onnx.ModelProto")
    path = folder / "model.onnx"
    # Over protobuf's 2 GB the weights must go to a file of their own.
    large = model.ByteSize() > 2**31 - 2**20
    onnx.save_model(model, str(path), save_as_external_data=large, location="model.onnx.data" if large else None)
    return str(path)


def _save_module(module: Any, example_inputs: Any, folder: Path) -> str:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"cannot audit a {type(module).__name__}", hint="pass a torch.nn.Module")
    if example_inputs is None:
        raise UsageError(
            "a torch.nn.Module needs example_inputs",
            hint="e.g. lipaudit.audit(net, example_inputs=torch.randn(1, 3, 32, 32))",
        )
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not all(isinstance(item, torch.Tensor) for item in inputs):
        raise UsageError("example_inputs must be a tensor or a tuple of tensors")
    training = module.training
    module.eval()
    try:
        try:
            program = torch.export.export(module, inputs)
            path = folder / "model.pt2"
            torch.export.save(program, str(path))
            return str(path)
        except Exception as export_error:  # torch.export refuses many modules: TorchScript may still trace them
            try:
                with torch.no_grad():
                    traced = torch.jit.trace(module, inputs)
                path = folder / "model.pt"
                torch.jit.save(traced, str(path))
                return str(path)
            except Exception as trace_error:
                raise ModelLoadError(
                    f"cannot export the module: torch.export: {_first(export_error)}; "
                    f"TorchScript tracing: {_first(trace_error)}",
                    hint="export it to ONNX yourself and pass the file",
                ) from None
    finally:
        module.train(training)


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["LipauditError", "Report", "apply_gate", "audit"]
