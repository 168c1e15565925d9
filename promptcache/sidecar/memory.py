"""Handing the C heap's free pages back to the system, every so often.

Each call passes ~28 KB bodies, their parsed texts and orjson's buffers through the C
allocator (Python objects over 512 bytes come from ``malloc``). Under steady load glibc
keeps the pages they freed, so the sidecar's RSS creeps up though nothing is retained: a
5-minute soak (75 streaming users) measured +6.7 MB of growth after warm-up, with
``tracemalloc`` showing no growth of Python's own allocations. glibc's ``malloc_trim(0)``
gives every wholly free page back (``madvise``, also in the middle of the heap); called
every 30 s (the default) in the same soak the growth was +5.2 MB, every 20 s +3.1 MB
(``docs/soak.md`` has the runs and the command). One call takes well under a
millisecond here, on the event loop, between requests.

glibc only: where the C library has no ``malloc_trim`` (musl, macOS) nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the running process, or ``None`` where there is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` every ``interval`` seconds on the running loop."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.trims = 0
        """Calls made so far."""
        self.seconds = 0.0
        """Time they took, in all."""
        self._trim = _malloc_trim() if interval > 0 else None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def available(self) -> bool:
        """Whether it runs at all (a positive interval, and glibc)."""
        return self._trim is not None

    def start(self) -> None:
        if self._trim is None:
            if self.interval > 0:
                log.debug("no malloc_trim in this C library: heap trimming off")
            return
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def trim(self) -> bool:
        """One trim now; whether memory went back to the system."""
        if self._trim is None:
            return False
        started = time.perf_counter()
        released = self._trim(0) == 1
        self.seconds += time.perf_counter() - started
        self.trims += 1
        return released

    def _tick(self) -> None:
        self.trim()
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)
