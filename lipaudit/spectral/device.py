"""Choosing the torch device the spectral kernels run on, and how many CPU threads small work gets."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

_CUDA_NAME = re.compile(r"cuda(?::(\d+))?")


def resolve_device(requested: str) -> tuple[torch.device, str | None]:
    """Turn 'auto' | 'cpu' | 'cuda' | 'cuda:N' into a device, plus a notice when we fell back.

    A missing GPU is not an error: the bound is the same on the CPU, only slower, so we say so
    and carry on.  A name we do not know is a usage error (ValueError).
    """
    name = str(requested).strip().lower()
    if name == "auto":
        return (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")), None
    if name == "cpu":
        return torch.device("cpu"), None
    match = _CUDA_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        return torch.device("cpu"), "CUDA is not available; using the CPU"
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        return torch.device("cuda:0"), f"CUDA device {index} does not exist ({count} found); using cuda:0"
    return torch.device(f"cuda:{index}"), None


@contextlib.contextmanager
def exact_cuda_math(device: torch.device) -> Iterator[None]:
    """Turn TF32 off while we compute on a GPU.

    TF32 makes float32 matmuls and convolutions ~1e-3 off on recent GPUs, which no rounding margin
    of ours covers.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def cores_are_shared() -> bool:
    """Whether other processes keep the CPU busy: the 1-minute load average is at least one more
    than the cores (our own threads count in it too).  False where the OS does not say."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    return load >= (os.cpu_count() or 1) + 1


@contextlib.contextmanager
def one_thread(small: bool = True) -> Iterator[None]:
    """Run a stretch of tensor operations on one CPU thread when the work is ``small`` or when the
    cores are shared with other processes (cores_are_shared).

    Small operations gain nothing from a second thread, and when other processes share the cores
    every parallel operation waits for a descheduled thread: on a loaded 2-core machine, 80
    Lanczos steps on a 3-channel 32×32 convolution took 4–12 s on two threads and 0.17 s on one,
    and LAPACK's eigensolver on 32 matrices of side 256 up to 8 s against 0.2 s.  The thread count
    is restored afterwards.
    """
    saved = torch.get_num_threads()
    if saved == 1 or not (small or cores_are_shared()):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
