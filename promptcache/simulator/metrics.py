"""What the simulator counts: Prometheus metrics and the same totals as plain JSON.

The demo cross-checks the sidecar's figures against what the "provider" actually billed,
so every request's usage is recorded twice: in Prometheus counters on the simulator's
own ``CollectorRegistry`` (``/metrics``) and in ``SimStats`` (``GET /sim/stats``), which
``POST /sim/reset`` zeroes together with the caches. Labels are bounded: the API, the
token kind, the fault kind, the outcome class — never a model name chosen by a client,
a prompt or an id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .outcome import CacheOutcome

Api = Literal["anthropic", "openai_chat", "openai_responses"]
APIS: tuple[Api, ...] = ("anthropic", "openai_chat", "openai_responses")
Outcome = Literal["ok", "client_error", "fault", "aborted"]


class SimMetrics:
    """Prometheus instruments, registered on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns = "promptcache_sim"
        self.requests = Counter(
            "requests",
            "API requests by outcome (ok, client_error, fault, aborted).",
            ["api", "outcome"],
            namespace=ns,
            registry=self.registry,
        )
        self.input_tokens = Counter(
            "input_tokens",
            "Input tokens billed, by kind (cache_read, cache_write, uncached).",
            ["api", "kind"],
            namespace=ns,
            registry=self.registry,
        )
        self.output_tokens = Counter(
            "output_tokens",
            "Output tokens generated.",
            ["api"],
            namespace=ns,
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "cache_lookups",
            "Requests that could use the cache, by result (hit, miss).",
            ["api", "result"],
            namespace=ns,
            registry=self.registry,
        )
        self.faults = Counter(
            "faults_injected",
            "Faults injected, by kind.",
            ["kind"],
            namespace=ns,
            registry=self.registry,
        )
        self.prefill_wait = Histogram(
            "prefill_queue_seconds",
            "Simulated seconds a request waited for a prefill lane.",
            namespace=ns,
            registry=self.registry,
            buckets=(0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.ttft = Histogram(
            "time_to_first_token_seconds",
            "Simulated time to first token.",
            ["api"],
            namespace=ns,
            registry=self.registry,
            buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0),
        )
        self.inflight = Gauge(
            "requests_in_flight", "API requests being served.", namespace=ns, registry=self.registry
        )
        self.prefilling = Gauge(
            "prefill_lanes_busy", "Prefill lanes in use.", namespace=ns, registry=self.registry
        )


@dataclass(slots=True)
class ApiTotals:
    requests: int = 0
    errors: int = 0
    uncached: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0
    hits: int = 0
    misses: int = 0

    def as_dict(self) -> dict[str, Any]:
        total = self.uncached + self.cache_read + self.cache_write_5m + self.cache_write_1h
        return {
            "requests": self.requests,
            "errors": self.errors,
            "tokens": {
                "uncached": self.uncached,
                "cache_read": self.cache_read,
                "cache_write": self.cache_write_5m + self.cache_write_1h,
                "cache_write_5m": self.cache_write_5m,
                "cache_write_1h": self.cache_write_1h,
                "input_total": total,
                "output": self.output,
            },
            "cache": {"hits": self.hits, "misses": self.misses},
            "token_hit_rate": self.cache_read / total if total else 0.0,
        }


@dataclass(slots=True)
class SimStats:
    """Plain totals since start or the last reset, served as JSON."""

    by_api: dict[Api, ApiTotals] = field(default_factory=lambda: {a: ApiTotals() for a in APIS})
    faults: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        overall = ApiTotals()
        for t in self.by_api.values():
            for name in ApiTotals.__slots__:
                setattr(overall, name, getattr(overall, name) + getattr(t, name))
        result = overall.as_dict()
        result["by_api"] = {api: t.as_dict() for api, t in self.by_api.items()}
        result["faults"] = dict(self.faults)
        return result


class Recorder:
    """Records each request's result into both the metrics and the stats."""

    def __init__(self) -> None:
        self.metrics = SimMetrics()
        self.stats = SimStats()

    def reset(self) -> None:
        """Fresh counters: Prometheus counters cannot go down, so the registry is replaced."""
        self.metrics = SimMetrics()
        self.stats = SimStats()

    def prefilled(self, api: Api, outcome: CacheOutcome) -> None:
        """Input usage, billed once prefill is done (an aborted stream still pays it)."""
        t = self.stats.by_api[api]
        t.uncached += outcome.uncached
        t.cache_read += outcome.cache_read
        t.cache_write_5m += outcome.cache_write_5m
        t.cache_write_1h += outcome.cache_write_1h
        m = self.metrics
        m.input_tokens.labels(api, "uncached").inc(outcome.uncached)
        m.input_tokens.labels(api, "cache_read").inc(outcome.cache_read)
        m.input_tokens.labels(api, "cache_write").inc(outcome.cache_write)
        if outcome.eligible:
            m.cache_lookups.labels(api, "hit" if outcome.hit else "miss").inc()
            if outcome.hit:
                t.hits += 1
            else:
                t.misses += 1

    def finished(self, api: Api, result: Outcome, *, output_tokens: int = 0) -> None:
        """One request is over: count it once, with the output it produced."""
        t = self.stats.by_api[api]
        t.requests += 1
        t.output += output_tokens
        if result != "ok":
            t.errors += 1
        self.metrics.requests.labels(api, result).inc()
        self.metrics.output_tokens.labels(api).inc(output_tokens)

    def fault(self, kind: str) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        self.metrics.faults.labels(kind).inc()
