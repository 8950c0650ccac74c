"""Keep freed memory in the process for reuse (glibc malloc tuning).

By default glibc serves allocations above a dynamic threshold (at most 32 MiB) with fresh
``mmap`` pages and hands freed heap memory back to the OS. A simulator round allocates and frees
tens of megabytes of client updates every round, so each round pays page faults again: about a
quarter of a W1 round on a 2-core CPU. Raising the mmap threshold and disabling trimming keeps
that memory in the process, as jemalloc or tcmalloc would. The cost: the process's resident
memory does not shrink after a large round. Linux with glibc only; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2**30  # allocations below 1 GiB come from the (reused) heap
NEVER_TRIM = 2**31 - 1

# The same settings as environment variables, for child processes (read by glibc at start-up).
GLIBC_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
    "MALLOC_TRIM_THRESHOLD_": str(NEVER_TRIM),
}


def keep_freed_memory() -> bool:
    """Tune this process's glibc malloc to reuse freed memory; return whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    )
