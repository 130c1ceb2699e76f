"""Pick a loader by the file's content, not only its suffix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..ir import Graph
from .probe import ProbeUnavailable, RuntimeProbe, apply_runtime_shapes, probe_onnx, probe_onnx_by_node
from .sniff import sniff_format

if TYPE_CHECKING:
    from ..passes import PassManager


@dataclass
class LoadedModel:
    """A model read into the IR, with what it was read from.

    ``source`` is the format's own object (the ``onnx.ModelProto`` with the input shapes fixed, or
    the loaded torch module). ``probe`` is one run of that model's own runtime, every intermediate
    value kept: its shapes are already the IR's, and its values are what the IR is verified against;
    ``probe_missing`` says why there is none.
    """

    graph: Graph
    path: Path
    format: str
    sha256: str
    source: Any = None
    probe: RuntimeProbe | None = None
    probe_missing: str = ""
    notices: list[str] = field(default_factory=list)


def load_time_passes() -> PassManager:
    """What every loader's graph goes through: schema defaults, constants folded away, and the
    taken branch of each If whose condition became a constant inlined (which may fold further;
    inlining decodes the branch's ONNX, so that pass lives here, with the ONNX reader)."""
    from ..passes import FillDefaultAttributes, FoldConstants, PassManager, RemoveUnused
    from .inline_if import InlineConstantIf

    return PassManager([FillDefaultAttributes(), FoldConstants(), InlineConstantIf(), RemoveUnused()])


def load_model(
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    *,
    seed: int = 0,
    probe: bool = True,
    map_external_data: bool = False,
) -> LoadedModel:
    """Read a model into the IR: shapes from one run of its runtime (``probe``, fed seeded random
    inputs), then schema defaults filled in, constants folded and constant Ifs inlined.

    ``map_external_data``: leave an ONNX model's external data on disk, memory-mapped (a model
    larger than memory); it is then probed one node at a time.
    """
    loaded = _read_model(Path(path), input_shapes or {}, seed, map_external_data)
    if loaded.format == "onnx":
        try:
            if not probe:
                raise ProbeUnavailable("the model was not run")
            # Weights left on disk are read one node at a time: the runtime never holds them all.
            run = probe_onnx_by_node if map_external_data else probe_onnx
            loaded.probe = run(loaded.source, loaded.graph, seed)
        except ProbeUnavailable as why:
            loaded.probe_missing = str(why)
            loaded.notices.append(f"shapes are ONNX inference's, not confirmed by a runtime: {why}")
    if loaded.probe is not None:
        loaded.notices += apply_runtime_shapes(loaded.graph, loaded.probe)
    types = loaded.graph.metadata.get("elem_types") or {}
    for name, spacing in sorted(
        {_NARROW_FLOATS[t] for i in loaded.graph.inputs if (t := types.get(i)) in _NARROW_FLOATS}
    ):
        loaded.notices.append(
            f"the model computes in {name}: its runtime rounds every value by up to {spacing} of its size, so "
            "inputs a few such steps apart can show larger ratios; the bound is that of the function in real "
            "arithmetic, with the model's own weights"
        )
    defaults = loaded.graph.metadata.get("inputs_with_defaults") or []
    if defaults:
        names = ", ".join(f"'{name}'" for name in defaults)
        which = f"input {names} has a default value" if len(defaults) == 1 else f"inputs {names} have default values"
        loaded.notices.append(
            f"graph {which} (an initializer): read as that constant, so the bound is over the other inputs "
            "with it fixed"
        )
    load_time_passes().run(loaded.graph)
    return loaded


_NARROW_FLOATS = {10: ("float16", "2⁻¹¹"), 16: ("bfloat16", "2⁻⁸")}  # TensorProto types: name, rounding


def _read_model(path: Path, shapes: dict[str, tuple[int, ...]], seed: int, map_external_data: bool) -> LoadedModel:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file", hint="check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory", hint="pass the model file itself")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error.strerror}", hint="check the file's permissions") from error
    kind = sniff_format(data)
    digest = hashlib.sha256(data).hexdigest()
    if kind == "onnx":
        from .onnx import load_onnx

        graph, proto = load_onnx(data, path, shapes, map_external_data=map_external_data)
        return LoadedModel(graph, path, "onnx", digest, source=proto)
    if kind == "empty":
        raise ModelLoadError(f"{path} is empty", hint="the export may have failed; export the model again")
    if kind == "zip":
        return _load_torch_archive(data, path, digest, shapes, seed)
    if kind == "pickle":
        raise ModelLoadError(
            f"{path} is a Python pickle (torch.save); lipaudit never unpickles files",
            hint="export a graph: torch.onnx.export, torch.jit.save or torch.export.save",
        )
    raise ModelLoadError(
        f"{path} is not a model file lipaudit recognises",
        hint="pass an ONNX model (.onnx), a TorchScript file (.pt) or a torch.export archive (.pt2)",
    )


def _load_torch_archive(
    data: bytes, path: Path, digest: str, shapes: dict[str, tuple[int, ...]], seed: int
) -> LoadedModel:
    """TorchScript and torch.export archives; torch.save zips are refused with what they hold."""
    from .torch_files import TORCH_EXPORT, TORCH_SAVE, TORCHSCRIPT, archive_kind, archive_members, refuse_torch_save

    members = archive_members(data, path)
    kind = archive_kind(members)
    if kind == TORCHSCRIPT:
        from .torchscript import load_torchscript

        traced = any(name.endswith("/traced_inputs.pkl") for name in members)
        graph, module, probe = load_torchscript(data, path, shapes, traced_inputs=traced, seed=seed)
        return LoadedModel(graph, path, "torchscript", digest, source=module, probe=probe)
    if kind == TORCH_EXPORT:
        from .torch_export import load_torch_export

        graph, module, probe = load_torch_export(data, path, shapes, seed=seed)
        return LoadedModel(graph, path, "torch.export", digest, source=module, probe=probe)
    if kind == TORCH_SAVE:
        refuse_torch_save(data, path)
    raise ModelLoadError(
        f"{path} is a zip archive, but not one written by torch.jit.save, torch.export.save or torch.save",
        hint="pass an ONNX, TorchScript or torch.export file",
    )
