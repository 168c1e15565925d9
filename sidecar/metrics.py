"""The sidecar's Prometheus metrics: what caching did, what it saved, what it cost.

Names are contracts (dashboards, alert rules and tests use them). Every metric lives in
an injected ``CollectorRegistry`` so tests get a fresh one. Label values are bounded:
``model`` is the request's model only when it looks like a model name, else ``other``;
``policy`` is the loaded policy's name or ``none``; the rest are fixed vocabularies.
The token hit ratio is computable from the counters::

    sum(rate(promptcache_input_tokens_total{kind="cache_read"}[5m]))
      / sum(rate(promptcache_input_tokens_total[5m]))
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from promptcache.models import ModelInfo, Provider
from promptcache.policy.schema import PricingOverride
from promptcache.pricing import cost, model_info
from promptcache.usage import Usage

_MODEL = re.compile(r"[A-Za-z0-9._:-]{1,64}")
NO_POLICY = "none"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
_OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05,
    0.1,
)  # fmt: skip


def model_label(model: object) -> str:
    """``model`` if it is a plausible model name (bounded label), else ``other``."""
    if isinstance(model, str) and _MODEL.fullmatch(model):
        return model
    return "other"


@functools.lru_cache(maxsize=512)
def _info(provider: Provider, model: str, override: PricingOverride | None) -> ModelInfo:
    return model_info(provider, None if model == "other" else model, override)


_CHILD_CACHE_MAX = 4096
"""Cached labelled series; past this the cache starts over (labels are bounded anyway)."""

_Metric = TypeVar("_Metric", Counter, Histogram)


class Metrics:
    """All sidecar metrics, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        common = ["provider", "model", "policy"]
        self.requests = Counter(
            "promptcache_requests",
            "Proxied LLM calls by outcome (ok, client_error, rate_limited, server_error, "
            "unreachable, timeout, stream_error, client_closed, rejected).",
            [*common, "outcome"],
            registry=registry,
        )
        self.input_tokens = Counter(
            "promptcache_input_tokens",
            "Input tokens by how the provider billed them (cache_read, cache_write, uncached).",
            ["kind", *common],
            registry=registry,
        )
        self.output_tokens = Counter(
            "promptcache_output_tokens", "Output tokens.", common, registry=registry
        )
        self.duration = Histogram(
            "promptcache_request_duration_seconds",
            "Seconds from the request's arrival to the last byte of the answer.",
            ["provider", "policy"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "promptcache_time_to_first_token_seconds",
            "Seconds from the request's arrival to the first byte of the answer's body.",
            ["provider", "policy"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "promptcache_overhead_seconds",
            "Seconds spent inside the sidecar (upstream and context fetching excluded).",
            ["provider"],
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.cost = Counter(
            "promptcache_cost_usd", "Cost of the calls, USD, as billed.", common, registry=registry
        )
        self.cost_without_cache = Counter(
            "promptcache_cost_without_cache_usd",
            "Cost the calls would have had without caching, USD (all input at base price).",
            common,
            registry=registry,
        )
        self.retries = Counter(
            "promptcache_upstream_retries",
            "Upstream attempts repeated before the first byte, by reason "
            "(connection, status_429, status_503, status_529).",
            ["provider", "reason"],
            registry=registry,
        )
        self.transform_errors = Counter(
            "promptcache_transform_errors",
            "Requests forwarded unchanged because a step failed (fail open), by stage.",
            ["provider", "stage"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "promptcache_cache_misses",
            "Calls whose static prefix was not read from cache, by diagnosed reason.",
            ["policy", "reason"],
            registry=registry,
        )
        self.volatile_spans = Counter(
            "promptcache_volatile_spans",
            "Cache-busting spans found in the static part, by detector.",
            ["policy", "detector"],
            registry=registry,
        )
        self.breakpoints = Counter(
            "promptcache_breakpoints",
            "Cache breakpoints in forwarded requests, by tier.",
            ["policy", "tier"],
            registry=registry,
        )
        self.predicted_savings = Counter(
            "promptcache_predicted_savings_usd",
            "Observe mode: USD enforcing the policy would have saved on cached input.",
            ["policy"],
            registry=registry,
        )
        self.predicted_cacheable = Counter(
            "promptcache_predicted_cacheable_tokens",
            "Observe mode: input tokens enforcing the policy would have served from cache.",
            ["policy"],
            registry=registry,
        )
        self.policy_reload_errors = Counter(
            "promptcache_policy_reload_errors",
            "Policy file versions rejected (the last good policy stays in force).",
            registry=registry,
        )

    def child(self, metric: _Metric, *labels: str) -> _Metric:
        """``metric.labels(*labels)``, cached: the lookup is a hot-path cost per call."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            if len(self._children) >= _CHILD_CACHE_MAX:
                self._children.clear()
            found = self._children[key] = metric.labels(*labels)
        return found

    def record_usage(
        self,
        *,
        provider: Provider,
        model: str,
        policy: str,
        usage: Usage,
        pricing: PricingOverride | None,
    ) -> None:
        """Tokens and cost of one finished call (counted once, at the end of a stream)."""
        child, tokens = self.child, self.input_tokens
        # Every series is created (a hit ratio needs its zeros); only non-zero amounts
        # pay for an increment.
        for kind, amount in (
            ("cache_read", usage.cache_read),
            ("cache_write", usage.cache_write),
            ("uncached", usage.uncached),
        ):
            series = child(tokens, kind, provider, model, policy)
            if amount:
                series.inc(amount)
        child(self.output_tokens, provider, model, policy).inc(usage.output)
        billed = cost(usage, _info(provider, model, pricing))
        child(self.cost, provider, model, policy).inc(billed.total)
        child(self.cost_without_cache, provider, model, policy).inc(billed.total_without_cache)

    def record_prediction(
        self,
        *,
        provider: Provider,
        model: str,
        policy: str,
        cacheable_tokens: int,
        pricing: PricingOverride | None,
    ) -> None:
        """Observe mode: what a warm cache would have saved on this call."""
        info = _info(provider, model, pricing)
        saved = cacheable_tokens * info.input_per_mtok * 1e-6 * (1.0 - info.read_multiplier)
        self.predicted_cacheable.labels(policy).inc(cacheable_tokens)
        self.predicted_savings.labels(policy).inc(max(saved, 0.0))
