"""Keep large freed CPU buffers inside the process (glibc), so each step does not page-fault them back in.

PyTorch's CPU allocator takes big tensors straight from ``malloc``. glibc serves requests above its mmap
threshold (adjusted dynamically, but never past 32 MB) with fresh ``mmap`` calls and unmaps them on free, so a
step whose activations exceed 32 MB (the reference scan's [L, B, D, N] states at batch 128) faults every page
of them in again, every time. Raising the mmap and trim thresholds keeps freed memory for reuse: a batch-128
MQAR step of a tiny hybrid row went from 4.65-4.91 s to 2.03-2.07 s on the 2-core CI box
(``benchmarks/results/2026-11-29-h200-session3.md``). The command line and its worker processes call
:func:`keep_freed_memory`; importing ``hymba`` changes nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("hymba.malloc")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
THRESHOLD = 1 << 30  # allocations up to 1 GiB come from (and return to) the heap


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where that is not possible (not
    Linux/glibc), which only costs speed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2 * THRESHOLD - 1) == 1
    except (OSError, AttributeError):  # musl or another libc without mallopt
        ok = False
    log.debug("glibc mmap/trim thresholds %s", "raised" if ok else "unchanged (no glibc mallopt)")
    return ok
