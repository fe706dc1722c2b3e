"""Keep freed CPU memory in the process instead of handing it back to the OS (glibc only).

IHA's tensors on the interleaved sequence are P times longer than MHA's: at N=2048, P=4, H=8,
d=64 each is 16 MiB. glibc serves allocations that large with fresh ``mmap`` pages (or trims
them off the heap's top when freed), so every training step pays a page fault per 4 KiB of every
such tensor, and the kernel zero-fills each page; MHA's smaller tensors mostly avoid this. In
the window benchmark (docs/benchmarks.md) an IHA step took 3,000-10,000 such faults, and keeping
freed memory cut them to 1,200-1,700 and the step's time by about 3%.

:func:`keep_freed_memory` raises glibc's mmap and trim thresholds (``mallopt``) so that freed
blocks stay in the heap and are reused by the next step, as PyTorch's CUDA caching allocator
does on the GPU and as the jemalloc/tcmalloc preloads of PyTorch's CPU tuning guides do. The cost
is that the process's resident memory stays at its peak. It affects the whole process, so it is
opt-in: ``iha bench --keep-freed-memory`` and ``iha train --keep-freed-memory`` call it; library
code never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from iha.validate import check_int

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's own dynamic mmap threshold stops at 32 MiB; an explicit mallopt may set any int.
DEFAULT_THRESHOLD = 1 << 30


def keep_freed_memory(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve allocations up to ``threshold`` bytes from the heap and keep up to ``threshold``
    free bytes at its top. Returns True when glibc accepted both settings, False where there is
    no glibc (macOS, musl, Windows): then nothing changed."""
    check_int("threshold", threshold, 1)
    if threshold >= 2**31:
        raise ValueError(f"threshold={threshold!r} must be an int < 2**31 (mallopt takes a C int)")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, threshold) == 1
