"""How late the sidecar's event loop runs its callbacks: a cheap health signal under load.

Every byte the sidecar relays waits for the loop, so a loop that runs late (a long
synchronous step, a garbage collection, a starved CPU) delays every call at once. A timer
asks to wake ``interval`` seconds from now and records how much later it really woke:
four wake-ups a second, one ``loop.time()`` pair and one histogram observation each, so
it costs nothing a call would notice. Exported as
``promptcache_event_loop_lag_seconds`` (histogram); the soak (``promptcache.demo.soak``)
reads its p99.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds; a healthy loop sits in the first bucket or two."""
DEFAULT_INTERVAL = 0.25
"""Seconds between two measurements."""


class LoopLag:
    """The lag histogram and the task that feeds it."""

    def __init__(self, registry: CollectorRegistry, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self.histogram = Histogram(
            "promptcache_event_loop_lag_seconds",
            "How much later than asked the sidecar's event loop woke a periodic timer.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        interval = self.interval
        observe = self.histogram.observe
        while True:
            asked = loop.time() + interval
            await asyncio.sleep(interval)
            observe(max(0.0, loop.time() - asked))
