"""The heap trimmer: glibc's ``malloc_trim`` on a timer, and nothing where it is off.

Real calls into this machine's C library (glibc), on a real event loop.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.memory import HeapTrimmer

_FRAGMENTED_HEAP = """
import json
from promptcache.sidecar.memory import HeapTrimmer

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))

trimmer = HeapTrimmer(30.0)
# ~40 MB in blocks below glibc's mmap threshold, each pinned in place by a 1 KB object
# after it (over 512 bytes: from malloc too, not Python's small-object arenas): freeing
# the blocks leaves ~40 MB of free pages inside the heap.
blocks, pins = [], []
for i in range(400):
    blocks.append(bytearray(100_000))
    pins.append(bytes([i % 256]) * 1000)
del blocks
before = rss_kb()
released = trimmer.trim()
print(json.dumps({"available": trimmer.available, "released": released,
                  "before": before, "after": rss_kb(), "trims": trimmer.trims}))
"""


def test_freed_heap_pages_go_back_to_the_system() -> None:
    # A fresh process: its heap holds only what the script put there.
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert got["available"] is True  # glibc here
    assert got["released"] is True
    assert got["trims"] == 1
    assert got["after"] < got["before"] - 30_000, got  # most of the 40 MB went back


async def test_it_trims_on_its_interval_until_stopped() -> None:
    trimmer = HeapTrimmer(0.05)
    trimmer.start()
    await asyncio.sleep(0.4)
    trimmer.stop()
    done = trimmer.trims
    assert done >= 3
    await asyncio.sleep(0.2)
    assert trimmer.trims == done
    assert trimmer.seconds > 0


async def test_interval_zero_turns_it_off() -> None:
    trimmer = HeapTrimmer(0)
    assert not trimmer.available
    trimmer.start()
    await asyncio.sleep(0.05)
    assert trimmer.trim() is False
    assert trimmer.trims == 0


def test_the_setting_defaults_to_every_30_seconds() -> None:
    assert SidecarSettings().heap_trim_interval == 30.0
    assert SidecarSettings(heap_trim_interval=0).heap_trim_interval == 0
