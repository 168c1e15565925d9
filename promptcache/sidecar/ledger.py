"""The per-call metrics, kept as plain numbers and turned into Prometheus samples on scrape.

Every proxied call updates about ten series (outcome, three token kinds, output, two
costs, three histograms). Through ``prometheus_client``'s metric objects that is ten
lock-guarded updates behind several layers of calls, ~25 us per call on the benchmark
machine; here it is a few dictionary and list operations. Everything runs on the event
loop (the aiohttp ``/metrics`` handler included), so no lock is needed. ``collect``
exposes the same names, types and labels the metric objects would.

Counting a call is not needed to answer it, so it waits in the state's backlog
(``sidecar.backlog.Backlog``) until the loop has nothing better to do; every ``collect``
runs ``before_collect`` (the backlog) first, so what a scrape or a test reads is exact.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_TOKEN_KINDS = ("cache_read", "cache_write", "uncached")


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
        before_collect: Callable[[], None] | None = None,
    ) -> None:
        self.before_collect = before_collect
        """Counts what is still pending (the state's backlog) before a scrape reads."""
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
        if self.before_collect is not None:
            self.before_collect()
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
