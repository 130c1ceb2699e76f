"""Write a report so that readers never see half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it.

    The file gets the mode an ordinary ``open(path, "w")`` would give (0666 less the umask, so
    0644 under the usual 022), not the 0600 of the temporary file: a report is meant to be read."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` (created with the ordinary mode): for files other steps also write,
    such as GitHub's $GITHUB_STEP_SUMMARY."""
    path = Path(path)
    if str(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        if handle.tell() > 0:
            handle.write("\n")  # a blank line: what was there before stays a block of its own
        handle.write(text)
