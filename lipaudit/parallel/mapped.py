"""Memory-mapped weights moved to ``lipaudit.load.mapped`` (the loader reads them, beneath the
executors); this name stays for callers of the old path."""

from ..load.mapped import (
    MAPPABLE_DTYPES,
    ExternalSlice,
    FileMappings,
    MappedTensor,
    all_finite,
    release_resident_pages,
    slice_of,
)

__all__ = [
    "MAPPABLE_DTYPES",
    "ExternalSlice",
    "FileMappings",
    "MappedTensor",
    "all_finite",
    "release_resident_pages",
    "slice_of",
]
