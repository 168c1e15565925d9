"""The sidecar's Prometheus metrics: what caching did, what it saved, what it cost.

Names are contracts (dashboards, alert rules and tests use them). Every metric lives in
an injected ``CollectorRegistry`` so tests get a fresh one; the ones every call updates
are kept by ``sidecar.ledger`` (plain numbers, exposed on scrape), the rest are
``prometheus_client`` counters. Label values are bounded:
``model`` is the request's model only when it looks like a model name, else ``other``;
``policy`` is the loaded policy's name or ``none``; the rest are fixed vocabularies.
The token hit ratio is computable from the counters::

    sum(rate(promptcache_input_tokens_total{kind="cache_read"}[5m]))
      / sum(rate(promptcache_input_tokens_total[5m]))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from promptcache.models import ModelInfo
from promptcache.policy.schema import PricingOverride
from promptcache.pricing import cost, model_info
from promptcache.sidecar.ledger import CallLedger
from promptcache.sidecar.looplag import LoopLag
from promptcache.usage import Usage
from promptcache.wire import Provider

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


def _info(provider: Provider, model: str, override: PricingOverride | None) -> ModelInfo:
    return model_info(provider, None if model == "other" else model, override)


class Metrics:
    """All sidecar metrics, registered in one registry."""

    def __init__(
        self, registry: CollectorRegistry, *, before_collect: Callable[[], None] | None = None
    ) -> None:
        self.registry = registry
        self.ledger = CallLedger(
            before_collect=before_collect,
            latency_buckets=_LATENCY_BUCKETS,
            overhead_buckets=_OVERHEAD_BUCKETS,
            outcome_doc=(
                "Proxied LLM calls by outcome (ok, client_error, rate_limited, server_error, "
                "unreachable, timeout, stream_error, client_closed, rejected, context_failed)."
            ),
        )
        """requests, input/output tokens, cost, duration, TTFT and overhead (hot path)."""
        # Registered before the counters below: its ``collect`` runs the backlog of calls
        # still to be counted, which updates those counters too, before they are read.
        registry.register(self.ledger)
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
        self.provider_miss_reasons = Counter(
            "promptcache_provider_cache_miss_reasons",
            "Anthropic cache diagnostics (with --anthropic-diagnostics): the provider's "
            "cache_miss_reason (none: nothing diverged; pending: not compared in time) beside "
            "the sidecar's own diagnosis (none: no miss).",
            ["policy", "reason", "sidecar_reason"],
            registry=registry,
        )
        self.miss_disagreements = Counter(
            "promptcache_cache_miss_disagreements",
            "Calls where the provider's cache diagnostics and the sidecar's diagnosis "
            "disagree on whether the prefix changed.",
            ["policy"],
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
        self.loop_lag = LoopLag(registry)
        """``promptcache_event_loop_lag_seconds``; its timer runs with the proxy app."""
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def inc(self, counter: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """``counter.labels(*labels).inc(amount)`` with the labelled child kept.

        ``labels()`` validates and looks the child up under a lock (~1 us each, twice or
        more per planned call); label values are bounded vocabularies, so the children
        kept here are few.
        """
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc(amount)

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
        billed = cost(usage, _info(provider, model, pricing))
        self.ledger.add_usage(
            (provider, model, policy),
            cache_read=usage.cache_read,
            cache_write=usage.cache_write,
            uncached=usage.uncached,
            output=usage.output,
            cost=billed.total,
            cost_without_cache=billed.total_without_cache,
        )

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
