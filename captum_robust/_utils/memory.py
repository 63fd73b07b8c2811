"""Handing freed host memory back to the system between passes of a long loop."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

import torch

__all__ = ["release_freed_host_memory"]


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only (not musl)
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_host_memory(device: torch.device) -> bool:
    """Return the free pages of glibc's heaps to the system (``malloc_trim(0)``).

    A loop of passes that each allocate and free a few hundred MiB of CPU tensors
    fragments glibc's heaps: pages freed inside a heap stay resident, so the
    peak resident set grows with the number of passes although live memory
    does not (resnet18 at 96x96, 8 images, an EnhancedAttributionRegularizer
    step: 323 MiB at 10 path points, 379 MiB at 40; with this call after every
    pass 307 and 318 MiB, for about 5% more time). Does nothing for tensors on
    other devices or where the C library has no ``malloc_trim``.

    Returns whether memory was trimmed.
    """
    if device.type != "cpu" or _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
