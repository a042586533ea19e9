"""Fewer malloc arenas: glibc gives threads that allocate at once arenas of their own (up to 8 per
core), and memory freed into one arena is not reused by threads on another, so with a capture, a
camera and a publisher thread per camera the resident memory grows with the cameras. Two arenas
serve the daemon: four cameras take 278 MB instead of 297 MB (``python benchmarks/memory.py``)."""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False where nothing was changed
    (``MALLOC_ARENA_MAX`` set by the operator, which glibc has already applied, or not glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, no per-thread arenas to cap
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
