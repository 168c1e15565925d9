"""The per-call metrics, kept as plain numbers and turned into Prometheus samples on scrape.

Every proxied call updates about ten series (outcome, three token kinds, output, two
costs, three histograms). Through ``prometheus_client``'s metric objects that is ten
lock-guarded updates behind several layers of calls, ~25 us per call on the benchmark
machine; here it is a few dictionary and list operations. Everything runs on the event
loop (the aiohttp ``/metrics`` handler included), so no lock is needed. ``collect``
exposes the same names, types and labels the metric objects would.

Counting a call is not needed to answer it, so it waits in a ``Backlog`` until the loop
has nothing better to do (see ``Backlog``); every ``collect`` runs the backlog first,
so what a scrape or a test reads is always exact.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_TOKEN_KINDS = ("cache_read", "cache_write", "uncached")
IDLE_DELAY = 0.005
"""Seconds a backlog waits for a better moment before it runs anyway."""


class Backlog:
    """Bookkeeping of answered calls, run off the path of the next call's request and answer.

    On a keep-alive connection the app's next request often arrives while the previous
    call is still being counted (~30 us with the planner's miss diagnosis), and waits for
    it. Queued here instead, the work runs when the proxy next sends a request upstream
    (``run_soon``: after that request is on the wire, while the upstream works on it) or,
    when no call follows, ``IDLE_DELAY`` seconds later. ``CallLedger.collect`` runs it
    first, so nothing a scrape reads is missing. Items run in order and never raise here.
    """

    __slots__ = ("_items", "_soon", "_timer")

    def __init__(self) -> None:
        self._items: deque[Callable[[], None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.TimerHandle | None = None

    def add(self, work: Callable[[], None]) -> None:
        """Queue ``work`` (on the event loop); it runs within ``IDLE_DELAY`` at the latest."""
        self._items.append(work)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(IDLE_DELAY, self._on_timer)

    def run_soon(self) -> None:
        """Run the backlog on the loop's next turn, after the I/O already under way.

        Called just before the proxy awaits an upstream answer: a timer due now runs
        after the callbacks already queued (aiohttp's write of the request body), so the
        counting overlaps the upstream's work instead of delaying the request.
        """
        if self._items and self._soon is None:  # one run takes all (75 calls in flight)
            self._soon = asyncio.get_running_loop().call_later(0, self._on_soon)

    def run(self) -> None:
        """Run everything queued, oldest first."""
        items = self._items
        while items:
            work = items.popleft()
            try:
                work()
            except Exception as exc:  # counting must never stop the loop
                log.warning("deferred bookkeeping failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Run what is left and drop the timers (the app is stopping)."""
        for timer in (self._timer, self._soon):
            if timer is not None:
                timer.cancel()
        self._timer = self._soon = None
        self.run()

    def _on_timer(self) -> None:
        self._timer = None
        self.run()

    def _on_soon(self) -> None:
        self._soon = None
        self.run()


class Histogram:
    """Bucket counts (not cumulative) and a sum, for one label set."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    return str(float(bound))


class HistogramFamily:
    """Histograms of one metric by label values."""

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]):
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.bounds = tuple(sorted(bounds))
        self.series: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = Histogram(self.bounds)
        series.observe(value)

    def family(self) -> HistogramMetricFamily:
        out = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, series in self.series.items():
            out.add_metric(list(labels), series.cumulative(), series.total)
        return out


class CallLedger(Collector):
    """Accumulates the per-call metrics; a ``prometheus_client`` collector."""

    def __init__(
        self,
        *,
        latency_buckets: Sequence[float],
        overhead_buckets: Sequence[float],
        outcome_doc: str,
    ) -> None:
        self.backlog = Backlog()
        """Calls answered but not counted yet; run before every ``collect``."""
        self.requests: dict[tuple[str, str, str, str], int] = {}
        # (provider, model, policy) -> [cache_read, cache_write, uncached, output, cost, cost0]
        self.usage: dict[tuple[str, str, str], list[float]] = {}
        self._outcome_doc = outcome_doc
        self.duration = HistogramFamily(
            "promptcache_request_duration_seconds",
            "Seconds from the request's arrival to the last byte of the answer.",
            ["provider", "policy"],
            latency_buckets,
        )
        self.ttft = HistogramFamily(
            "promptcache_time_to_first_token_seconds",
            "Seconds from the request's arrival to the first byte of the answer's body.",
            ["provider", "policy"],
            latency_buckets,
        )
        self.overhead = HistogramFamily(
            "promptcache_overhead_seconds",
            "Seconds spent inside the sidecar per call (the app's upload, context fetching "
            "and the upstream excluded).",
            ["provider"],
            overhead_buckets,
        )

    def count(self, provider: str, model: str, policy: str, outcome: str) -> None:
        key = (provider, model, policy, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    def add_usage(
        self,
        key: tuple[str, str, str],
        *,
        cache_read: int,
        cache_write: int,
        uncached: int,
        output: int,
        cost: float,
        cost_without_cache: float,
    ) -> None:
        row = self.usage.get(key)
        if row is None:
            row = self.usage[key] = [0.0] * 6
        row[0] += cache_read
        row[1] += cache_write
        row[2] += uncached
        row[3] += output
        row[4] += cost
        row[5] += cost_without_cache

    def collect(self) -> Iterator[Metric]:
        self.backlog.run()
        common = ["provider", "model", "policy"]
        requests = CounterMetricFamily(
            "promptcache_requests", self._outcome_doc, labels=[*common, "outcome"]
        )
        for labels, value in self.requests.items():
            requests.add_metric(list(labels), value)
        yield requests
        tokens = CounterMetricFamily(
            "promptcache_input_tokens",
            "Input tokens by how the provider billed them (cache_read, cache_write, uncached).",
            labels=["kind", *common],
        )
        output = CounterMetricFamily("promptcache_output_tokens", "Output tokens.", labels=common)
        cost = CounterMetricFamily(
            "promptcache_cost_usd", "Cost of the calls, USD, as billed.", labels=common
        )
        cost0 = CounterMetricFamily(
            "promptcache_cost_without_cache_usd",
            "Cost the calls would have had without caching, USD (all input at base price).",
            labels=common,
        )
        for key, row in self.usage.items():
            for kind, amount in zip(_TOKEN_KINDS, row, strict=False):
                tokens.add_metric([kind, *key], amount)
            output.add_metric(list(key), row[3])
            cost.add_metric(list(key), row[4])
            cost0.add_metric(list(key), row[5])
        yield from (tokens, output, cost, cost0)
        yield from (self.duration.family(), self.ttft.family(), self.overhead.family())
