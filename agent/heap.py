"""The C heap of the running agent: memory freed by the agent goes back to the operating system.

Part of the shell. CPython hands every object over 512 bytes, and numpy the data of every array,
to the C library's ``malloc``. glibc keeps what is freed for reuse, and two of its habits made
the running agent's resident memory grow well past what it holds (at 100,000 tags: 370 MB of
heap taken from the system, 213 MB of it in use):

* its threshold above which a block gets a mapping of its own (given back whole when freed)
  rises to the largest block freed so far, up to 32 MB: after the first telemetry snapshot
  (several MB of JSON) every such block is cut from the heap instead, and the holes left
  between blocks still in use stay resident;
* each thread that allocates gets an arena of its own (the history writer, the uplink, the
  telemetry encoder), which keeps its high-water mark.

``configure`` fixes both thresholds (a block of 512 KiB or more is mapped on its own: above the
256 KiB buffer asyncio reads a socket into, which would otherwise cost a mapping per read; the
top of a heap is given back above 1 MiB free), and ``trim`` hands the free pages inside every arena
back (``malloc_trim``): after start-up, and once a minute from the outbox housekeeping. Other C
libraries (musl, macOS) are left as they are: both are then no-ops that return False.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import cache

log = logging.getLogger("plantwatch.agent")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 512 * 1024  # no longer raised by what is freed
TRIM_THRESHOLD = 1024 * 1024


@cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it alone has ``gnu_get_libc_version``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - the probe: AttributeError elsewhere
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """The heap can be tuned and trimmed here (glibc)."""
    return _glibc() is not None


def configure() -> bool:
    """Fixed thresholds for mapping a block on its own and for giving a heap's top back."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    if not ok:
        log.warning("heap: glibc refused the malloc thresholds; freed memory may stay resident")
    return ok


def trim() -> bool:
    """Give the free pages of every arena back to the system; True when some were."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1
