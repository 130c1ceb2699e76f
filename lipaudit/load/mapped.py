"""Weights left on disk: a constant whose bytes stay in the model's external data file until read.

A model larger than memory is read with its external data memory-mapped: each weight is a numpy
array over a shared read-only mapping of its file, so loading reads no weight, and the IR keeps its
plain-ndarray constants. Such an array also records where its bytes are (``MappedTensor.slice``),
so a layer task can open the same bytes on its own, for as long as it measures the layer, instead
of having them copied to it, and let them go when it is done.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# numpy reads these ONNX element types straight from the file's bytes (little-endian, as ONNX
# writes them); others (bfloat16, float8, 4-bit) need a conversion and are read into memory.
MAPPABLE_DTYPES = (
    "float32",
    "float64",
    "float16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


@dataclass(frozen=True)
class ExternalSlice:
    """The bytes of one tensor in a file: where they start, their element type and shape."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def open(self) -> np.ndarray:
        """The tensor over a private read-only mapping, unmapped once the array is dropped."""
        dtype = np.dtype(self.dtype).newbyteorder("<")
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self.offset, shape=self.shape)


class MappedTensor(np.ndarray):
    """A read-only array over a file mapping that knows its slice of the file.

    Only the array made by ``mapped_tensor`` carries the slice: views and results computed from it
    are plain about where they come from (``slice`` is None), so a task never reopens bytes that
    are not what the array holds.
    """

    slice: ExternalSlice | None = None

    def __array_finalize__(self, obj) -> None:
        self.slice = None


class FileMappings:
    """One read-only mapping per external data file, shared by all the tensors in it.

    One mapping per file, not per tensor: a model with thousands of tensors would otherwise hold
    thousands of file descriptors.
    """

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}

    def tensor(self, piece: ExternalSlice) -> MappedTensor:
        dtype = np.dtype(piece.dtype).newbyteorder("<")
        count = int(np.prod(piece.shape, dtype=np.int64))
        if count == 0:
            array = np.zeros(piece.shape, dtype=dtype)
        else:
            array = np.frombuffer(self._map(piece.path), dtype=dtype, count=count, offset=piece.offset).reshape(
                piece.shape
            )
        tensor = array.view(MappedTensor)
        tensor.slice = piece
        return tensor

    def _map(self, path: str) -> mmap.mmap:
        if path not in self._maps:
            with open(path, "rb") as handle:
                self._maps[path] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[path]


def slice_of(array: object) -> ExternalSlice | None:
    """The file slice an array is exactly, or None (an in-memory array, or a view of a mapped one)."""
    return array.slice if isinstance(array, MappedTensor) else None


def _mapping_under(array: np.ndarray) -> mmap.mmap | None:
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def release_resident_pages(arrays: Iterable[object]) -> int:
    """Drop from this process the pages of the file mappings under ``arrays`` that reading them made
    resident (a pass that read every weight leaves the whole file mapped in); they are read again
    from the file if needed. Returns how many mappings were released."""
    released: dict[int, mmap.mmap] = {}
    for array in arrays:
        if isinstance(array, MappedTensor):
            mapping = _mapping_under(array)
            if mapping is not None and not mapping.closed:
                released[id(mapping)] = mapping
    advise = getattr(mmap, "MADV_DONTNEED", None)
    for mapping in released.values():
        if advise is not None:
            mapping.madvise(advise)
    return len(released) if advise is not None else 0


def all_finite(piece: ExternalSlice, chunk_bytes: int = 16 * 2**20) -> bool:
    """Whether a float tensor on disk holds no NaN or Inf, read in chunks (never all of it at once)."""
    dtype = np.dtype(piece.dtype).newbyteorder("<")
    if dtype.kind != "f":
        return True
    per_chunk = max(1, chunk_bytes // dtype.itemsize)
    remaining = int(np.prod(piece.shape, dtype=np.int64))
    with Path(piece.path).open("rb") as handle:
        handle.seek(piece.offset)
        while remaining > 0:
            count = min(per_chunk, remaining)
            chunk = np.fromfile(handle, dtype=dtype, count=count)
            if chunk.size != count:
                return False  # truncated: the caller reports it as unreadable before this point
            if not np.isfinite(chunk).all():
                return False
            remaining -= count
    return True
