"""Local bounds around an input: ``--around NAME=FILE.npy --radius R`` (NAME optional for a model with
one input; several allowed).

The domain is the ℓ∞ box of radius R around the given centre, entry by entry.  The report names
each centre by its hash (sha256 of the array's bytes, shape and dtype), so a figure can be tied to
the input it is local to without shipping the input.  The config's ``around`` (a string, a list
of them or a table ``{NAME = "FILE.npy"}``) and ``radius`` read the same; the Python API also takes
arrays (numpy or torch) in place of files.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError

_HINT = "write --around NAME=FILE.npy --radius R (NAME may be left out for a model with one input)"


@dataclass(frozen=True)
class Centre:
    name: str
    array: np.ndarray  # float64, the input's shape
    digest: str  # sha256 of bytes + shape + dtype, as given


def centre_digest(array: np.ndarray) -> str:
    """sha256 over the array's bytes (C order), its shape and its dtype."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(array.tobytes())
    digest.update(repr(tuple(int(d) for d in array.shape)).encode())
    digest.update(str(array.dtype).encode())
    return digest.hexdigest()


def check_radius(radius: Any) -> float:
    try:
        value = float(radius)
    except (TypeError, ValueError):
        raise UsageError(f"cannot read the radius {radius!r}: it must be a number", hint=_HINT) from None
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"the radius must be a finite number >= 0, got {radius!r}", hint=_HINT)
    return value


def _specs(given: Any) -> list[tuple[str | None, Any]]:
    """(input name or None, a path or an array) for each centre."""
    if given is None:
        return []
    if isinstance(given, Mapping):
        return [(str(name), value) for name, value in given.items()]
    if isinstance(given, (str, os.PathLike)) or hasattr(given, "shape"):
        given = [given]
    out: list[tuple[str | None, Any]] = []
    for spec in given if isinstance(given, Sequence) else [given]:
        if hasattr(spec, "shape"):
            out.append((None, spec))
            continue
        text = os.fspath(spec)
        name, equals, path = text.partition("=")
        out.append((name.strip() or None, path.strip()) if equals else (None, text.strip()))
    return out


def anchor_centres(given: Any, base: os.PathLike[str] | str) -> Any:
    """The config's ``around`` with relative file names read from ``base`` (the config's folder)."""
    if given is None:
        return None
    anchored = []
    for name, value in _specs(given):
        if isinstance(value, str) and not os.path.isabs(value):
            value = os.path.join(os.fspath(base), value)
        anchored.append(value if name is None or not isinstance(value, str) else f"{name}={value}")
    return tuple(anchored) if all(isinstance(v, str) for v in anchored) else given


def check_around(given: Any, radius: Any) -> None:
    """Raise UsageError when ``around``/``radius`` cannot be read (files and names are checked later)."""
    if given is None:
        if radius is not None:
            raise UsageError("--radius needs --around: the centre of the box", hint=_HINT)
        return
    _specs(given)
    if radius is None:
        raise UsageError("--around needs --radius: the ℓ∞ radius of the box around the input", hint=_HINT)
    check_radius(radius)


def _load(value: Any, spec: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if hasattr(value, "shape"):
        return np.asarray(value)
    path = os.fspath(value)
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        raise UsageError(f"the centre file '{path}' of --around {spec} does not exist", hint=_HINT) from None
    except (OSError, ValueError) as error:
        raise UsageError(
            f"cannot read the centre '{path}' of --around {spec}: {error}",
            hint="save it with numpy.save(path, array) as a .npy array of the input's shape",
        ) from None


def load_centres(given: Any, input_names: Sequence[str], shapes: Mapping[str, tuple[int, ...] | None]) -> list[Centre]:
    """The centre of each named input, checked against its shape. Raises UsageError for a name that
    is not an input, a missing name on a model with several inputs, a file that cannot be read, an
    array of another shape or with non-finite entries, and a centre given twice."""
    centres: dict[str, Centre] = {}
    for name, value in _specs(given):
        spec = f"{name}={value}" if name and not hasattr(value, "shape") else str(name or value)
        if hasattr(value, "shape"):
            spec = f"{name or 'the input'} (an array)"
        if name is None:
            if len(input_names) != 1:
                raise UsageError(
                    f"--around {spec} does not say which input it is the centre of",
                    hint=f"name it: --around NAME=FILE.npy, with NAME one of {', '.join(input_names)}",
                )
            name = input_names[0]
        if name not in input_names:
            raise UsageError(
                f"--around {spec} names '{name}', which is not an input of the model",
                hint=f"the inputs are: {', '.join(input_names)}",
            )
        if name in centres:
            raise UsageError(f"--around gives two centres for '{name}'", hint=_HINT)
        array = _load(value, spec)
        shape = shapes.get(name)
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise UsageError(
                f"the centre of '{name}' has shape {tuple(array.shape)}, the input has {tuple(shape)}",
                hint="save an array of the input's shape (batch axis included) with numpy.save",
            )
        if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
            raise UsageError(f"the centre of '{name}' must be finite numbers", hint=_HINT)
        centres[name] = Centre(name, np.asarray(array, dtype=np.float64), centre_digest(array))
    return list(centres.values())


def around_bounds(centres: Sequence[Centre], radius: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each centre's box [c − R, c + R], rounded outwards so it holds every float32 input within R."""
    boxes = {}
    for centre in centres:
        lo, hi = centre.array - radius, centre.array + radius
        boxes[centre.name] = (np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf))
    return boxes


def around_settings(centres: Sequence[Centre], radius: float) -> dict[str, Any]:
    """The report's ``settings.around``: the radius and each centre's hash and shape."""
    return {
        "radius": float(radius),
        "centres": {c.name: {"sha256": c.digest, "shape": [int(d) for d in c.array.shape]} for c in centres},
    }
