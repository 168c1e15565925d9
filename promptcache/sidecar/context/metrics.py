"""Prometheus metrics of the context phase, built on an injected registry.

Labels are bounded: the policy name and the source name come from the policy, the
failure reason from a closed set (``sidecar.context.errors.FailureReason``); never a
user, a URL or a variable value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
"""Seconds; context services answer in milliseconds to a few seconds."""


class ContextMetrics:
    """Per-source fetch duration, failures by reason, memo hits, coalesced fetches, whole-phase
    duration."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fetch_duration = Histogram(
            "promptcache_context_fetch_duration_seconds",
            "Time to fetch one context source over the network, retries included.",
            ["policy", "source"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.failures = Counter(
            "promptcache_context_fetch_failures_total",
            "Context sources that failed, by reason.",
            ["policy", "source", "reason"],
            registry=registry,
        )
        self.memo_hits = Counter(
            "promptcache_context_memo_hits_total",
            "Context sources served from the cacheFor memo.",
            ["policy", "source"],
            registry=registry,
        )
        self.coalesced = Counter(
            "promptcache_context_coalesced_total",
            "Context sources served by a concurrent request's fetch of the same memoisable "
            "source (single flight).",
            ["policy", "source"],
            registry=registry,
        )
        self.phase = Histogram(
            "promptcache_context_phase_seconds",
            "Time of the whole context phase of a request (all sources in parallel).",
            ["policy"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
