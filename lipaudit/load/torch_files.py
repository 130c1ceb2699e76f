"""Tell the zip archives torch writes apart, and refuse the ones that hold no graph.

``torch.jit.save`` writes ``<name>/code/…`` and ``<name>/constants.pkl``; ``torch.export.save``
writes ``<name>/archive_format`` and ``<name>/models/*.json``; ``torch.save`` writes
``<name>/data.pkl`` only. A ``torch.save`` file is opened with ``weights_only=True`` just to say what
it holds, and refused either way: a state_dict has no graph, and a pickled module would need
arbitrary code to be run to rebuild it.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelLoadError

TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch.export"
TORCH_SAVE = "torch.save"

EXPORT_HINT = (
    "save a graph instead: torch.jit.save(torch.jit.trace(model, example), 'model.pt'), "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2') or torch.onnx.export"
)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Keep torch's deprecation and tracer warnings (torch.jit is deprecated) off the user's terminal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def archive_members(data: bytes, path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise ModelLoadError(
            f"{path} is a damaged zip archive ({error})",
            hint="the file may be truncated; save or export the model again",
        ) from error


def archive_kind(members: list[str]) -> str | None:
    """TORCHSCRIPT, TORCH_EXPORT, TORCH_SAVE, or None for a zip torch did not write."""
    tails = {name.split("/", 1)[1] if "/" in name else name for name in members}
    if "archive_format" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
        return TORCH_EXPORT
    if any(t.startswith("code/") for t in tails) and ("constants.pkl" in tails or "data.pkl" in tails):
        return TORCHSCRIPT
    if "data.pkl" in tails:
        return TORCH_SAVE
    return None


def refuse_torch_save(data: bytes, path: Path) -> None:
    """Raise the error that says what a ``torch.save`` file holds and how to export a graph instead."""
    try:
        with quiet_torch():
            import torch

            content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelLoadError(
            f"{path} is a pickled Python object from torch.save (such as a whole nn.Module); lipaudit never "
            "unpickles arbitrary objects, and a pickle holds no graph",
            hint=EXPORT_HINT,
        ) from error
    except Exception as error:  # torch raises RuntimeError and friends for damaged archives
        raise ModelLoadError(
            f"{path} is a damaged torch.save archive ({type(error).__name__})",
            hint="the file may be truncated; " + EXPORT_HINT,
        ) from error
    what = "a state_dict (weights only)" if isinstance(content, dict) else f"a {type(content).__name__}"
    raise ModelLoadError(
        f"{path} is {what} from torch.save: it has no graph, so the network's structure is unknown", hint=EXPORT_HINT
    )
