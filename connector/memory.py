"""Process-wide settings applied at start-up: malloc arenas, thread switching, the collector."""

from __future__ import annotations

import ctypes
import gc
import os
import sys

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: bytes: a block this large is mapped on its own and given back to the system when freed
LARGE_BLOCK = 128 * 1024


def tune_malloc(arenas: int = 2, large_block: int = LARGE_BLOCK) -> list[str]:
    """Keep glibc's heap close to what is held, before worker threads start.

    Returns the settings applied (an environment variable of the same name wins;
    elsewhere than glibc nothing is applied):

    - ``MALLOC_ARENA_MAX``: glibc gives each busy thread its own arena (up to 8 per
      core), and memory freed in one arena is not reused by another: with a pool of
      push threads the resident size then grows with the work done rather than with
      what is held. Two arenas keep it flat at no measurable cost in speed.
    - ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``: by default glibc
      raises its mapping threshold each time a large block is freed, so the pages of
      CRM answers (several MB each) end up inside the heap, where the blocks kept
      around them stop it from shrinking. Fixed at 128 KiB, such blocks are mapped
      and returned when freed: the peak resident size of a 100,000-opportunity
      Dynamics sync went from 150.4 to 144.2 MB (124.0-125.3 MB at 10,000).
    """
    if not sys.platform.startswith("linux"):
        return []
    # each setting with the environment variable glibc reads for it
    settings = (
        ("MALLOC_ARENA_MAX", _M_ARENA_MAX, arenas),
        ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, large_block),
        ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, large_block),
    )
    try:
        libc = ctypes.CDLL("libc.so.6")
        return [
            name
            for name, param, value in settings
            if name not in os.environ and libc.mallopt(param, value)
        ]
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return []


#: seconds a thread may hold the GIL while another waits (CPython's default is 0.005)
SWITCH_INTERVAL_S = 0.001


def quicken_thread_switches(interval_s: float = SWITCH_INTERVAL_S) -> float:
    """Let a waiting thread take the GIL sooner; returns the interval now in force.

    The push pool's threads spend most of their time waiting for the core; when a
    response arrives, its thread needs the GIL, which the main thread (mapping the next
    page, mirroring the last) may hold for up to the switch interval. Every such wait
    adds to the request's latency and so to the whole pool's. With 1 ms instead of
    CPython's 5 ms the first sync measured about 1.5 % faster (benchmarks/pipeline.py,
    20,000 opportunities, 50 ms latency); the extra switches cost nothing measurable.
    An interval the process already set lower is kept.
    """
    if sys.getswitchinterval() > interval_s:
        sys.setswitchinterval(interval_s)
    return sys.getswitchinterval()


def settle_heap() -> int:
    """Keep the cyclic garbage collector's full collections short once start-up is over.

    Freezes what is alive now (modules, classes, settings, clients: about 110,000
    objects after the sync's imports) and returns how many objects are frozen: every
    full collection would otherwise walk them again. A full collection holds the GIL
    throughout, so the whole push pool stands still meanwhile: a first sync of 20,000
    Salesforce opportunities (benchmarks/pipeline.py) made 19 of them, about 130 ms
    each; with the start-up objects frozen, 22 of about 55 ms.

    The thresholds stay CPython's: collecting the youngest generation every 10,000
    allocations instead of 700 left 4 full collections, but garbage held in reference
    cycles (CRM pages among it) lived longer: a 100,000-row Dynamics sync peaked at
    151.9 MB instead of 143.2; collecting the oldest generation ten times less often,
    at 170.5 MB.

    Calling it again first unfreezes what an earlier call froze, so an object frozen
    then and dropped since is collected like any other (nothing leaks).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
