"""Process-wide settings for throughput: glibc malloc thresholds and the cyclic garbage collector.

Applied by the ``cdp`` command and by backfill tasks; a library caller's process is left alone.

- **malloc.** Each ledger is decompressed into a fresh ~1 MB buffer by a worker thread. glibc serves
  it from the thread's arena and, by default, trims the arena as soon as the buffer is freed, so the
  next one faults its 256 pages in again: 2.5x the CPU of the same decompression on the main thread
  (measured: 685,000 page faults for 1,000 ledgers, 91,000 with fixed thresholds). One arena for all
  threads: each thread's own arena kept up to the trim threshold of freed memory, and with rows made in
  the fetching threads ``cdp run --datastore`` peaked at 205 MB over 10,000 ledgers (162 MB with one
  arena, at the same speed: the GIL serializes most allocations anyway).
- **Frame stacks.** Since 3.11 a thread's Python frames live in 16 KiB chunks, each mapped when the
  calls cross a chunk's end and unmapped when they return below it: the event loop's depth swings
  across that line per message, 24 maps and unmaps (and 96 zeroed page faults) per ledger received
  over gRPC. ``cdp._arena`` (a C extension, built where a compiler is) keeps freed small blocks for
  reuse.
- **gc.** A ledger's rows are ~1,000 short-lived dicts and strings: the default generation-0
  threshold (700) runs a collection every few ledgers, each traversing whatever the imports left
  alive (stellar-sdk alone is ~50 MB of objects); 8% of a run's CPU. ``freeze`` moves what exists at
  start-up out of the collector's sight and a higher threshold collects less often.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from typing import Final

M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
M_ARENA_MAX: Final = -8
MMAP_THRESHOLD: Final = 8 * 1024 * 1024  # a pubnet ledger is 1-2 MB; a 64-ledger batch stays mmapped
TRIM_THRESHOLD: Final = 32 * 1024 * 1024
GC_THRESHOLDS: Final = (10_000, 20, 50)


def tune_malloc() -> bool:
    """Fixed malloc thresholds (call before threads start) and the arena block cache where it is built;
    False where the C library is not glibc."""
    try:
        from cdp import _arena
    except ImportError:  # built without a C compiler
        pass
    else:
        _arena.install()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1))
    return all([bool(mallopt(option, value)) for option, value in settings])  # each set, whatever failed


def tune_gc() -> None:
    """Freeze what is alive now (call once the modules are loaded) and collect less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
